"""2-D pooling: max, average, global average, and adaptive average or max pooling to any
output size; each from its module and its functional form (``F.max_pool2d``,
``F.adaptive_avg_pool2d``, ...)."""

from __future__ import annotations

import math

import numpy as np
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import (
    OPS, Channels, Op, as_pair, boolean, image, int_in, nullable, onnx_pads, pair, register, window,
)


POOLED = Channels("same", axis=0, mixes=(1, 2))
"""The channels of 2-D pooling: each channel pooled on its own over the image."""


class _Pool(Op):
    """A ``kernel`` window moved by ``stride`` over the zero- (or -inf-) padded image."""

    attrs = {"kernel": pair(1), "stride": pair(1), "padding": pair(0), "ceil_mode": boolean}

    def shape(self, a, ins, ps):
        x, k, p = image(ins[0]), a["kernel"], a["padding"]
        if 2 * p[0] > k[0] or 2 * p[1] > k[1]:
            raise ValueError(f"padding {p} must be at most half the kernel {k}")
        return (x[0], *(window(x[1 + i], k[i], a["stride"][i], p[i], a["ceil_mode"]) for i in range(2)))

    def macs(self, a, ins, ps, out):
        return math.prod(out) * math.prod(a["kernel"])

    def channels(self, a, ins, out):
        return POOLED

    def from_module(self, mod):
        return {"kernel": as_pair(mod.kernel_size),
                "stride": as_pair(mod.stride if mod.stride is not None else mod.kernel_size),
                "padding": as_pair(mod.padding), "ceil_mode": bool(mod.ceil_mode)}

    def from_call(self, call):
        kernel = call.arg(1, "kernel_size")
        stride = call.arg(2, "stride")
        return (call.args[0],), {"kernel": as_pair(kernel), "stride": as_pair(stride if stride else kernel),
                                 "padding": as_pair(call.arg(3, "padding", 0)),
                                 "ceil_mode": bool(call.arg(self.ceil_position, "ceil_mode", False))}

    ceil_position = 4

    def onnx_attrs(self, a):
        """The ONNX attributes of the pooling node."""
        return {"kernel_shape": a["kernel"], "strides": a["stride"], "pads": onnx_pads(a["padding"]),
                "ceil_mode": int(a["ceil_mode"])}

    def to_onnx(self, node, xs, shapes, g):
        g.node(self.onnx_type, xs, node.name, **self.onnx_attrs(node.attrs))

    def to_c(self, node, ins, out, w):
        a, (c, h, wd) = node.attrs, ins[0]
        pool = w.struct("ds_pool", {"c": c, "in_h": h, "in_w": wd, "out_h": out[1], "out_w": out[2],
                                    "k_h": a["kernel"][0], "k_w": a["kernel"][1], "stride_h": a["stride"][0],
                                    "stride_w": a["stride"][1], "pad_h": a["padding"][0], "pad_w": a["padding"][1],
                                    "count_pad": int(a.get("count_include_pad", False))})
        w.call(self.c_kernel, pool, w.x(), w.y(), 1)


@register
class MaxPool2d(_Pool):
    """The maximum of each window (padding counts as -inf)."""

    name, onnx_type = "max_pool2d", "MaxPool"
    c_kernel = "ds_max_pool2d"
    modules, functions = (nn.MaxPool2d,), (F.max_pool2d,)
    ceil_position = 5  # after dilation

    def from_module(self, mod):
        if as_pair(mod.dilation) != [1, 1] or mod.return_indices:
            raise UnsupportedOperationError("MaxPool2d with dilation or return_indices")
        return super().from_module(mod)

    def from_call(self, call):
        if as_pair(call.arg(4, "dilation", 1)) != [1, 1] or call.arg(6, "return_indices", False):
            raise UnsupportedOperationError("max_pool2d with dilation or return_indices")
        return super().from_call(call)

    def forward(self, a, xs, p):
        return F.max_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])


@register
class AvgPool2d(_Pool):
    """The mean of each window, with or without the zero padding in the count."""

    name, onnx_type = "avg_pool2d", "AveragePool"
    c_kernel = "ds_avg_pool2d"
    attrs = {**_Pool.attrs, "count_include_pad": boolean}
    modules, functions = (nn.AvgPool2d,), (F.avg_pool2d,)

    def from_module(self, mod):
        if mod.divisor_override is not None:
            raise UnsupportedOperationError("AvgPool2d with divisor_override")
        return {**super().from_module(mod), "count_include_pad": bool(mod.count_include_pad)}

    def from_call(self, call):
        if call.arg(6, "divisor_override") is not None:
            raise UnsupportedOperationError("avg_pool2d with divisor_override")
        return call.args[:1], {**super().from_call(call)[1], "count_include_pad": bool(call.arg(5, "count_include_pad", True))}

    def forward(self, a, xs, p):
        return F.avg_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"],
                            count_include_pad=a["count_include_pad"])

    def onnx_attrs(self, a):
        return {**super().onnx_attrs(a), "count_include_pad": int(a["count_include_pad"])}


