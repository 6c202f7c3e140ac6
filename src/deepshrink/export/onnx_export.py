"""Write a :class:`~deepshrink.graph.ir.Graph` with dense weights as a standard ONNX model."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence

from typing import TYPE_CHECKING

import numpy as np
import torch

from deepshrink import __version__
from deepshrink.data.spec import InputSpec
from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ir import INPUT, Graph
from deepshrink.util.atomic import write_bytes_atomic

if TYPE_CHECKING:  # onnx is imported when an export runs, not with deepshrink
    import onnx

OPSET = 17
MAX_ONNX_BYTES = (1 << 31) - (1 << 24)
"""Protobuf cannot serialise a message of 2 GiB or more; keep a margin for the graph itself."""

_RAW_TYPES = {"uint8": "UINT8", "float32": "FLOAT"}  # names in onnx.TensorProto


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
    input_shape: Sequence[int],
    *,
    name: str = "deepshrink",
    preprocess: InputSpec | None = None,
    metadata: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """Build an ONNX model (opset 17) computing ``graph``; ``input_shape`` is per sample (no batch).

    With ``preprocess`` the model takes raw input of ``preprocess.dtype`` and applies its scaling
    and normalisation in the graph. ``metadata`` goes into ``metadata_props``. Raises
    :class:`~deepshrink.errors.UnsupportedOperationError` when the network cannot be written as
    ONNX (an op without translation, or more than :data:`MAX_ONNX_BYTES` of weights), and
    :class:`~deepshrink.errors.InvalidHeader` when its shapes do not chain, before building
    anything large.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _check_size(graph, tensors)
    # every node's shape in integer arithmetic: validates the graph and gives the output's shape
    plan = graph.plan(tuple(input_shape), {k: tuple(tensors[k].shape) for k in graph.param_names})
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []

    def init(key: str, array: np.ndarray) -> str:
        if key not in inits:  # a tensor shared by several nodes is stored once
            inits[key] = np.ascontiguousarray(array)
        return key

    @functools.cache
    def param(pname: str) -> np.ndarray:
        return tensors[pname].detach().cpu().numpy().astype(np.float32)

    taken = {INPUT} | {n.name for n in graph.nodes} | {p for n in graph.nodes for p in n.params.values()}

    def fresh(wanted: str) -> str:
        while wanted in taken:
            wanted += "_"
        taken.add(wanted)
        return wanted

    source = INPUT
    if preprocess is not None:
        pre, source = _preprocess_nodes(preprocess, init, fresh)
        nodes += pre
    rank = {source: 1 + len(input_shape)}

    def ref(tensor: str) -> str:
        return source if tensor == INPUT else tensor

    for node in graph.nodes:
        op, a, p = node.op, node.attrs, node.params
        x = ref(node.inputs[0])
        out = node.name
        r = rank[x]
        if op == "linear":
            w = param(p["weight"])
            if r == 2:
                ins = [x, init(p["weight"], w)] + ([init(p["bias"], param(p["bias"]))] if "bias" in p else [])
                nodes.append(helper.make_node("Gemm", ins, [out], name=out, transB=1))
            else:
                mm = out if "bias" not in p else f"{out}/matmul"
                nodes.append(helper.make_node("MatMul", [x, init(p["weight"] + ".T", w.T)], [mm], name=mm))
                if "bias" in p:
                    nodes.append(helper.make_node("Add", [mm, init(p["bias"], param(p["bias"]))], [out], name=out))
            rank[out] = r
        elif op == "conv2d":
            w = param(p["weight"])
            ins = [x, init(p["weight"], w)] + ([init(p["bias"], param(p["bias"]))] if "bias" in p else [])
            pads = [a["padding"][0], a["padding"][1], a["padding"][0], a["padding"][1]]
            nodes.append(helper.make_node(
                "Conv", ins, [out], name=out, kernel_shape=list(w.shape[2:]), strides=a["stride"],
                pads=pads, dilations=a["dilation"], group=a["groups"],
            ))
            rank[out] = 4
        elif op in ("relu", "tanh", "sigmoid", "identity"):
            onnx_op = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "identity": "Identity"}[op]
            nodes.append(helper.make_node(onnx_op, [x], [out], name=out))
            rank[out] = r
        elif op == "leaky_relu":
            nodes.append(helper.make_node("LeakyRelu", [x], [out], name=out, alpha=a["negative_slope"]))
            rank[out] = r
        elif op in ("max_pool2d", "avg_pool2d"):
            pads = [a["padding"][0], a["padding"][1], a["padding"][0], a["padding"][1]]
            kw = {"kernel_shape": a["kernel"], "strides": a["stride"], "pads": pads, "ceil_mode": int(a["ceil_mode"])}
            if op == "avg_pool2d":
                kw["count_include_pad"] = int(a["count_include_pad"])
            nodes.append(helper.make_node("MaxPool" if op == "max_pool2d" else "AveragePool", [x], [out], name=out, **kw))
            rank[out] = 4
        elif op == "global_avg_pool2d":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [out], name=out))
            rank[out] = 4
        elif op == "flatten":
            start = a["start_dim"]
            if start == 0:
                shape = [-1]
            else:
                shape = [0] * start + [-1]
            nodes.append(helper.make_node("Reshape", [x, init(f"{out}/shape", np.array(shape, np.int64))], [out], name=out))
            rank[out] = len(shape)
        elif op == "reshape":
            shape = np.array(a["shape"], np.int64)
            nodes.append(helper.make_node("Reshape", [x, init(f"{out}/shape", shape)], [out], name=out))
            rank[out] = len(shape)
        elif op == "batch_norm":
            c = param(p["running_mean"]).shape[0]
            scale = param(p["weight"]) if "weight" in p else np.ones(c, np.float32)
            bias = param(p["bias"]) if "bias" in p else np.zeros(c, np.float32)
            ins = [x, init(f"{out}/scale", scale), init(f"{out}/bias", bias),
                   init(p["running_mean"], param(p["running_mean"])), init(p["running_var"], param(p["running_var"]))]
            nodes.append(helper.make_node("BatchNormalization", ins, [out], name=out, epsilon=a["eps"]))
            rank[out] = r
        elif op in ("softmax", "log_softmax"):
            nodes.append(helper.make_node("Softmax" if op == "softmax" else "LogSoftmax", [x], [out], name=out, axis=a["dim"]))
            rank[out] = r
        elif op == "add":
            y = ref(node.inputs[1])
            nodes.append(helper.make_node("Add", [x, y], [out], name=out))
            rank[out] = max(r, rank[y])
        else:  # pragma: no cover - every op of the allow-list is handled above
            raise UnsupportedOperationError(f"op {op!r} has no ONNX translation")

    out_name = fresh("output")  # a layer may itself be called "output"
    nodes.append(helper.make_node("Identity", [ref(graph.output)], [out_name], name=out_name))
    in_type = getattr(TensorProto, _RAW_TYPES[preprocess.dtype]) if preprocess is not None else TensorProto.FLOAT
    inp = helper.make_tensor_value_info(INPUT, in_type, ["batch", *input_shape])
    outp = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", *plan.shapes[graph.output]])
    g = helper.make_graph(
        nodes, name, [inp], [outp], initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()]
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
