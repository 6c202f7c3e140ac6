"""Build models by name or from user code, and save/load their weights as safetensors."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from deepshrink.errors import ModelError
from deepshrink.models.checkpoint import load_state, read_safetensors
from deepshrink.models.zoo import ZOO, create
from deepshrink.util.safetensors_file import save_safetensors

if TYPE_CHECKING:
    from deepshrink.runtime import CompressedModel


def build_model(spec: str, num_classes: int | None = None) -> nn.Module:
    """A zoo name (``lenet-5``; a pretrained one such as ``mobilenet-v2`` comes with its weights)
    or ``package.module:factory`` naming a callable that returns an ``nn.Module`` (called with no
    arguments). ``num_classes`` sizes a zoo architecture trained here (default 10); a pretrained
    network accepts only its own output count."""
    if spec in ZOO:
        return create(spec, num_classes=num_classes)
    if ":" not in spec:
        raise ModelError(
            f"unknown model {spec!r}: expected one of {sorted(ZOO)} or 'package.module:factory'"
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"cannot import module {module_name!r} for model {spec!r}: {exc} (the module must be importable: "
            "run from the folder that holds it, or add that folder to PYTHONPATH)"
        ) from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ModelError(f"{module_name!r} has no callable {attr!r} (model {spec!r})")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec!r} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def num_classes(model: CompressedModel) -> int | None:
    """How many class scores a loaded network outputs per sample, from its shape plan (nothing
    is run); None when it returns several values, when its output is not one vector per sample,
    or when the file was compressed with an objective whose outputs are not class scores
    (``meta["objective"]``, e.g. ``match-embeddings``: a sentence encoder's 384 numbers are no
    classes)."""
    from deepshrink.train.objectives import OBJECTIVES

    objective = OBJECTIVES.get(str(model.meta.get("objective")))
    if objective is not None and not objective.class_scores:
        return None
    if len(model.graph.outputs) != 1:
        return None
    shape = model.plan.shapes[model.graph.outputs[0]]
    return shape[0] if len(shape) == 1 else None


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write the model's state dict as a safetensors file (atomically, byte-deterministic, with
    the umask's permissions)."""
    save_safetensors(model.state_dict(), path, metadata)


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a safetensors state dict into ``model`` (strict: names and shapes must match)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {str(path)!r} does not exist")
    return load_state(model, read_safetensors(path), f"weights in {str(path)!r}")
