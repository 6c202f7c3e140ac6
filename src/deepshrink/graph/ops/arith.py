"""Arithmetic: elementwise add, sub, mul, div of two tensors or of a tensor and a Python number
(``x * 0.5``, ``1.0 - mask``), comparisons, clamp, masked_fill; matrix products; reductions
(mean, sum) and L_p normalisation.

Two tensors broadcast dimension by dimension (sizes equal, or one of them 1) and must have the
same rank: every tensor of a graph carries the batch dimension, so tensors of different ranks
would line the batch of one up with a feature dimension of the other. Result dtypes follow
PyTorch's promotion (bool < int64 < float32; ``int_mask * -1e4`` is float32); ONNX has no
promotion, so the export casts the inputs first.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F

from deepshrink.errors import UnsupportedOperationError
from deepshrink.graph.ops.base import (
    SAME, Channels, Op, axis, boolean, broadcast, dim_indices, dim_list, fmt, one_of, promote, real, register, scalar,
    scalar_dtype,
)

_NUMBER = (int, float)


def _is_number(v) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


def _same_rank(ins) -> tuple[int, ...]:
    """The broadcast shape of tensors of one rank."""
    if len({len(x) for x in ins}) != 1:
        raise ValueError(f"inputs {', '.join(map(fmt, ins))} do not broadcast: they differ in rank; add size-1 dimensions "
                         "(x.unsqueeze(k), x[:, None]) so they line up")
    return broadcast(*ins)


def _const(g, name: str, value, dtype: str) -> str:
    return g.init(name, np.array(value, {"float32": np.float32, "int64": np.int64, "bool": np.bool_}[dtype]))


def _strides(x: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """Element strides of a contiguous tensor of shape ``x`` broadcast to ``out`` (0 where it is)."""
    strides, step = [], 1
    for d, o in zip(reversed(x), reversed(out)):
        strides.append(step if d == o else 0)
        step *= d
    return strides[::-1]


class _Binary(Op):
    """``fn`` of two tensors, or of a tensor and the number ``scalar`` (``scalar_first``: the
    number is the left operand, as in ``1.0 - mask``)."""

    max_inputs, batch_free = 2, "broadcast"
    optional_attrs = {"scalar": scalar, "scalar_first": boolean}
    fn: staticmethod
    commutes: bool = True
    onnx_op: str

    def check_attrs(self, attrs):
        out = super().check_attrs(attrs)
        if "scalar_first" in out and "scalar" not in out:
            raise ValueError("scalar_first needs a scalar")
        return out

    def arity(self, a):
        n = 1 if "scalar" in a else 2
        return n, n

    def dtype(self, a, ins):
        return promote(*ins, *([scalar_dtype(a["scalar"])] if "scalar" in a else []))

    def shape(self, a, ins, ps):
        return _same_rank(ins)

    def macs(self, a, ins, ps, out):
        return math.prod(out)

    def channels(self, a, ins, out):
        return SAME if "scalar" in a else Channels("merge")

    def from_call(self, call):
        if len(call.args) != 2 or call.kwargs:
            raise UnsupportedOperationError(f"{self.name} takes exactly two operands (no alpha, rounding_mode or out)")
        x, y = call.args
        tx, ty = (isinstance(v, torch.fx.Node) for v in (x, y))
        if tx and ty:
            return (x, y), {}
        if tx and _is_number(y):
            return (x,), {"scalar": y}
        if ty and _is_number(x):
            return (y,), {"scalar": x, **({} if self.commutes else {"scalar_first": True})}
        raise UnsupportedOperationError(f"{self.name} of {type(x).__name__} and {type(y).__name__}")

    def forward(self, a, xs, p):
        fn = self.function(a)
        if "scalar" not in a:
            return fn(xs[0], xs[1])
        return fn(a["scalar"], xs[0]) if a.get("scalar_first") else fn(xs[0], a["scalar"])

    def function(self, a):
        """The Python operator the node applies."""
        return self.fn

    def to_onnx(self, node, xs, shapes, g):
        a, out = node.attrs, node.name
        dtype = self.operand_dtype(g, a, xs)
        ins = [g.cast(x, dtype) for x in xs]
        if "scalar" in a:
            c = _const(g, f"{out}/scalar", a["scalar"], dtype)
            ins = [c, ins[0]] if a.get("scalar_first") else [ins[0], c]
        self.emit(g, a, ins, out)

    def operand_dtype(self, g, a, xs) -> str:
        """The dtype both operands are cast to in ONNX (by default the result's)."""
        return self.dtype(a, [g.dtype(x) for x in xs])

    def emit(self, g, a, ins, out) -> None:
        """The ONNX node(s) applying the op to operands of one dtype."""
        g.node(self.onnx_op, ins, out)

    c_op: str | None = None
    """The ``ds_binary`` op (``"DS_ADD"``) of :meth:`to_c`; None: the engine lacks it."""

    def to_c(self, node, ins, out, w):
        if self.c_op is None:
            raise UnsupportedOperationError(f"op {self.name!r} has no C kernel")
        a = node.attrs
        if "scalar" in a:
            w.in_place()
            w.call("ds_binary_scalar", self.c_op, w.x(), float(a["scalar"]), int(a.get("scalar_first", False)), w.y(),
                   math.prod(out))
            return
        if ins[0] == out:
            w.in_place(0)
        elif ins[1] == out:
            w.in_place(1)
        if ins[0] == ins[1] == out:  # no broadcasting: one flat loop
            shape, strides = [math.prod(out)], ([1], [1])
        else:
            shape, strides = list(out), tuple(_strides(x, out) for x in ins)
        w.call("ds_binary", self.c_op, w.x(0), w.ints(strides[0]), w.x(1), w.ints(strides[1]), w.y(), w.ints(shape),
               len(shape))


@register
class Add(_Binary):
    """Elementwise sum."""

    name, onnx_op, fn = "add", "Add", staticmethod(operator.add)
    c_op = "DS_ADD"
    functions, methods = (operator.add, torch.add), ("add",)


@register
class Sub(_Binary):
    """Elementwise difference."""

    name, onnx_op, fn, commutes = "sub", "Sub", staticmethod(operator.sub), False
    c_op = "DS_SUB"
    functions, methods = (operator.sub, torch.sub), ("sub",)


@register
class Mul(_Binary):
    """Elementwise product."""

    name, onnx_op, fn = "mul", "Mul", staticmethod(operator.mul)
    c_op = "DS_MUL"
    functions, methods = (operator.mul, torch.mul), ("mul",)


@register
class Div(_Binary):
    """Elementwise true division (float32 even for integer operands)."""

    name, onnx_op, fn, commutes = "div", "Div", staticmethod(operator.truediv), False
    c_op = "DS_DIV"
    functions, methods = (operator.truediv, torch.div), ("div",)

    def dtype(self, a, ins):
        super().dtype(a, ins)
        return "float32"

    def operand_dtype(self, g, a, xs):
        return "float32"


_COMPARE = {"eq": "Equal", "ne": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual"}


@register
class Compare(_Binary):
    """An elementwise comparison ``fn`` (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``): bool."""

    name = "compare"
    attrs = {"fn": one_of(*_COMPARE)}
    functions = (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
                 torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge)
    methods = ("eq", "ne", "lt", "le", "gt", "ge")
    commutes = False

    def dtype(self, a, ins):
        super().dtype(a, ins)
        return "bool"

    def from_call(self, call):
        tensors, attrs = super().from_call(call)
        return tensors, {**attrs, "fn": call.name}

    def function(self, a):
        return getattr(operator, a["fn"])

    def operand_dtype(self, g, a, xs):
        return promote(*(g.dtype(x) for x in xs), *([scalar_dtype(a["scalar"])] if "scalar" in a else []))

    def emit(self, g, a, ins, out):
        if a["fn"] == "ne":
            g.node("Not", [g.node("Equal", ins, f"{out}/eq")], out)
        else:
            g.node(_COMPARE[a["fn"]], ins, out)


@register
class Clamp(Op):
    """The input limited to ``[min, max]`` (either may be absent)."""

    name = "clamp"
    optional_attrs = {"min": scalar, "max": scalar}
    functions, methods = (torch.clamp, torch.clip), ("clamp", "clip", "clamp_min", "clamp_max")

    def check_attrs(self, attrs):
        out = super().check_attrs(attrs)
        if not out:
            raise ValueError("clamp needs min or max")
        return out

    def dtype(self, a, ins):
        if ins[0] == "bool":
            raise ValueError("clamp of a bool tensor")
        return promote(ins[0], *(scalar_dtype(v) for v in a.values()))

    def macs(self, a, ins, ps, out):
        return math.prod(out)

    def from_call(self, call):
        if call.name in ("clamp_min", "clamp_max"):
            bounds = {call.name[-3:]: call.arg(1, call.name[-3:])}
        else:
            bounds = {"min": call.arg(1, "min"), "max": call.arg(2, "max")}
        bounds = {k: v for k, v in bounds.items() if v is not None}
        if not all(_is_number(v) for v in bounds.values()):
            raise UnsupportedOperationError("clamp bounds must be numbers")
        return (call.args[0],), bounds

    def forward(self, a, xs, p):
        return torch.clamp(xs[0], a.get("min"), a.get("max"))

    def channels(self, a, ins, out):
        return SAME

    def to_onnx(self, node, xs, shapes, g):
        a, out = node.attrs, node.name
        dtype = self.dtype(a, [g.dtype(xs[0])])
        bounds = [_const(g, f"{out}/{k}", a[k], dtype) if k in a else "" for k in ("min", "max")]
        g.node("Clip", [g.cast(xs[0], dtype), *bounds], out)

    def to_c(self, node, ins, out, w):
        a = node.attrs
        lo, hi = (float(a[k]) if k in a else 0.0 for k in ("min", "max"))
        op = "DS_CLAMP" if len(a) == 2 else "DS_CLAMP_MIN" if "min" in a else "DS_CLAMP_MAX"
        w.in_place()
        w.call("ds_unary", op, lo if "min" in a else hi, hi, w.x(), w.y(), math.prod(out))


@register
class MaskedFill(Op):
    """``value`` where the bool mask (broadcast to the input) is true, else the input."""

    name, inputs = "masked_fill", 2
    attrs = {"value": scalar}
    methods = ("masked_fill",)

    def dtype(self, a, ins):
        if ins[1] != "bool":
            raise ValueError(f"the mask must be bool, got {ins[1]}")
        return ins[0]

    def shape(self, a, ins, ps):
        if _same_rank(ins) != ins[0]:
            raise ValueError(f"the mask {fmt(ins[1])} does not broadcast to the input {fmt(ins[0])}")
        return ins[0]

    def from_call(self, call):
        value = call.arg(2, "value")
        if not _is_number(value):
            raise UnsupportedOperationError("masked_fill with a value that is not a number")
        return (call.args[0], call.arg(1, "mask")), {"value": value}

    def forward(self, a, xs, p):
        return xs[0].masked_fill(xs[1], a["value"])

    def channels(self, a, ins, out):
        return Channels("merge")

    def to_onnx(self, node, xs, shapes, g):
        value = _const(g, f"{node.name}/value", node.attrs["value"], g.dtype(xs[0]))
        g.node("Where", [xs[1], value, xs[0]], node.name)


@register
class Matmul(Op):
    """Matrix product over the last two dimensions, the others broadcast (``a @ b``,
    ``torch.matmul``, ``torch.bmm``); both operands of one rank with at least two dimensions
    per sample, so the batch dimension stays a batch."""

    name, inputs, onnx_type = "matmul", 2, "MatMul"
    functions, methods = (torch.matmul, operator.matmul, torch.bmm), ("matmul", "bmm")

    def shape(self, a, ins, ps):
        x, y = ins
        if len(x) < 2 or len(x) != len(y):
            raise ValueError(f"operands {fmt(x)} and {fmt(y)} must have one rank of at least 3 dimensions")
        if x[-1] != y[-2]:
            raise ValueError(f"operands {fmt(x)} and {fmt(y)}: inner sizes {x[-1]} and {y[-2]} differ")
        return broadcast(x[:-2], y[:-2]) + (x[-2], y[-1])

    def macs(self, a, ins, ps, out):
        return math.prod(out) * ins[0][-1]

    def from_call(self, call):
        if len(call.args) != 2 or call.kwargs:
            raise UnsupportedOperationError("matmul takes exactly two tensors")
        return tuple(call.args), {}

    def forward(self, a, xs, p):
        return torch.matmul(xs[0], xs[1])

    def channels(self, a, ins, out):
        return Channels("mix", reason="a matrix product sums over its operands' last dimension")


class _Reduce(Op):
    """A reduction over non-batch dimensions ``dims``, keeping them as size 1 with ``keepdim``."""

    attrs = {"dims": dim_list, "keepdim": boolean}
    onnx_op: str

    def shape(self, a, ins, ps):
        x = ins[0]
        ks = dim_indices(a["dims"], x)
        return tuple(1 if i in ks else n for i, n in enumerate(x, 1) if a["keepdim"] or i not in ks)

    def macs(self, a, ins, ps, out):
        return math.prod(ins[0])

    def from_call(self, call):
        dims = call.arg(1, "dim")
        if dims is None:
            raise UnsupportedOperationError(f"{self.name} without dim would reduce over the batch too")
        if call.kwargs.get("dtype") is not None:
            raise UnsupportedOperationError(f"{self.name} with a dtype")
        return (call.args[0],), {"dims": [dims] if isinstance(dims, int) else list(dims),
                                 "keepdim": bool(call.arg(2, "keepdim", False))}

    def axes(self, node, shapes) -> list[int]:
        return dim_indices(node.attrs["dims"], shapes[0])

    def channels(self, a, ins, out):
        dims = tuple(d - 1 for d in dim_indices(a["dims"], ins[0]))
        return Channels("same", mixes=dims, drops=() if a["keepdim"] else dims,
                        reason=f"{self.name} reduces over the channels")


@register
class Mean(_Reduce):
    """The mean over ``dims``."""

    name = "mean"
    functions, methods = (torch.mean,), ("mean",)

    def forward(self, a, xs, p):
        return xs[0].mean(a["dims"], keepdim=a["keepdim"])

    def to_onnx(self, node, xs, shapes, g):
        g.node("ReduceMean", xs, node.name, axes=self.axes(node, shapes), keepdims=int(node.attrs["keepdim"]))

    def to_c(self, node, ins, out, w):
        x, ks = ins[0], sorted(self.axes(node, ins))
        if ks != list(range(ks[0], len(x) + 1)):  # x.mean((2, 3)): global average pooling
            raise UnsupportedOperationError(f"mean over dims {node.attrs['dims']} of {fmt(x)}; the engine averages "
                                            "the trailing dimensions only")
        w.call("ds_adaptive_pool2d", 0, math.prod(x[: ks[0] - 1]), 1, math.prod(x[ks[0] - 1:]), 1, 1, w.x(), w.y())


@register
class Sum(_Reduce):
    """The sum over ``dims`` (of bool or int64 values: an int64 count)."""

    name = "sum"
    functions, methods = (torch.sum,), ("sum",)

    def dtype(self, a, ins):
        return "float32" if ins[0] == "float32" else "int64"

    def forward(self, a, xs, p):
        return xs[0].sum(a["dims"], keepdim=a["keepdim"])

    def to_onnx(self, node, xs, shapes, g):
        axes = g.init(f"{node.name}/axes", np.array(self.axes(node, shapes), np.int64))
        x = g.cast(xs[0], self.dtype(node.attrs, [g.dtype(xs[0])]))
        g.node("ReduceSum", [x, axes], node.name, keepdims=int(node.attrs["keepdim"]))


@register
class Normalize(Op):
    """``x / max(||x||_p, eps)`` along ``dim`` (``F.normalize``), p = 1 or 2."""

    name = "normalize"
    attrs = {"p": one_of(1.0, 2.0), "dim": axis(), "eps": real(0.0, 1.0)}
    functions = (F.normalize,)

    def shape(self, a, ins, ps):
        dim_indices([a["dim"]], ins[0])
        return ins[0]

    def macs(self, a, ins, ps, out):
        return 2 * math.prod(out)

    def from_call(self, call):
        p = call.arg(1, "p", 2.0)
        if call.arg(4, "out") is not None or not _is_number(p):
            raise UnsupportedOperationError("normalize with out=, or a p that is not a number")
        return (call.args[0],), {"p": float(p), "dim": call.arg(2, "dim", 1), "eps": call.arg(3, "eps", 1e-12)}

    def forward(self, a, xs, p):
        return F.normalize(xs[0], a["p"], a["dim"], a["eps"])

    def channels(self, a, ins, out):
        return Channels("same", mixes=(dim_indices([a["dim"]], ins[0])[0] - 1,),
                        reason="normalize divides by a norm over the channels")

    def to_onnx(self, node, xs, shapes, g):
        a, out = node.attrs, node.name
        axis = dim_indices([a["dim"]], shapes[0])
        norm = g.node("ReduceL2" if a["p"] == 2.0 else "ReduceL1", xs, f"{out}/norm", axes=axis, keepdims=1)
        denom = g.node("Max", [norm, _const(g, f"{out}/eps", a["eps"], "float32")], f"{out}/denom")
        g.node("Div", [xs[0], denom], out)

