"""Ops with weights: linear, conv2d, batch_norm."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import (
    Op, Params, as_pair, fmt, image, int_in, onnx_pads, pair, real, register, window,
)


@register
class Linear(Op):
    """``y = x W^T + b`` over the last dimension."""

    name = "linear"
    params, optional_params, param_ndim = ("weight",), ("bias",), 2
    layer_kind = "linear"
    modules = (nn.Linear,)

    def shape(self, a, ins, ps):
        x, (out_f, in_f) = ins[0], ps["weight"]
        if not x or x[-1] != in_f:
            raise ValueError(f"weight {ps['weight']} takes {in_f} input features; the input is {fmt(x)}")
        return x[:-1] + (out_f,)

    def macs(self, a, ins, ps, out):
        return math.prod(ins[0]) * out[-1]

    def forward(self, a, xs, p):
        return F.linear(xs[0], p["weight"], p.get("bias"))

    def to_onnx(self, node, xs, shapes, g):
        p, out = node.params, node.name
        w = g.param(p["weight"])
        if len(shapes[0]) == 1:
            ins = [xs[0], g.init(p["weight"], w)] + ([g.init(p["bias"], g.param(p["bias"]))] if "bias" in p else [])
            g.node("Gemm", ins, out, transB=1)
            return
        mm = out if "bias" not in p else f"{out}/matmul"
        g.node("MatMul", [xs[0], g.init(p["weight"] + ".T", w.T)], mm)
        if "bias" in p:
            g.node("Add", [mm, g.init(p["bias"], g.param(p["bias"]))], out)


@register
class Conv2d(Op):
    """2-D convolution with explicit zero padding, dilation and groups."""

    name = "conv2d"
    params, optional_params, param_ndim = ("weight",), ("bias",), 4
    attrs = {"stride": pair(1), "padding": pair(0), "dilation": pair(1), "groups": int_in(1)}
    layer_kind = "conv"
    modules = (nn.Conv2d,)

    def shape(self, a, ins, ps):
        x, w, g = image(ins[0]), ps["weight"], a["groups"]
        if min(w) < 1:
            raise ValueError(f"weight shape {w} has an empty dimension")
        if w[0] % g or x[0] != w[1] * g:
            raise ValueError(
                f"weight {w} with groups={g} needs {w[1] * g} input channels and output channels divisible "
                f"by {g}; the input is {fmt(x)}"
            )
        return (w[0], *(
            window(x[1 + i], a["dilation"][i] * (w[2 + i] - 1) + 1, a["stride"][i], a["padding"][i], False)
            for i in range(2)
        ))

    def macs(self, a, ins, ps, out):
        return math.prod(out) * math.prod(ps["weight"][1:])

    def from_module(self, mod):
        if isinstance(mod.padding, str) or mod.padding_mode != "zeros":
            raise UnsupportedOperationError(
                f"Conv2d with padding={mod.padding!r}, padding_mode={mod.padding_mode!r}; "
                "only explicit integer zero padding is supported"
            )
        return {"stride": as_pair(mod.stride), "padding": as_pair(mod.padding),
                "dilation": as_pair(mod.dilation), "groups": int(mod.groups)}

    def forward(self, a, xs, p):
        return F.conv2d(xs[0], p["weight"], p.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"])

    def to_onnx(self, node, xs, shapes, g):
        p = node.params
        w = g.param(p["weight"])
        ins = [xs[0], g.init(p["weight"], w)] + ([g.init(p["bias"], g.param(p["bias"]))] if "bias" in p else [])
        g.node("Conv", ins, node.name, kernel_shape=list(w.shape[2:]), strides=node.attrs["stride"],
               pads=onnx_pads(node.attrs["padding"]), dilations=node.attrs["dilation"], group=node.attrs["groups"])


@register
class BatchNorm(Op):
    """Inference-mode batch normalisation over dimension 1 with running statistics."""

    name = "batch_norm"
    params, optional_params, param_ndim = ("running_mean", "running_var"), ("weight", "bias"), 1
    statistics = ("running_mean", "running_var")
    attrs = {"eps": real(0.0, 1.0)}
    modules = (nn.BatchNorm1d, nn.BatchNorm2d)

    def check_roles(self, roles):
        if ("weight" in roles) != ("bias" in roles):
            raise ValueError("batch_norm takes both weight and bias, or neither")

    def shape(self, a, ins, ps):
        x, (c,) = ins[0], ps["running_mean"]
        if not x or x[0] != c:
            raise ValueError(f"statistics for {c} channels; the input is {fmt(x)}")
        return x

    def macs(self, a, ins, ps, out):
        return math.prod(out)

    def check_tensors(self, a: Mapping[str, Any], p: Params) -> None:
        if not bool((p["running_var"] + a["eps"] > 0).all()):
            raise ValueError("running_var + eps must be positive")

    def from_module(self, mod):
        if not mod.track_running_stats:
            raise UnsupportedOperationError("BatchNorm without running statistics")
        return {"eps": float(mod.eps)}

    def forward(self, a, xs, p):
        return F.batch_norm(xs[0], p["running_mean"], p["running_var"], p.get("weight"), p.get("bias"),
                            False, 0.0, a["eps"])

    def to_onnx(self, node, xs, shapes, g):
        p, out = node.params, node.name
        c = g.param(p["running_mean"]).shape[0]
        scale = g.param(p["weight"]) if "weight" in p else np.ones(c, np.float32)
        bias = g.param(p["bias"]) if "bias" in p else np.zeros(c, np.float32)
        ins = [xs[0], g.init(f"{out}/scale", scale), g.init(f"{out}/bias", bias),
               g.init(p["running_mean"], g.param(p["running_mean"])),
               g.init(p["running_var"], g.param(p["running_var"]))]
        g.node("BatchNormalization", ins, out, epsilon=node.attrs["eps"])
