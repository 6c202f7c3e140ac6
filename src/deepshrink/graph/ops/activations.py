"""Elementwise activations, identity, and (log-)softmax along one dimension."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import Op, dim_index, int_in, real, register

MAX_LEAKY_SLOPE = 1e3


@register
class Relu(Op):
    """``max(x, 0)``."""

    name, onnx_type = "relu", "Relu"
    modules, functions, methods = (nn.ReLU,), (F.relu, torch.relu), ("relu",)

    def forward(self, a, xs, p):
        return F.relu(xs[0])


@register
class Tanh(Op):
    """Hyperbolic tangent."""

    name, onnx_type = "tanh", "Tanh"
    modules, functions, methods = (nn.Tanh,), (torch.tanh,), ("tanh",)

    def forward(self, a, xs, p):
        return torch.tanh(xs[0])


@register
class Sigmoid(Op):
    """``1 / (1 + exp(-x))``."""

    name, onnx_type = "sigmoid", "Sigmoid"
    modules, functions, methods = (nn.Sigmoid,), (torch.sigmoid,), ("sigmoid",)

    def forward(self, a, xs, p):
        return torch.sigmoid(xs[0])


@register
class LeakyRelu(Op):
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


@register
class Identity(Op):
    """The input unchanged: ``nn.Identity``, and dropout at inference."""

    name, onnx_type = "identity", "Identity"
    modules, functions = (nn.Dropout, nn.Identity), (F.dropout,)

    def forward(self, a, xs, p):
        return xs[0]


class _Softmax(Op):
    """Softmax or log-softmax along ``dim`` (any non-batch dimension)."""

    attrs = {"dim": int_in(-8, 7)}

    def shape(self, a, ins, ps):
        dim_index(a["dim"], ins[0])
        return ins[0]

    def macs(self, a, ins, ps, out):
        return math.prod(out)

    def from_module(self, mod):
        return {"dim": int(mod.dim if mod.dim is not None else -1)}

    def from_call(self, call):
        dim = call.arg(1, "dim")
        if not isinstance(dim, int):
            raise UnsupportedOperationError(f"{self.name} needs an explicit integer dim")
        return (call.args[0],), {"dim": dim}

    def to_onnx(self, node, xs, shapes, g):
        g.node(self.onnx_type, xs, node.name, axis=node.attrs["dim"])


@register
class Softmax(_Softmax):
    """Softmax along ``dim``."""

    name, onnx_type = "softmax", "Softmax"
    modules, functions = (nn.Softmax,), (F.softmax, torch.softmax)

    def forward(self, a, xs, p):
        return F.softmax(xs[0], a["dim"])


@register
class LogSoftmax(_Softmax):
    """Log of the softmax along ``dim``."""

    name, onnx_type = "log_softmax", "LogSoftmax"
    modules, functions = (nn.LogSoftmax,), (F.log_softmax, torch.log_softmax)

    def forward(self, a, xs, p):
        return F.log_softmax(xs[0], a["dim"])
