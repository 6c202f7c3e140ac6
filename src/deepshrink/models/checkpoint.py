"""Reading pretrained checkpoints without running code, and loading them strictly.

Two readers: safetensors (a JSON header and raw bytes) and ``torch.load(weights_only=True)`` for
``.pth`` state dicts. Pickle is never used otherwise. :func:`load_state` is the one place that
checks a state dict against a model; its error names the first missing keys, unexpected keys and
shape differences, so a checkpoint for another architecture fails at once and says why.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from deepshrink.errors import ModelError

__all__ = ["MAX_LISTED", "load_state", "read_safetensors", "read_torch_state_dict", "state_dict_problems"]

#: How many keys of each kind a checkpoint mismatch lists (the count of all is given too).
MAX_LISTED = 5


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (no code runs: the format holds only a JSON header and bytes)."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{str(path)!r} is not a valid safetensors file: {exc}") from exc


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A PyTorch ``.pth`` state dict, read with ``torch.load(weights_only=True)``: the restricted
    unpickler builds only tensors and plain containers, never arbitrary objects. Tensors saved on
    a GPU are mapped to the CPU."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise ModelError(f"{str(path)!r} is not a PyTorch state dict that loads with weights_only=True: {exc}") from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"{str(path)!r} holds {type(state).__name__}, expected a state dict (names → tensors)")
    return dict(state)


def state_dict_problems(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """How ``state`` fails to fit ``expected`` (a model's state dict): the first
    :data:`MAX_LISTED` missing keys, unexpected keys and shape differences, in key order."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape differences", shapes)):
        if items:
            more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
            problems.append(f"{len(items)} {what}: {', '.join(items[:MAX_LISTED])}{more}")
    return problems


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> nn.Module:
    """Copy ``state`` into ``model`` after checking that every name and shape matches (strict);
    a :class:`ModelError` naming the first mismatches otherwise (``where`` says whose weights)."""
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise ModelError(f"{where} do not fit the model {type(model).__name__}: " + "; ".join(problems))
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return model
