"""Write a :class:`~deepshrink.graph.ir.Graph` and its weights as a standard ONNX model.

Each op writes its own ONNX nodes (:meth:`deepshrink.graph.ops.Op.to_onnx`); this module holds
the model around them: inputs, optional preprocessing, initializers, metadata and checks. The
weights are dense float32 initializers, or, in compact mode, each stored tensor's own compact
form (:meth:`deepshrink.storage.CompressedTensor.to_onnx`) wherever an op asks for it."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch

from deepshrink._version import __version__
from deepshrink.data.spec import InputSpec
from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ir import INPUT, Graph
from deepshrink.graph.ops import OPS
from deepshrink.graph.ops.base import ONNX_DTYPES
from deepshrink.util.atomic import write_bytes_atomic

if TYPE_CHECKING:  # onnx is imported when an export runs, not with deepshrink
    import onnx

    from deepshrink.storage import CompressedTensor

OPSET = 17
MAX_ONNX_BYTES = (1 << 31) - (1 << 24)
"""Protobuf cannot serialise a message of 2 GiB or more; keep a margin for the graph itself."""

_ONNX_TYPES = {**ONNX_DTYPES, "uint8": 2}  # onnx.TensorProto.UINT8: raw images before preprocessing
_ONNX_TYPES["float16"] = 10  # onnx.TensorProto.FLOAT16: compact weights (cast to float32)


def _preprocess_nodes(spec: InputSpec, init, fresh) -> tuple[list[onnx.NodeProto], str]:
    """Nodes computing ``(float(raw) * scale - mean) / std`` from the raw input, as
    :meth:`InputSpec.apply` does (float32, the same operation order); returns them and the name
    of the normalised tensor. ``fresh`` turns a wanted name into one no other tensor uses."""
    from onnx import TensorProto, helper

    view = (-1,) + (1,) * (len(spec.shape) - 1)
    nodes = []
    x = INPUT
    if spec.dtype != "float32":
        out = fresh(f"{INPUT}/float")
        nodes.append(helper.make_node("Cast", [x], [out], name=out, to=TensorProto.FLOAT))
        x = out
    for op, step, value in (("Mul", "scaled", np.array([spec.scale], np.float32)),
                            ("Sub", "centred", np.array(spec.mean, np.float32).reshape(view)),
                            ("Div", "normalised", np.array(spec.std, np.float32).reshape(view))):
        out = fresh(f"{INPUT}/{step}")
        nodes.append(helper.make_node(op, [x, init(fresh(f"{out}/{op.lower()}"), value)], [out], name=out))
        x = out
    return nodes, x


def to_onnx(
    graph: Graph,
    tensors: Mapping[str, torch.Tensor],
    input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    *,
    name: str = "deepshrink",
    preprocess: InputSpec | None = None,
    metadata: Mapping[str, str] | None = None,
    compact: Mapping[str, CompressedTensor] | None = None,
) -> onnx.ModelProto:
    """Build an ONNX model (opset 17) computing ``graph``. ``input_shape`` is per sample (no
    batch): one shape for a one-input graph, shapes by input name, or None for the shapes the
    graph's inputs declare. Each graph input becomes an ONNX input of its name and dtype
    (float32, int64 or bool) with a dynamic batch; each output an ONNX output (``output`` for a
    single output, else ``output_0``, ``output_1``, ...).

    With ``preprocess`` the model takes raw input of ``preprocess.dtype`` and applies its scaling
    and normalisation in the graph (one float32 input only). ``metadata`` goes into
    ``metadata_props``.

    ``compact`` (typed tensors by parameter name, e.g. from
    :func:`deepshrink.storage.decode_typed`) writes those parameters in their compact form
    instead of dense float32 initializers, once per tensor however many nodes use it: codebook
    indices as bytes with ``Gather`` (or ``DequantizeLinear`` for a uniform grid), pruned tensors
    as byte gaps, ``CumSum`` and ``ScatterElements`` (see :mod:`deepshrink.storage.tensors`). The
    file stays small; onnxruntime's graph optimiser folds these constant subgraphs into dense
    weights when it loads the model, so a session runs dense kernels, as fast as the dense export,
    and takes as much memory. ``DequantizeLinear`` is the exception: onnxruntime keeps it (for
    its quantised kernels) and dequantizes those weights at every run (for LeNet-300-100 about
    0.1 ms a batch of 64 on one core). Raises :class:`~deepshrink.errors.UnsupportedOperationError` when the
    network cannot be written as ONNX (an op without translation, or more than
    :data:`MAX_ONNX_BYTES` of weights), and :class:`~deepshrink.errors.InvalidHeader` when its
    shapes do not chain, before building anything large.
    """
    import onnx
    from onnx import helper, numpy_helper

    _check_size(graph, tensors)
    for pname, typed in (compact or {}).items():
        if pname in tensors and tuple(typed.shape) != tuple(tensors[pname].shape):
            raise UnsupportedOperationError(f"compact tensor {pname!r} has shape {tuple(typed.shape)}, the parameter "
                                            f"{tuple(tensors[pname].shape)}")
    # every node's shape in integer arithmetic: validates the graph and gives the output's shape
    plan = graph.plan(input_shape, {k: tuple(tensors[k].shape) for k in graph.param_names})
    if preprocess is not None and (graph.input_names != (INPUT,) or graph.inputs[0].dtype != "float32"):
        raise UnsupportedOperationError("preprocessing in the graph needs a network with one float32 input")
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []
    dtypes = dict(plan.dtypes)  # of every tensor the ops read, by its ONNX name
    params = set(graph.param_names)

    def store(key: str, array: np.ndarray) -> str:
        if key not in inits:  # a tensor shared by several nodes is stored once
            inits[key] = np.ascontiguousarray(array)
            dtypes.setdefault(key, inits[key].dtype.name)
        return key

    def init(key: str, array: np.ndarray) -> str:
        # an op that stores a parameter under its own name gets it the way weight() writes it
        return weight(key) if key in params else store(key, array)

    @functools.cache
    def param(pname: str) -> np.ndarray:
        return tensors[pname].detach().cpu().numpy().astype(np.float32)

    taken = set(graph.input_names) | {n.name for n in graph.nodes} | {p for n in graph.nodes for p in n.params.values()}

    def fresh(wanted: str) -> str:
        while wanted in taken:
            wanted += "_"
        taken.add(wanted)
        return wanted

    def weight(pname: str, transpose: bool = False) -> str:
        return _weight(pname, bool(transpose))

    @functools.cache  # once per parameter (and once more transposed), however many ops ask
    def _weight(pname: str, transpose: bool) -> str:
        dense = compact is None or pname not in compact
        if transpose:
            if dense:
                return store(pname + ".T", param(pname).T)
            perm = list(range(len(tensors[pname].shape)))[::-1]
            return add_node("Transpose", [weight(pname)], fresh(pname + ".T"), perm=perm)
        if dense:
            return store(pname, param(pname))

        def claim(wanted: str) -> str:  # the parameter's own name is free for it; others are made unique
            return wanted if wanted == pname else fresh(wanted)

        def scoped_node(op_type: str, inputs: Sequence[str], output: str, **attrs) -> str:
            return add_node(op_type, inputs, claim(output), **attrs)

        scoped = SimpleNamespace(node=scoped_node, init=lambda key, array: store(claim(key), array), cast=cast,
                                 dtype=dtypes.__getitem__)
        return compact[pname].to_onnx(scoped, pname)

    source = INPUT
    if preprocess is not None:
        pre, source = _preprocess_nodes(preprocess, init, fresh)
        nodes += pre
        dtypes[source] = "float32"

    def ref(tensor: str) -> str:
        return source if tensor == INPUT and preprocess is not None else tensor

    def add_node(op_type: str, inputs: Sequence[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op_type, list(inputs), [output], name=output, **attrs))
        return output

    @functools.cache
    def cast(x: str, dtype: str) -> str:
        if dtypes[x] == dtype:
            return x
        out = fresh(f"{x}/as_{dtype}")
        dtypes[out] = dtype
        return add_node("Cast", [x], out, to=_ONNX_TYPES[dtype])

    writer = SimpleNamespace(node=add_node, init=init, param=param, weight=weight, cast=cast, dtype=dtypes.__getitem__)
    for node in graph.nodes:
        shapes = [plan.shapes[x] for x in node.inputs]
        OPS[node.op].to_onnx(node, [ref(x) for x in node.inputs], shapes, writer)

    outputs = graph.outputs
    out_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    outs = []
    for want, value in zip(out_names, outputs):
        out_name = fresh(want)  # a layer may itself be called "output"
        nodes.append(helper.make_node("Identity", [ref(value)], [out_name], name=out_name))
        outs.append(helper.make_tensor_value_info(out_name, _ONNX_TYPES[plan.dtypes[value]], ["batch", *plan.shapes[value]]))
    ins = []
    for inp in graph.inputs:
        in_type = _ONNX_TYPES[preprocess.dtype if preprocess is not None else inp.dtype]
        ins.append(helper.make_tensor_value_info(inp.name, in_type, ["batch", *plan.shapes[inp.name]]))
    g = helper.make_graph(
        nodes, name, ins, outs, initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="deepshrink",
                              producer_version=__version__)
    model.ir_version = 8
    helper.set_model_props(model, dict(metadata or {}))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as exc:
        raise UnsupportedOperationError(f"the network cannot be expressed in ONNX opset {OPSET}: {exc}") from None
    return model


def _check_size(graph: Graph, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse, before converting anything, a network whose weights protobuf cannot hold."""
    names = {p for node in graph.nodes for p in node.params.values()}
    missing = sorted(names - set(tensors))
    if missing:
        raise UnsupportedOperationError(f"the graph uses tensors that were not given: {missing[:5]}")
    total = 4 * sum(math.prod(tensors[p].shape) for p in names)
    if total > MAX_ONNX_BYTES:
        raise UnsupportedOperationError(
            f"the network has {total:,} bytes of float32 weights; an ONNX file holds less than 2 GiB "
            f"(limit {MAX_ONNX_BYTES:,} bytes here)"
        )


def serialize_onnx(model: onnx.ModelProto) -> bytes:
    """``model`` as bytes; protobuf's failures become :class:`UnsupportedOperationError`."""
    from google.protobuf.message import EncodeError

    try:
        return model.SerializeToString()
    except (EncodeError, ValueError) as exc:
        raise UnsupportedOperationError(f"the ONNX model cannot be serialised: {exc}") from None


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike) -> int:
    """Serialise ``model`` atomically; returns the number of bytes written."""
    data = serialize_onnx(model)
    write_bytes_atomic(path, data)
    return len(data)
