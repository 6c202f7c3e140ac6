"""Ops that move values: flatten, reshape; and the elementwise sum of two tensors."""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import nn

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import Op, fmt, int_in, register, shape_list


@register
class Flatten(Op):
    """Dimensions ``start_dim`` to the last merged into one."""

    name = "flatten"
    attrs = {"start_dim": int_in(0, 7)}
    modules, functions, methods = (nn.Flatten,), (torch.flatten,), ("flatten",)

    def shape(self, a, ins, ps):
        x, start = ins[0], a["start_dim"]
        if not 1 <= start <= len(x):
            raise ValueError(f"start_dim={start} must name a non-batch dimension of the input {fmt(x)}")
        return x[: start - 1] + (math.prod(x[start - 1 :]),)

    def from_module(self, mod):
        if mod.end_dim != -1:
            raise UnsupportedOperationError(f"Flatten with end_dim={mod.end_dim}; only -1 is supported")
        return {"start_dim": int(mod.start_dim)}

    def from_call(self, call):
        end = call.arg(2, "end_dim", -1)
        if end != -1:
            raise UnsupportedOperationError(f"flatten with end_dim={end}; only -1 is supported")
        return (call.args[0],), {"start_dim": int(call.arg(1, "start_dim", 0))}

    def forward(self, a, xs, p):
        return torch.flatten(xs[0], a["start_dim"])

    def to_onnx(self, node, xs, shapes, g):
        start = node.attrs["start_dim"]
        shape = [-1] if start == 0 else [0] * start + [-1]
        g.node("Reshape", [xs[0], g.init(f"{node.name}/shape", np.array(shape, np.int64))], node.name)


@register
class Reshape(Op):
    """A new shape holding the same values; 0 copies the input's dimension, -1 is inferred.
    The first entry (0 or -1) keeps the batch dimension."""

    name = "reshape"
    attrs = {"shape": shape_list}
    methods = ("view", "reshape")

    def shape(self, a, ins, ps):
        x, target = ins[0], a["shape"]
        if target[0] not in (0, -1):
            raise ValueError(f"shape {target} must keep the batch dimension (0 or -1 first)")
        dims = []
        for i, d in enumerate(target[1:], 1):
            if d == 0 and i > len(x):
                raise ValueError(f"shape {target}: 0 copies dimension {i}, which the input {fmt(x)} lacks")
            dims.append(x[i - 1] if d == 0 else d)
        n, known = math.prod(x), math.prod(d for d in dims if d != -1)
        if -1 in dims and known and n % known == 0:
            dims[dims.index(-1)] = n // known
        if math.prod(dims) != n or -1 in dims:
            raise ValueError(f"shape {target} does not hold the {n} values per sample of the input {fmt(x)}")
        return tuple(dims)

    def from_call(self, call):
        dims = call.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        shape = []
        for k, d in enumerate(dims):
            if k == 0 and call.is_batch_size(d):
                shape.append(0)  # copy the batch dimension
            elif isinstance(d, int):
                shape.append(d)
            else:
                raise UnsupportedOperationError("reshape dims must be ints or x.size(0)")
        return (call.args[0],), {"shape": shape}

    def forward(self, a, xs, p):
        x = xs[0]
        return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(a["shape"])])

    def to_onnx(self, node, xs, shapes, g):
        shape = np.array(node.attrs["shape"], np.int64)
        g.node("Reshape", [xs[0], g.init(f"{node.name}/shape", shape)], node.name)


@register
class Add(Op):
    """The elementwise sum of two tensors of the same rank (broadcasting dimensions of size 1)."""

    name, onnx_type, inputs = "add", "Add", 2
    functions = (operator.add, torch.add)

    def shape(self, a, ins, ps):
        x, y = ins
        if len(x) != len(y) or any(i != j and 1 not in (i, j) for i, j in zip(x, y)):
            raise ValueError(f"inputs {fmt(x)} and {fmt(y)} do not broadcast (same rank, equal or 1 per dimension)")
        return tuple(max(i, j) for i, j in zip(x, y))

    def macs(self, a, ins, ps, out):
        return math.prod(out)

    def from_call(self, call):
        if len(call.args) != 2 or call.kwargs:
            raise UnsupportedOperationError("add takes exactly two tensors (no alpha, no out)")
        return tuple(call.args), {}

    def forward(self, a, xs, p):
        return xs[0] + xs[1]
