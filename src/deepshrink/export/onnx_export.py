"""Write a :class:`~deepshrink.graph.ir.Graph` with dense weights as a standard ONNX model."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.build import build
from deepshrink.graph.ir import INPUT, Graph
from deepshrink.util.atomic import write_bytes_atomic

OPSET = 17


def to_onnx(
    graph: Graph,
    tensors: Mapping[str, torch.Tensor],
    input_shape: Sequence[int],
    *,
    name: str = "deepshrink",
) -> onnx.ModelProto:
    """Build an ONNX model (opset 17) computing ``graph``; ``input_shape`` is per sample (no batch)."""
    inits: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []
    rank = {INPUT: 1 + len(input_shape)}

    def init(key: str, array: np.ndarray) -> str:
        inits[key] = np.ascontiguousarray(array)
        return key

    def param(pname: str) -> np.ndarray:
        return tensors[pname].detach().cpu().numpy().astype(np.float32)

    for node in graph.nodes:
        op, a, p = node.op, node.attrs, node.params
        x = node.inputs[0]
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
            nodes.append(helper.make_node("Add", [x, node.inputs[1]], [out], name=out))
            rank[out] = max(r, rank[node.inputs[1]])
        else:  # pragma: no cover - every op of the allow-list is handled above
            raise UnsupportedOperationError(f"op {op!r} has no ONNX translation")

    out_name = "output"
    taken = {n.name for n in graph.nodes} | set(inits)
    while out_name in taken:  # a layer may itself be called "output"
        out_name += "_"
    nodes.append(helper.make_node("Identity", [graph.output], [out_name], name=out_name))
    inp = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", *input_shape])
    with torch.no_grad():  # the output's per-sample shape, from one dry run in PyTorch
        probe = build(graph, tensors)(torch.zeros(1, *input_shape))
    outp = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", *probe.shape[1:]])
    g = helper.make_graph(
        nodes, name, [inp], [outp], initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()]
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="deepshrink")
    model.ir_version = 8
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise UnsupportedOperationError(f"the network cannot be expressed in ONNX opset {OPSET}: {exc}") from None
    return model


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike) -> int:
    """Serialise ``model`` atomically; returns the number of bytes written."""
    data = model.SerializeToString()
    write_bytes_atomic(path, data)
    return len(data)