@register
class GlobalAvgPool2d(Op):
    """The mean of each channel: ``nn.AdaptiveAvgPool2d(1)`` (traced through
    :class:`AdaptiveAvgPool2d`, which hands the 1×1 case here)."""

    name, onnx_type = "global_avg_pool2d", "GlobalAveragePool"

    def shape(self, a, ins, ps):
        return (image(ins[0])[0], 1, 1)

    def macs(self, a, ins, ps, out):
        return math.prod(ins[0])

    def channels(self, a, ins, out):
        return POOLED

    def forward(self, a, xs, p):
        return F.adaptive_avg_pool2d(xs[0], 1)

    def to_c(self, node, ins, out, w):
        c, h, wd = ins[0]
        w.call("ds_adaptive_pool2d", 0, c, h, wd, 1, 1, w.x(), w.y())


def _windows(n: int, o: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: output ``i`` of ``o`` covers
    ``[floor(i n / o), ceil((i + 1) n / o))`` of ``n``."""
    return [(i * n // o, -((-(i + 1) * n) // o)) for i in range(o)]


def _output_size(v: object) -> list[int | None]:
    """Two output sizes, each at least 1 or ``null`` (the input's size)."""
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"expected a list of 2 sizes (or null), got {v!r}")
    return [nullable(int_in(1))(x) for x in v]


def _as_size(v) -> list[int | None]:
    """A PyTorch output size (``7``, ``(7, None)``) as a list of two."""
    return [v, v] if isinstance(v, int) or v is None else list(v)


class _Adaptive(Op):
    """Pooling of each channel to ``output_size`` (``null`` keeps that dimension) with windows
    that tile the input as evenly as integers allow."""

    attrs = {"output_size": _output_size}
    pool: str
    reduce: str

    def shape(self, a, ins, ps):
        c, h, w = image(ins[0])
        oh, ow = (s if s is not None else n for s, n in zip(a["output_size"], (h, w)))
        return (c, oh, ow)

    def macs(self, a, ins, ps, out):
        c, oh, ow = out
        _, h, w = ins[0]
        return c * oh * (h // oh + 2) * ow * (w // ow + 2)  # every window is at most ceil(n / o) + 1 long

    def channels(self, a, ins, out):
        return POOLED

    def from_module(self, mod):
        if getattr(mod, "return_indices", False):
            raise UnsupportedOperationError(f"{type(mod).__name__} with return_indices")
        return {"output_size": _as_size(mod.output_size)}

    def from_call(self, call):
        if call.arg(2, "return_indices", False):
            raise UnsupportedOperationError(f"{self.name} with return_indices")
        return (call.args[0],), {"output_size": _as_size(call.arg(1, "output_size"))}

    def to_onnx(self, node, xs, shapes, g):
        (_, h, w), out = shapes[0], node.name
        oh, ow = (s if s is not None else n for s, n in zip(node.attrs["output_size"], (h, w)))
        if h % oh == 0 and w % ow == 0:  # equal windows: one pooling node
            k = [h // oh, w // ow]
            g.node(self.pool, xs, out, kernel_shape=k, strides=k)
            return
        x = xs[0]
        for axis, n, o in ((2, h, oh), (3, w, ow)):  # windows are separable: rows, then columns
            name = out if axis == 3 else f"{out}/rows"
            parts = []
            for i, (lo, hi) in enumerate(_windows(n, o)):
                cut = g.node("Slice", [x, g.init(f"{out}/{axis}/{i}/lo", np.array([lo], np.int64)),
                                       g.init(f"{out}/{axis}/{i}/hi", np.array([hi], np.int64)),
                                       g.init(f"{out}/axis{axis}", np.array([axis], np.int64))], f"{out}/{axis}/{i}")
                parts.append(g.node(self.reduce, [cut], f"{out}/{axis}/{i}/r", axes=[axis], keepdims=1))
            x = g.node("Concat", parts, name, axis=axis) if len(parts) > 1 else g.node("Identity", parts, name)

    def to_c(self, node, ins, out, w):
        c, h, wd = ins[0]
        w.call("ds_adaptive_pool2d", int(self.reduce == "ReduceMax"), c, h, wd, out[1], out[2], w.x(), w.y())


@register
class AdaptiveAvgPool2d(_Adaptive):
    """The mean of each adaptive window."""

    name, pool, reduce = "adaptive_avg_pool2d", "AveragePool", "ReduceMean"
    modules, functions = (nn.AdaptiveAvgPool2d,), (F.adaptive_avg_pool2d,)

    def resolve(self, attrs):
        if attrs.get("output_size") == [1, 1]:
            return OPS["global_avg_pool2d"], {}
        return self, attrs

    def forward(self, a, xs, p):
        return F.adaptive_avg_pool2d(xs[0], a["output_size"])


@register
class AdaptiveMaxPool2d(_Adaptive):
    """The maximum of each adaptive window."""

    name, pool, reduce = "adaptive_max_pool2d", "MaxPool", "ReduceMax"
    modules, functions = (nn.AdaptiveMaxPool2d,), (F.adaptive_max_pool2d,)

    def forward(self, a, xs, p):
        return F.adaptive_max_pool2d(xs[0], a["output_size"])
