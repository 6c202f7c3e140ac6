"""Elementwise activations (ReLU, ReLU6, leaky ReLU, tanh, sigmoid, GELU exact and tanh, SiLU,
hardswish, hardsigmoid), identity (dropout at inference, ``contiguous``), and (log-)softmax
along one dimension. Each is traced from its module, its functional form and its tensor method
where PyTorch has one. ONNX opset 17 has no GELU or SiLU: they are written out from Erf, Tanh
and Sigmoid."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import SAME, Channels, Elementwise, Mover, Op, dim_index, int_in, one_of, real, register

MAX_LEAKY_SLOPE = 1e3


@register
class Relu(Elementwise):
    """``max(x, 0)``."""

    name, onnx_type = "relu", "Relu"
    c_unary = "DS_RELU"
    modules, functions, methods = (nn.ReLU,), (F.relu, torch.relu), ("relu",)

    def forward(self, a, xs, p):
        return F.relu(xs[0])


@register
class Tanh(Elementwise):
    """Hyperbolic tangent."""

    name, onnx_type = "tanh", "Tanh"
    c_unary = "DS_TANH"
    modules, functions, methods = (nn.Tanh,), (torch.tanh,), ("tanh",)

    def forward(self, a, xs, p):
        return torch.tanh(xs[0])


@register
class Sigmoid(Elementwise):
    """``1 / (1 + exp(-x))``."""

    name, onnx_type = "sigmoid", "Sigmoid"
    c_unary = "DS_SIGMOID"
    modules, functions, methods = (nn.Sigmoid,), (torch.sigmoid,), ("sigmoid",)

    def forward(self, a, xs, p):
        return torch.sigmoid(xs[0])


@register
class LeakyRelu(Elementwise):
    """``x`` where positive, else ``negative_slope * x``."""

    name = "leaky_relu"
    attrs = {"negative_slope": real(-MAX_LEAKY_SLOPE, MAX_LEAKY_SLOPE)}
    modules = (nn.LeakyReLU,)

    def from_module(self, mod):
        return {"negative_slope": float(mod.negative_slope)}

    def forward(self, a, xs, p):
        return F.leaky_relu(xs[0], a["negative_slope"])

    def to_onnx(self, node, xs, shapes, g):
        g.node("LeakyRelu", xs, node.name, alpha=node.attrs["negative_slope"])

    def to_c(self, node, ins, out, w):
        w.in_place()
        w.call("ds_unary", "DS_LEAKY_RELU", node.attrs["negative_slope"], 0.0, w.x(), w.y(), math.prod(out))


@register
class Relu6(Elementwise):
    """``min(max(x, 0), 6)``."""

    name = "relu6"
    c_unary = "DS_RELU6"
    modules, functions = (nn.ReLU6,), (F.relu6,)

    def forward(self, a, xs, p):
        return F.relu6(xs[0])

    def to_onnx(self, node, xs, shapes, g):
        lo, hi = g.init(f"{node.name}/min", np.array(0, np.float32)), g.init(f"{node.name}/max", np.array(6, np.float32))
        g.node("Clip", [xs[0], lo, hi], node.name)


@register
class Gelu(Elementwise):
    """``x Φ(x)`` with the normal distribution's exact CDF, or its tanh approximation."""

    name = "gelu"
    attrs = {"approximate": one_of("none", "tanh")}
    modules, functions = (nn.GELU,), (F.gelu,)

    def from_module(self, mod):
        return {"approximate": mod.approximate}

    def from_call(self, call):
        return (call.args[0],), {"approximate": call.arg(1, "approximate", "none")}

    def forward(self, a, xs, p):
        return F.gelu(xs[0], approximate=a["approximate"])

    def to_onnx(self, node, xs, shapes, g):
        x, out = xs[0], node.name
        c = lambda name, v: g.init(f"{out}/{name}", np.array(v, np.float32))  # noqa: E731
        if node.attrs["approximate"] == "none":  # 0.5 x (1 + erf(x / sqrt 2))
            inner = g.node("Erf", [g.node("Div", [x, c("sqrt2", math.sqrt(2))], f"{out}/scaled")], f"{out}/erf")
        else:  # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
            cube = g.node("Mul", [g.node("Mul", [x, x], f"{out}/sq"), x], f"{out}/cube")
            arg = g.node("Add", [x, g.node("Mul", [cube, c("k", 0.044715)], f"{out}/kcube")], f"{out}/poly")
            inner = g.node("Tanh", [g.node("Mul", [arg, c("s", math.sqrt(2 / math.pi))], f"{out}/arg")], f"{out}/tanh")
        half = g.node("Mul", [x, c("0.5", 0.5)], f"{out}/halfx")
        g.node("Mul", [half, g.node("Add", [inner, c("1", 1.0)], f"{out}/1p")], out)

    def to_c(self, node, ins, out, w):
        w.in_place()
        op = "DS_GELU" if node.attrs["approximate"] == "none" else "DS_GELU_TANH"
        w.call("ds_unary", op, 0.0, 0.0, w.x(), w.y(), math.prod(out))


