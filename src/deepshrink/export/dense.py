"""Export a deepshrink file to standard formats: ONNX and dense safetensors."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deepshrink._version import __version__
from deepshrink.data.spec import InputSpec
from deepshrink.errors import ConfigError, UnsupportedOperationError
from deepshrink.export.onnx_export import serialize_onnx, to_onnx
from deepshrink.fileformat.container import Limits
from deepshrink.fileformat.model_file import read_model_file
from deepshrink.graph import example_inputs
from deepshrink.models.loading import num_classes
from deepshrink.runtime.model import CompressedModel, load
from deepshrink.storage import CompressedTensor, decode_typed
from deepshrink.util.atomic import write_bytes_atomic
from deepshrink.util.safetensors_file import save_safetensors

if TYPE_CHECKING:
    import onnxruntime as ort

CHECK_OPS = 1 << 31
"""Operations (see :class:`~deepshrink.graph.ir.Plan`) the onnxruntime-vs-PyTorch check of an export may spend per runtime
(16 samples of LeNet-5 take 37 M); a heavier network is checked on fewer samples, at least 2."""


def export_safetensors(model: CompressedModel, path: str | os.PathLike) -> int:
    """Dense float32 state dict under the original parameter names, with the input spec (``null``
    for a network whose inputs the graph declares, e.g. token ids and a mask) and graph in the
    safetensors metadata. Returns the file size."""
    meta = {
        "format": "deepshrink-dense",
        "input": json.dumps(None if model.input_spec is None else model.input_spec.to_dict()),
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


def _inputs(model: CompressedModel) -> dict[str, tuple[int, ...]]:
    """Each graph input's per-sample shape, as the file declares it."""
    return {name: model.plan.shapes[name] for name in model.graph.input_names}


def onnx_agreement(
    model: CompressedModel, onnx_bytes: bytes, n: int = 16, seed: int = 0, *, preprocessing: bool = False,
    inputs: Sequence[torch.Tensor] | None = None,
) -> dict[str, float | None]:
    """Run onnxruntime and PyTorch on the same input: the max |difference| over every output, and
    the argmax agreement of class scores (None for a network whose output is not class scores,
    see :func:`~deepshrink.models.num_classes`).

    The input is ``inputs`` (one batch of every graph input, in order) when given, else ``n``
    random samples: standard normal for a one-input network, or, for a network whose inputs the
    graph declares, int64 ids below the sizes of the embedding tables they index (masks 0 or 1;
    :func:`deepshrink.graph.example_inputs`). With ``preprocessing`` the ONNX model takes raw
    input (as :meth:`CompressedModel.predict` does) and is compared with ``model`` on
    ``model.input_spec.apply(raw)``.
    """
    gen = torch.Generator().manual_seed(seed)
    spec = model.input_spec
    if preprocessing and spec is None:
        raise ConfigError("preprocessing needs a network with an input specification (one input of images or "
                          f"features); this one takes {list(model.graph.input_names)}")
    if inputs is not None:
        raw = xs = tuple(inputs)
        if len(xs) != len(model.graph.inputs):
            raise ConfigError(f"inputs: the network takes {list(model.graph.input_names)}, got {len(xs)} tensor(s)")
        if preprocessing:
            xs = (spec.apply(xs[0]),)
    elif preprocessing:
        raw = (_raw_sample(spec, n, gen),)
        xs = (spec.apply(raw[0]),)
    elif spec is not None:
        raw = xs = (torch.randn(n, *spec.shape, generator=gen),)
    else:
        shapes = {k: tuple(v.shape) for k, v in model.net.named_graph_tensors().items()}
        raw = xs = example_inputs(model.graph, _inputs(model), shapes, n, seed)
    try:
        got = _session(onnx_bytes).run(None, {name: x.numpy() for name, x in zip(model.graph.input_names, raw)})
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UnsupportedOperationError(f"onnxruntime cannot run the exported network: {exc}") from None
    with torch.no_grad():
        want = model(*xs)
    wants = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    diff = max(float(np.abs(g - w).max()) if w.size else 0.0 for g, w in zip(got, wants))
    agreement = None
    if num_classes(model) is not None:
        agreement = float((got[0].argmax(1) == wants[0].argmax(1)).mean())
    return {"max_abs_diff": diff, "argmax_agreement": agreement}


