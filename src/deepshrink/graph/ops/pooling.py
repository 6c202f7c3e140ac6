"""2-D pooling: max, average, and global average."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import Op, as_pair, boolean, image, onnx_pads, pair, register, window


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

    def from_module(self, mod):
        return {"kernel": as_pair(mod.kernel_size),
                "stride": as_pair(mod.stride if mod.stride is not None else mod.kernel_size),
                "padding": as_pair(mod.padding), "ceil_mode": bool(mod.ceil_mode)}

    def onnx_attrs(self, a):
        """The ONNX attributes of the pooling node."""
        return {"kernel_shape": a["kernel"], "strides": a["stride"], "pads": onnx_pads(a["padding"]),
                "ceil_mode": int(a["ceil_mode"])}

    def to_onnx(self, node, xs, shapes, g):
        g.node(self.onnx_type, xs, node.name, **self.onnx_attrs(node.attrs))


@register
class MaxPool2d(_Pool):
    """The maximum of each window (padding counts as -inf)."""

    name, onnx_type = "max_pool2d", "MaxPool"
    modules = (nn.MaxPool2d,)

    def from_module(self, mod):
        if as_pair(mod.dilation) != [1, 1] or mod.return_indices:
            raise UnsupportedOperationError("MaxPool2d with dilation or return_indices")
        return super().from_module(mod)

    def forward(self, a, xs, p):
        return F.max_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])


@register
class AvgPool2d(_Pool):
    """The mean of each window, with or without the zero padding in the count."""

    name, onnx_type = "avg_pool2d", "AveragePool"
    attrs = {**_Pool.attrs, "count_include_pad": boolean}
    modules = (nn.AvgPool2d,)

    def from_module(self, mod):
        if mod.divisor_override is not None:
            raise UnsupportedOperationError("AvgPool2d with divisor_override")
        return {**super().from_module(mod), "count_include_pad": bool(mod.count_include_pad)}

    def forward(self, a, xs, p):
        return F.avg_pool2d(xs[0], a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"],
                            count_include_pad=a["count_include_pad"])

    def onnx_attrs(self, a):
        return {**super().onnx_attrs(a), "count_include_pad": int(a["count_include_pad"])}


@register
class GlobalAvgPool2d(Op):
    """The mean of each channel: ``nn.AdaptiveAvgPool2d(1)``."""

    name, onnx_type = "global_avg_pool2d", "GlobalAveragePool"
    modules = (nn.AdaptiveAvgPool2d,)

    def shape(self, a, ins, ps):
        return (image(ins[0])[0], 1, 1)

    def macs(self, a, ins, ps, out):
        return math.prod(ins[0])

    def from_module(self, mod):
        if as_pair(mod.output_size) != [1, 1]:
            raise UnsupportedOperationError(
                f"AdaptiveAvgPool2d with output_size={mod.output_size!r}; only 1 (global pooling) is supported")
        return {}

    def forward(self, a, xs, p):
        return F.adaptive_avg_pool2d(xs[0], 1)