@register
class Silu(Elementwise):
    """``x sigmoid(x)`` (swish)."""

    name = "silu"
    c_unary = "DS_SILU"
    modules, functions = (nn.SiLU,), (F.silu,)

    def forward(self, a, xs, p):
        return F.silu(xs[0])

    def to_onnx(self, node, xs, shapes, g):
        g.node("Mul", [xs[0], g.node("Sigmoid", xs, f"{node.name}/sigmoid")], node.name)


@register
class Hardswish(Elementwise):
    """``x relu6(x + 3) / 6``."""

    name, onnx_type = "hardswish", "HardSwish"
    c_unary = "DS_HARDSWISH"
    modules, functions = (nn.Hardswish,), (F.hardswish,)

    def forward(self, a, xs, p):
        return F.hardswish(xs[0])


@register
class Hardsigmoid(Elementwise):
    """``relu6(x + 3) / 6``."""

    name = "hardsigmoid"
    c_unary = "DS_HARDSIGMOID"
    modules, functions = (nn.Hardsigmoid,), (F.hardsigmoid,)

    def forward(self, a, xs, p):
        return F.hardsigmoid(xs[0])

    def to_onnx(self, node, xs, shapes, g):
        g.node("HardSigmoid", xs, node.name, alpha=1 / 6, beta=0.5)


@register
class Identity(Mover):
    """The input unchanged: ``nn.Identity``, dropout at inference, ``x.contiguous()``."""

    name, onnx_type, batch_free = "identity", "Identity", "keep"
    modules, functions, methods = (nn.Dropout, nn.Identity), (F.dropout,), ("contiguous",)

    def forward(self, a, xs, p):
        return xs[0]

    def channels(self, a, ins, out):
        return SAME

    def to_c(self, node, ins, out, w):
        w.alias()


class _Softmax(Op):
    """Softmax or log-softmax along ``dim`` (any non-batch dimension)."""

    attrs = {"dim": int_in(-8, 7)}

    def shape(self, a, ins, ps):
        dim_index(a["dim"], ins[0])
        return ins[0]

    def macs(self, a, ins, ps, out):
        return math.prod(out)

    def channels(self, a, ins, out):
        return Channels("same", mixes=(dim_index(a["dim"], ins[0]) - 1,))

    def from_module(self, mod):
        return {"dim": int(mod.dim if mod.dim is not None else -1)}

    def from_call(self, call):
        dim = call.arg(1, "dim")
        if not isinstance(dim, int):
            raise UnsupportedOperationError(f"{self.name} needs an explicit integer dim")
        if call.kwargs.get("dtype") is not None or any(isinstance(v, torch.dtype) for v in call.args):
            raise UnsupportedOperationError(f"{self.name} with a dtype; only the input's float32 is supported")
        return (call.args[0],), {"dim": dim}

    def to_onnx(self, node, xs, shapes, g):
        g.node(self.onnx_type, xs, node.name, axis=node.attrs["dim"])

    def to_c(self, node, ins, out, w):
        x = ins[0]
        d = dim_index(node.attrs["dim"], x)  # 1-based: dimension d of the batched shape
        w.in_place()
        w.call("ds_softmax", int(self.name == "log_softmax"), w.x(), w.y(), math.prod(x[: d - 1]), x[d - 1],
               math.prod(x[d:]))


@register
class Softmax(_Softmax):
    """Softmax along ``dim``."""

    name, onnx_type = "softmax", "Softmax"
    modules, functions, methods = (nn.Softmax,), (F.softmax, torch.softmax), ("softmax",)

    def forward(self, a, xs, p):
        return F.softmax(xs[0], a["dim"])


@register
class LogSoftmax(_Softmax):
    """Log of the softmax along ``dim``."""

    name, onnx_type = "log_softmax", "LogSoftmax"
    modules, functions, methods = (nn.LogSoftmax,), (F.log_softmax, torch.log_softmax), ("log_softmax",)

    def forward(self, a, xs, p):
        return F.log_softmax(xs[0], a["dim"])
