"""Export a deepshrink file to standard formats: ONNX and dense safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deepshrink._version import __version__
from deepshrink.data.spec import InputSpec
from deepshrink.errors import ConfigError, UnsupportedOperationError
from deepshrink.export.onnx_export import serialize_onnx, to_onnx
from deepshrink.models.loading import num_classes
from deepshrink.runtime.model import CompressedModel, load
from deepshrink.util.atomic import write_bytes_atomic
from deepshrink.util.safetensors_file import save_safetensors

if TYPE_CHECKING:
    import onnxruntime as ort

CHECK_OPS = 1 << 31
"""Operations (see :class:`~deepshrink.graph.ir.Plan`) the onnxruntime-vs-PyTorch check of an export may spend per runtime
(16 samples of LeNet-5 take 37 M); a heavier network is checked on fewer samples, at least 2."""


def export_safetensors(model: CompressedModel, path: str | os.PathLike) -> int:
    """Dense float32 state dict under the original parameter names, with the input spec and
    graph in the safetensors metadata. Returns the file size."""
    meta = {
        "format": "deepshrink-dense",
        "input": json.dumps(model.input_spec.to_dict()),
        "graph": json.dumps(model.graph.to_dict()),
    }
    return save_safetensors(model.dense_state_dict(), path, meta)


def _session(onnx_bytes: bytes) -> ort.InferenceSession:
    import onnxruntime as ort  # imported when an export is checked, not with deepshrink

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: no warnings spam on the user's terminal
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def _raw_sample(spec: InputSpec, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` raw inputs as a user would feed them: uint8 pixels, or floats in [0, 1)."""
    if spec.dtype == "uint8":
        return torch.randint(0, 256, (n, *spec.shape), generator=gen, dtype=torch.uint8)
    return torch.rand(n, *spec.shape, generator=gen)


def onnx_agreement(
    model: CompressedModel, onnx_bytes: bytes, n: int = 16, seed: int = 0, *, preprocessing: bool = False
) -> dict[str, float]:
    """Run onnxruntime and PyTorch on the same random input; max |difference| and argmax agreement.

    With ``preprocessing`` the ONNX model takes raw input (as :meth:`CompressedModel.predict`
    does) and is compared with ``model`` on ``model.input_spec.apply(raw)``.
    """
    gen = torch.Generator().manual_seed(seed)
    if preprocessing:
        raw = _raw_sample(model.input_spec, n, gen)
        x = model.input_spec.apply(raw)
    else:
        raw = x = torch.randn(n, *model.input_spec.shape, generator=gen)
    try:
        got = _session(onnx_bytes).run(None, {"input": raw.numpy()})[0]
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UnsupportedOperationError(f"onnxruntime cannot run the exported network: {exc}") from None
    with torch.no_grad():
        want = model(x).numpy()
    return {
        "max_abs_diff": float(np.abs(got - want).max()),
        "argmax_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
    }


def onnx_metadata(model: CompressedModel, num_classes: int | None, preprocessing: bool) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: what its input must be and where it came from."""
    spec = model.input_spec
    meta = {
        "producer": "deepshrink",
        "producer_version": __version__,
        "input_shape": json.dumps(list(spec.shape)),
        "input_dtype": spec.dtype,
        "input_scale": repr(spec.scale),
        "input_mean": json.dumps(list(spec.mean)),
        "input_std": json.dumps(list(spec.std)),
        "preprocessing": (
            f"in the graph: feed raw {spec.dtype} input" if preprocessing
            else "not in the graph: feed float32 (raw * input_scale - input_mean) / input_std, per channel"
        ),
    }
    if num_classes is not None:
        meta["num_classes"] = str(num_classes)
    return meta


def export(
    path: str | os.PathLike, out: str | os.PathLike, fmt: str | None = None, *, with_preprocessing: bool = False
) -> dict[str, Any]:
    """Export the deepshrink file ``path`` to ``out`` (format from ``fmt`` or the extension:
    ``.onnx`` or ``.safetensors``).

    An ONNX export records the input specification, class count and producer in its
    ``metadata_props``. With ``with_preprocessing`` it also computes the stored scaling and
    normalisation in the graph, so it takes raw input of the file's dtype (e.g. uint8 images)
    and gives the scores :meth:`CompressedModel.predict` takes its argmax of.
    """
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in ("onnx", "safetensors"):
        raise ConfigError(f"cannot export to {str(out)!r}: expected format 'onnx' or 'safetensors' (by extension or --format)")
    if with_preprocessing and fmt != "onnx":
        raise ConfigError("with_preprocessing needs the ONNX format: a safetensors file holds no computation")
    model = load(path)
    if fmt == "safetensors":
        return {"format": fmt, "path": str(out), "bytes": export_safetensors(model, out)}
    tensors = model.dense_state_dict()
    classes = num_classes(model)
    proto = to_onnx(model.graph, tensors, model.input_spec.shape,
                    preprocess=model.input_spec if with_preprocessing else None,
                    metadata=onnx_metadata(model, classes, with_preprocessing))
    data = serialize_onnx(proto)
    # bounded work and memory: fewer samples for a heavy network (load already bounds the work
    # per sample), and never more than the activation limit allows in one batch
    n = max(1, min(16, max(2, CHECK_OPS // max(1, model.plan.ops)), model.max_batch))
    check = onnx_agreement(model, data, n=n, preprocessing=with_preprocessing)
    if check["max_abs_diff"] > 1e-3 or check["argmax_agreement"] < 1.0:
        raise UnsupportedOperationError(
            f"onnxruntime and PyTorch disagree on the exported network (max |diff| {check['max_abs_diff']:.3g}); "
            "nothing was written"
        )
    write_bytes_atomic(out, data)
    return {"format": fmt, "path": str(out), "bytes": len(data), "preprocessing": with_preprocessing,
            "num_classes": classes, **check}

