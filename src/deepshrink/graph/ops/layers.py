"""Ops with weights: linear, conv1d, conv2d (grouped, depthwise, dilated, ``padding="same"``),
batch_norm, layer_norm and embedding."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import (
    Channels, Op, Params, as_ints, either, fmt, int_in, ints, one_of, real, register, spatial, window,
)

MAX_EPS = 1.0


def _sizes(v: Any) -> list[int]:
    """1 to 8 positive dimension sizes."""
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 8:
        raise ValueError(f"expected a list of 1 to 8 sizes, got {v!r}")
    return [int_in(1)(d) for d in v]


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

    def channels(self, a, ins, out):
        return Channels("new", axis=len(ins[0]) - 1, out_axis=len(out) - 1, consumes={"weight": 1},
                        follows={"weight": 0, "bias": 0})

    def to_onnx(self, node, xs, shapes, g):
        p, out = node.params, node.name
        if len(shapes[0]) == 1:
            ins = [xs[0], g.weight(p["weight"])] + ([g.weight(p["bias"])] if "bias" in p else [])
            g.node("Gemm", ins, out, transB=1)
            return
        mm = out if "bias" not in p else f"{out}/matmul"
        g.node("MatMul", [xs[0], g.weight(p["weight"], transpose=True)], mm)
        if "bias" in p:
            g.node("Add", [mm, g.weight(p["bias"])], out)

    def to_c(self, node, ins, out, w):
        bias = w.tensor("bias") if "bias" in node.params else None
        w.call("ds_linear", w.weight("weight"), bias, w.x(), w.y(), math.prod(ins[0][:-1]))


class _Conv(Op):
    """An ``nd``-dimensional convolution with zero padding (explicit, or ``"same"``: the output
    as large as the input, the odd pixel of padding at the end as PyTorch does), dilation and
    groups (depthwise when groups equals the input channels)."""

    nd: int
    params, optional_params = ("weight",), ("bias",)
    layer_kind = "conv"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        n = cls.nd
        cls.param_ndim = n + 2
        cls.attrs = {"stride": ints(n, 1), "padding": either(ints(n, 0), one_of("same")),
                     "dilation": ints(n, 1), "groups": int_in(1)}

    def pads(self, a, w) -> list[int]:
        """Padding at the start of each spatial dimension, then at the end (ONNX order)."""
        if a["padding"] != "same":
            return [*a["padding"], *a["padding"]]
        total = [a["dilation"][i] * (w[2 + i] - 1) for i in range(self.nd)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]

    def shape(self, a, ins, ps):
        x, w, g = spatial(ins[0], self.nd), ps["weight"], a["groups"]
        if min(w) < 1:
            raise ValueError(f"weight shape {w} has an empty dimension")
        if w[0] % g or x[0] != w[1] * g:
            raise ValueError(
                f"weight {w} with groups={g} needs {w[1] * g} input channels and output channels divisible "
                f"by {g}; the input is {fmt(x)}"
            )
        if a["padding"] == "same" and a["stride"] != [1] * self.nd:
            raise ValueError(f"padding 'same' needs stride 1, got {a['stride']}")
        pads = self.pads(a, w)
        out = []
        for i in range(self.nd):
            extent = a["dilation"][i] * (w[2 + i] - 1) + 1
            padded = x[1 + i] + pads[i] + pads[self.nd + i]  # window() pads symmetrically: give it the sum
            out.append(window(padded, extent, a["stride"][i], 0, False))
        return (w[0], *out)

    def macs(self, a, ins, ps, out):
        return math.prod(out) * math.prod(ps["weight"][1:])

    def from_module(self, mod):
        padding = mod.padding
        if padding == "valid":
            padding = 0
        if mod.padding_mode != "zeros":
            raise UnsupportedOperationError(
                f"{type(mod).__name__} with padding_mode={mod.padding_mode!r}; only zero padding is supported"
            )
        return {"stride": as_ints(mod.stride, self.nd),
                "padding": padding if padding == "same" else as_ints(padding, self.nd),
                "dilation": as_ints(mod.dilation, self.nd), "groups": int(mod.groups)}

    def channels(self, a, ins, out):
        g, spatial_axes = a["groups"], tuple(range(1, self.nd + 1))
        if g == 1:
            return Channels("new", axis=0, out_axis=0, consumes={"weight": 1}, follows={"weight": 0, "bias": 0})
        if g == ins[0][0] == out[0]:  # depthwise: channel c of the output is made from channel c alone
            return Channels("same", axis=0, follows={"weight": 0, "bias": 0}, mixes=spatial_axes)
        return Channels("mix", reason=f"a grouped convolution (groups={g}) ties its channels group by group")

    def forward(self, a, xs, p):
        conv = F.conv1d if self.nd == 1 else F.conv2d
        return conv(xs[0], p["weight"], p.get("bias"), a["stride"], a["padding"], a["dilation"], a["groups"])

    def to_onnx(self, node, xs, shapes, g):
        p = node.params
        shape = g.param(p["weight"]).shape
        ins = [xs[0], g.weight(p["weight"])] + ([g.weight(p["bias"])] if "bias" in p else [])
        g.node("Conv", ins, node.name, kernel_shape=list(shape[2:]), strides=node.attrs["stride"],
               pads=self.pads(node.attrs, shape), dilations=node.attrs["dilation"], group=node.attrs["groups"])

    def to_c(self, node, ins, out, w):
        a, x = node.attrs, ins[0]
        kernel = w.shape("weight")[2:]
        pads = self.pads(a, (0, 0, *kernel))
        if self.nd == 1:  # a 2-D convolution of height 1
            x, out, kernel = (x[0], 1, x[1]), (out[0], 1, out[1]), (1, *kernel)
            a = {**a, "stride": [1, *a["stride"]], "dilation": [1, *a["dilation"]]}
            pads = [0, pads[0]]
        geom = w.struct("ds_conv", {"in_c": x[0], "in_h": x[1], "in_w": x[2], "out_c": out[0], "out_h": out[1],
                                    "out_w": out[2], "k_h": kernel[0], "k_w": kernel[1], "stride_h": a["stride"][0],
                                    "stride_w": a["stride"][1], "pad_h": pads[0], "pad_w": pads[1],
                                    "dil_h": a["dilation"][0], "dil_w": a["dilation"][1], "groups": a["groups"]})
        bias = w.tensor("bias") if "bias" in node.params else None
        w.call("ds_conv2d", w.weight("weight"), bias, geom, w.x(), w.y(), 1)


@register
class Conv1d(_Conv):
    """1-D convolution over ``(N, C, L)``."""

    name, nd = "conv1d", 1
    modules = (nn.Conv1d,)


@register
class Conv2d(_Conv):
    """2-D convolution over ``(N, C, H, W)``."""

    name, nd = "conv2d", 2
    modules = (nn.Conv2d,)


@register
class BatchNorm(Op):
    """Inference-mode batch normalisation over dimension 1 with running statistics."""

    name = "batch_norm"
    params, optional_params, param_ndim = ("running_mean", "running_var"), ("weight", "bias"), 1
    statistics = ("running_mean", "running_var")
    attrs = {"eps": real(0.0, MAX_EPS)}
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

    def channels(self, a, ins, out):
        return Channels("same", axis=0, follows={r: 0 for r in ("running_mean", "running_var", "weight", "bias")})

    def forward(self, a, xs, p):
        return F.batch_norm(xs[0], p["running_mean"], p["running_var"], p.get("weight"), p.get("bias"),
                            False, 0.0, a["eps"])

    def to_onnx(self, node, xs, shapes, g):
        p, out = node.params, node.name
        c = g.param(p["running_mean"]).shape[0]
        scale = g.weight(p["weight"]) if "weight" in p else g.init(f"{out}/scale", np.ones(c, np.float32))
        bias = g.weight(p["bias"]) if "bias" in p else g.init(f"{out}/bias", np.zeros(c, np.float32))
        ins = [xs[0], scale, bias, g.weight(p["running_mean"]), g.weight(p["running_var"])]
        g.node("BatchNormalization", ins, out, epsilon=node.attrs["eps"])

    def to_c(self, node, ins, out, w):
        mean, var = (w.param(r).astype(np.float64) for r in ("running_mean", "running_var"))
        c = mean.shape[0]
        weight = w.param("weight").astype(np.float64) if "weight" in node.params else np.ones(c)
        bias = w.param("bias").astype(np.float64) if "bias" in node.params else np.zeros(c)
        scale = weight / np.sqrt(var + node.attrs["eps"])  # folded into one multiply-add per value
        w.in_place()
        w.call("ds_affine", w.floats(scale), w.floats(bias - mean * scale), w.x(), w.y(), 1, c, math.prod(out[1:]))


@register
class LayerNorm(Op):
    """Normalisation over the last ``len(normalized_shape)`` dimensions, with an optional
    elementwise scale (``weight``) and shift (``bias``) of that shape."""

    name, batch_free = "layer_norm", "keep"
    optional_params = ("weight", "bias")
    attrs = {"normalized_shape": _sizes, "eps": real(0.0, MAX_EPS)}
    modules = (nn.LayerNorm,)

    def check_roles(self, roles):
        if roles == {"bias"}:
            raise ValueError("layer_norm takes a bias only with a weight")

    def check_param_shapes(self, a, ps):
        for role, shape in ps.items():
            if list(shape) != a["normalized_shape"]:
                raise ValueError(f"{role} has shape {shape}, expected normalized_shape {a['normalized_shape']}")

    def shape(self, a, ins, ps):
        x, norm = ins[0], a["normalized_shape"]
        if len(norm) > len(x) or list(x[len(x) - len(norm):]) != norm:
            raise ValueError(f"normalized_shape {norm} is not the trailing dimensions of the input {fmt(x)}")
        return x

    def macs(self, a, ins, ps, out):
        return 2 * math.prod(out)

    def from_module(self, mod):
        return {"normalized_shape": list(mod.normalized_shape), "eps": float(mod.eps)}

    def channels(self, a, ins, out):
        n = len(ins[0])
        return Channels("same", mixes=tuple(range(n - len(a["normalized_shape"]), n)),
                        reason="layer_norm normalises over the channels (their mean and variance change)")

    def forward(self, a, xs, p):
        return F.layer_norm(xs[0], a["normalized_shape"], p.get("weight"), p.get("bias"), a["eps"])

    def to_onnx(self, node, xs, shapes, g):
        p, a, out = node.params, node.attrs, node.name
        norm = a["normalized_shape"]
        ins = [xs[0], g.weight(p["weight"]) if "weight" in p else g.init(f"{out}/scale", np.ones(norm, np.float32))]
        if "bias" in p:
            ins.append(g.weight(p["bias"]))
        g.node("LayerNormalization", ins, out, axis=-len(norm), epsilon=a["eps"])


@register
class Embedding(Op):
    """Rows of ``weight`` (``[num_embeddings, dim]``) picked by int64 indices: ``(N, *)`` indices
    give ``(N, *, dim)`` float32 vectors. An index outside the table is an error when run."""

    name, batch_free = "embedding", "keep"
    params, param_ndim = ("weight",), 2
    layer_kind = "embedding"
    modules = (nn.Embedding,)

    def dtype(self, a, ins):
        if ins[0] != "int64":
            raise ValueError(f"embedding looks up int64 indices, got {ins[0]}")
        return "float32"

    def shape(self, a, ins, ps):
        return ins[0] + ps["weight"][1:]

    def from_module(self, mod):
        if mod.max_norm is not None:
            raise UnsupportedOperationError("Embedding with max_norm (it rewrites the weights when run)")
        return {}

    def forward(self, a, xs, p):
        return F.embedding(xs[0], p["weight"])

    def channels(self, a, ins, out):
        return Channels("new", out_axis=len(out) - 1, follows={"weight": 1})

    def to_onnx(self, node, xs, shapes, g):
        g.node("Gather", [g.weight(node.params["weight"]), xs[0]], node.name, axis=0)