def onnx_metadata(model: CompressedModel, num_classes: int | None, preprocessing: bool) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: what its inputs must be and where it came from."""
    spec = model.input_spec
    meta = {"producer": "deepshrink", "producer_version": __version__}
    if spec is None:
        meta["inputs"] = json.dumps([{"name": name, "dtype": model.graph.dtypes[name], "shape": list(shape)}
                                     for name, shape in _inputs(model).items()])
        meta["preprocessing"] = "none: feed each input as it is (e.g. token ids and attention mask, int64)"
    else:
        meta.update({
            "input_shape": json.dumps(list(spec.shape)),
            "input_dtype": spec.dtype,
            "input_scale": repr(spec.scale),
            "input_mean": json.dumps(list(spec.mean)),
            "input_std": json.dumps(list(spec.std)),
            "preprocessing": (
                f"in the graph: feed raw {spec.dtype} input" if preprocessing
                else "not in the graph: feed float32 (raw * input_scale - input_mean) / input_std, per channel"
            ),
        })
    if num_classes is not None:
        meta["num_classes"] = str(num_classes)
    return meta


def typed_tensors(path: str | os.PathLike | bytes, limits: Limits | None = None) -> dict[str, CompressedTensor]:
    """Every tensor of the deepshrink file ``path`` (or its bytes) in its typed compressed form
    (see :mod:`deepshrink.storage.tensors`), by parameter name."""
    limits = limits or Limits()
    container = read_model_file(path, limits).container
    return {name: decode_typed(name, desc, container.sections, limits) for name, desc in container.header["tensors"].items()}


def export(
    path: str | os.PathLike | bytes, out: str | os.PathLike, fmt: str | None = None, *,
    with_preprocessing: bool = False, inputs: Sequence[torch.Tensor] | None = None, compact: bool = False,
) -> dict[str, Any]:
    """Export the deepshrink file ``path`` (or its bytes) to ``out`` (format from ``fmt`` or the
    extension: ``.onnx`` or ``.safetensors``).

    An ONNX export records the input specification (or, for a network of several or integer
    inputs, each input's name, dtype and shape), class count and producer in its
    ``metadata_props``. With ``with_preprocessing`` it also computes the stored scaling and
    normalisation in the graph, so it takes raw input of the file's dtype (e.g. uint8 images)
    and gives the scores :meth:`CompressedModel.predict` takes its argmax of.
    With ``compact`` (ONNX only) the weights keep the form the file stores them in, as far as
    ONNX can express it (codebook indices as bytes and ``Gather``, uniform grids through
    ``DequantizeLinear``, pruned tensors as byte gaps and ``ScatterElements``; factorised layers
    are already their factors): the file stays a small multiple of the ``.dsz`` instead of
    the dense size. onnxruntime folds those constant subgraphs into dense weights when it loads
    the model (same speed and memory as the dense export once loaded; DequantizeLinear excepted,
    which it runs every time); see :func:`to_onnx`.
    The result gives ``bytes``, the ``.dsz`` size (``dsz_bytes``) and their ratio.
    Nothing is written unless onnxruntime agrees with PyTorch on ``inputs`` (real data: one batch
    of every input, raw with ``with_preprocessing``) or on random inputs the network accepts
    (see :func:`onnx_agreement`).
    ``fmt="c"`` writes the C engine into the folder ``out`` (``inputs``: one batch of raw samples):
    see :func:`deepshrink.engine.export.export_c`.
    """
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt == "c":  # a folder with the C engine (deepshrink.engine.export)
        if with_preprocessing:
            raise ConfigError("with_preprocessing is for ONNX: the C engine always has model_preprocess() for raw input")
        if compact:
            raise ConfigError("compact is for ONNX: the C engine always keeps the weights in their compressed form")
        from deepshrink.engine.export import export_c

        return export_c(path, out, inputs=inputs[0] if inputs else None)
    if fmt not in ("onnx", "safetensors"):
        raise ConfigError(f"cannot export to {str(out)!r}: expected format 'onnx' or 'safetensors' (by extension or --format), "
                          "or 'c' (a folder)")
    if with_preprocessing and fmt != "onnx":
        raise ConfigError("with_preprocessing needs the ONNX format: a safetensors file holds no computation")
    if compact and fmt != "onnx":
        raise ConfigError(f"compact needs the ONNX format, got {fmt!r}: a safetensors file holds dense tensors only, "
                          "not the codebooks and sparse positions a compact export keeps")
    model = load(path)
    if with_preprocessing and model.input_spec is None:
        raise ConfigError("with_preprocessing needs a network with an input specification; this one takes "
                          f"{list(model.graph.input_names)} as they are")
    if fmt == "safetensors":
        return {"format": fmt, "path": str(out), "bytes": export_safetensors(model, out)}
    tensors = model.dense_state_dict()
    classes = num_classes(model)
    proto = to_onnx(model.graph, tensors, _inputs(model),
                    preprocess=model.input_spec if with_preprocessing else None,
                    metadata=onnx_metadata(model, classes, with_preprocessing),
                    compact=typed_tensors(path) if compact else None)
    data = serialize_onnx(proto)
    # bounded work and memory: fewer samples for a heavy network (load already bounds the work
    # per sample), and never more than the activation limit allows in one batch
    n = max(1, min(16, max(2, CHECK_OPS // max(1, model.plan.ops)), model.max_batch))
    check = onnx_agreement(model, data, n=n, preprocessing=with_preprocessing, inputs=inputs)
    if check["max_abs_diff"] > 1e-3 or check["argmax_agreement"] not in (None, 1.0):
        raise UnsupportedOperationError(
            f"onnxruntime and PyTorch disagree on the exported network (max |diff| {check['max_abs_diff']:.3g}); "
            "nothing was written"
        )
    write_bytes_atomic(out, data)
    return {"format": fmt, "path": str(out), "bytes": len(data), "preprocessing": with_preprocessing,
            "compact": compact, "dsz_bytes": model.file_bytes, "ratio_to_dsz": len(data) / model.file_bytes,
            "num_classes": classes,
            "inputs": [{"name": n, "dtype": model.graph.dtypes[n], "shape": list(sh)} for n, sh in _inputs(model).items()],
            **check}

