"""Export a deepshrink file to standard formats: ONNX and dense safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from safetensors.torch import save_file

from deepshrink.errors import ConfigError, UnsupportedOperationError
from deepshrink.export.onnx_export import save_onnx, to_onnx
from deepshrink.runtime.model import CompressedModel, load
from deepshrink.util.atomic import atomic_path


def export_safetensors(model: CompressedModel, path: str | os.PathLike) -> int:
    """Dense float32 state dict under the original parameter names, with the input spec and
    graph in the safetensors metadata. Returns the file size."""
    state = {k: v.contiguous() for k, v in model.dense_state_dict().items()}
    meta = {
        "format": "deepshrink-dense",
        "input": json.dumps(model.input_spec.to_dict()),
        "graph": json.dumps(model.graph.to_dict()),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
        size = tmp.stat().st_size
    return size


def onnx_agreement(model: CompressedModel, onnx_bytes: bytes, n: int = 16, seed: int = 0) -> dict[str, float]:
    """Run onnxruntime and PyTorch on the same random input; max |difference| and argmax agreement."""
    x = torch.randn(n, *model.input_spec.shape, generator=torch.Generator().manual_seed(seed))
    try:
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x.numpy()})[0]
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UnsupportedOperationError(f"onnxruntime cannot run the exported network: {exc}") from None
    with torch.no_grad():
        want = model(x).numpy()
    return {
        "max_abs_diff": float(np.abs(got - want).max()),
        "argmax_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
    }


def export(path: str | os.PathLike, out: str | os.PathLike, fmt: str | None = None) -> dict[str, Any]:
    """Export the deepshrink file ``path`` to ``out`` (format from ``fmt`` or the extension:
    ``.onnx`` or ``.safetensors``)."""
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in ("onnx", "safetensors"):
        raise ConfigError(f"cannot export to {str(out)!r}: expected format 'onnx' or 'safetensors' (by extension or --format)")
    model = load(path)
    if fmt == "safetensors":
        return {"format": fmt, "path": str(out), "bytes": export_safetensors(model, out)}
    proto = to_onnx(model.graph, model.dense_state_dict(), model.input_spec.shape)
    check = onnx_agreement(model, proto.SerializeToString())
    if check["max_abs_diff"] > 1e-3 or check["argmax_agreement"] < 1.0:
        raise UnsupportedOperationError(
            f"onnxruntime and PyTorch disagree on the exported network (max |diff| {check['max_abs_diff']:.3g}); "
            "nothing was written"
        )
    size = save_onnx(proto, out)
    return {"format": fmt, "path": str(out), "bytes": size, **check}
