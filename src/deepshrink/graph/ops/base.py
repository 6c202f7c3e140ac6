"""The op registry: one :class:`Op` subclass per operation, registered with :func:`register`.

An op class holds everything deepshrink knows about its operation: its name in the graph
format, inputs, parameter roles, attribute schema and validation, output shape and
multiply-accumulates in integer arithmetic, how ``torch.fx`` tracing recognises it (module
types, functions, methods) and reads its attributes, its PyTorch forward and its ONNX nodes.
Tracing, validation, shape planning, building and ONNX export all read :data:`OPS`, so adding
an op is writing one class (and one case in ``tests/graph/test_registry.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from deepshrink.errors import UnsupportedOperationError

if TYPE_CHECKING:
    import numpy as np

    from deepshrink.graph.ir import Node

Shape = tuple[int, ...]
Validator = Callable[[Any], Any]
"""Checks one JSON attribute value and returns it normalised; raises ``ValueError``."""

# ----------------------------------------------------------------------------------------------
# attribute validators


def int_in(lo: int, hi: int = 1 << 31) -> Validator:
    """An integer in ``[lo, hi]`` (not a bool)."""

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"expected an integer in [{lo}, {hi}], got {v!r}")
        return v

    return check


def pair(lo: int) -> Validator:
    """A list of two integers, each at least ``lo``."""
    one = int_in(lo)

    def check(v: Any) -> list[int]:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError(f"expected a list of 2 integers, got {v!r}")
        return [one(x) for x in v]

    return check


def real(lo: float, hi: float) -> Validator:
    """A finite number in ``[lo, hi]``, returned as a float."""

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expected a number in [{lo:g}, {hi:g}], got {v!r}")
        try:
            out = float(v)
        except OverflowError:
            raise ValueError(f"expected a number in [{lo:g}, {hi:g}], got an integer of {len(str(v))} digits") from None
        if not (math.isfinite(out) and lo <= out <= hi):
            raise ValueError(f"expected a number in [{lo:g}, {hi:g}], got {v!r}")
        return out

    return check


def boolean(v: Any) -> bool:
    """``true`` or ``false``."""
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def shape_list(v: Any) -> list[int]:
    """1 to 8 integers ≥ -1, at most one of them -1."""
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 8:
        raise ValueError(f"expected a list of 1 to 8 integers, got {v!r}")
    out = [int_in(-1)(x) for x in v]
    if out.count(-1) > 1:
        raise ValueError(f"at most one -1 allowed in a shape, got {v!r}")
    return out


def as_pair(v: Any) -> list[int]:
    """A PyTorch int-or-pair argument (``3`` or ``(3, 5)``) as a list of two ints."""
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def onnx_pads(padding: Sequence[int]) -> list[int]:
    """PyTorch's symmetric ``[ph, pw]`` as ONNX ``pads`` (all begins, then all ends)."""
    return [*padding, *padding]


# ----------------------------------------------------------------------------------------------
# shape arithmetic on per-sample shapes (without the batch dimension)


def fmt(x: Shape) -> str:
    """A per-sample shape as the batched shape a user sees: ``(N, 3, 28, 28)``."""
    return "(" + ", ".join(["N", *map(str, x)]) + ")"


def dim_index(d: int, x: Shape) -> int:
    """A dimension index of the batched shape ``(N, *x)``, refusing the batch dimension."""
    full = len(x) + 1
    if not -full <= d < full or d % full == 0:
        raise ValueError(f"dim={d} must name a non-batch dimension of the input {fmt(x)}")
    return d % full


def window(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Output length of a sliding window (effective extent ``k``) as PyTorch computes it."""
    span = n + 2 * p - k
    if span < 0:
        raise ValueError(f"a kernel of extent {k} does not fit the padded input of length {n + 2 * p}")
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def image(x: Shape) -> Shape:
    """``x`` if it is an image ``(C, H, W)`` per sample."""
    if len(x) != 3:
        raise ValueError(f"expects an input of shape (N, C, H, W), got {fmt(x)}")
    return x


# ----------------------------------------------------------------------------------------------
# what an op sees while tracing and exporting


@dataclass(frozen=True)
class Call:
    """A function or method call met while tracing: its arguments as ``torch.fx`` recorded them
    (tensors are ``torch.fx.Node``; for a method, ``args[0]`` is the tensor it is called on)."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    is_batch_size: Callable[[Any], bool]
    """True for the value of ``x.size(0)`` (the batch size, unknown until run)."""

    def arg(self, i: int, key: str, default: Any = None) -> Any:
        """Argument ``i`` by position, else by keyword ``key``, else ``default``."""
        return self.args[i] if len(self.args) > i else self.kwargs.get(key, default)


class OnnxGraph(Protocol):
    """What an op's :meth:`Op.to_onnx` writes into (see :mod:`deepshrink.export.onnx_export`)."""

    def node(self, op_type: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        """Append an ONNX node named ``output`` computing the tensor ``output``; returns it."""

    def init(self, key: str, array: np.ndarray) -> str:
        """Store ``array`` as the initializer ``key`` (once, however often asked); returns ``key``."""

    def param(self, pname: str) -> np.ndarray:
        """The float32 values of the network's parameter ``pname``."""


Params = Mapping[str, torch.Tensor]


class Op:
    """One operation of the graph format. Subclasses set the class attributes and override
    the methods their op needs; :func:`register` adds an instance to :data:`OPS`."""

    name: ClassVar[str]
    """The op's name in a graph (``node.op``); part of the file format."""
    inputs: ClassVar[int] = 1
    """Number of tensor inputs."""
    params: ClassVar[tuple[str, ...]] = ()
    """Required parameter roles; the first is the principal parameter, of ``param_ndim`` dims;
    every other parameter holds one value per ``principal.shape[0]``."""
    statistics: ClassVar[tuple[str, ...]] = ()
    """Parameter roles that hold statistics, not learned weights (never trained through autograd)."""
    optional_params: ClassVar[tuple[str, ...]] = ()
    param_ndim: ClassVar[int] = 0
    attrs: ClassVar[Mapping[str, Validator]] = {}
    """Attribute name → validator; a node has exactly these attributes."""
    layer_kind: ClassVar[str | None] = None
    """``"linear"`` or ``"conv"`` when the op's ``weight`` is a layer's compressible weight."""
    modules: ClassVar[tuple[type[nn.Module], ...]] = ()
    """Module types traced as this op (subclasses too)."""
    functions: ClassVar[tuple[Callable[..., Any], ...]] = ()
    """Functions traced as this op."""
    methods: ClassVar[tuple[str, ...]] = ()
    """Tensor methods traced as this op."""
    onnx_type: ClassVar[str | None] = None
    """ONNX operator of the default :meth:`to_onnx`: the same inputs, no attributes."""

    # validation and shapes ------------------------------------------------------------------

    def check_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """``attrs`` checked against :attr:`attrs` and normalised (an integer ``eps`` becomes a
        float); raises ``ValueError`` naming the attribute."""
        if set(attrs) != set(self.attrs):
            raise ValueError(f"op {self.name} needs attributes {sorted(self.attrs)}, got {sorted(attrs)}")
        out = {}
        for key, check in self.attrs.items():
            try:
                out[key] = check(attrs[key])
            except ValueError as exc:
                raise ValueError(f"attribute {key}: {exc}") from None
        return out

    def check_roles(self, roles: set[str]) -> None:
        """Constraints between parameter roles beyond required/optional; raise ``ValueError``."""

    def shape(self, a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> Shape:
        """The per-sample output shape from the input shapes and parameter shapes (by role);
        raises ``ValueError`` when the attributes or parameters do not fit the inputs."""
        return ins[0]

    def macs(self, a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape], out: Shape) -> int:
        """Multiply-accumulates per sample (0 for ops that only move or map values)."""
        return 0

    def check_tensors(self, a: Mapping[str, Any], p: Params) -> None:
        """Checks on parameter values before the op runs; raise ``ValueError``."""

    # tracing ---------------------------------------------------------------------------------

    def from_module(self, mod: nn.Module) -> dict[str, Any]:
        """The attributes of a node for module ``mod`` (one of :attr:`modules`); raises
        :class:`UnsupportedOperationError` for a configuration the op cannot express."""
        return {}

    def from_call(self, call: Call) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The tensor arguments and attributes of a call of one of :attr:`functions` or
        :attr:`methods`; raises :class:`UnsupportedOperationError` for arguments it cannot express."""
        return (call.args[0],), {}

    # running ---------------------------------------------------------------------------------

    def forward(self, a: Mapping[str, Any], xs: list[torch.Tensor], p: Params) -> torch.Tensor:
        """The op in PyTorch; ``p`` holds the node's parameters by role. Every op defines it."""
        raise NotImplementedError

    def to_onnx(self, node: Node, xs: list[str], shapes: list[Shape], g: OnnxGraph) -> None:
        """Write ONNX nodes computing the tensor ``node.name`` from the tensors ``xs`` (of
        per-sample shapes ``shapes``)."""
        if self.onnx_type is None:
            raise UnsupportedOperationError(f"op {self.name!r} has no ONNX translation")
        g.node(self.onnx_type, xs, node.name)


OPS: dict[str, Op] = {}
"""Every op by name, in registration order."""
_MODULES: dict[type[nn.Module], Op] = {}
_FUNCTIONS: dict[Callable[..., Any], Op] = {}
_METHODS: dict[str, Op] = {}


def register(cls: type[Op]) -> type[Op]:
    """Class decorator: add an instance of ``cls`` to :data:`OPS` and its trace forms to the
    lookups. A name or trace form that another op already claims is a programming error."""
    if not isinstance(getattr(cls, "name", None), str) or cls.forward is Op.forward:
        raise TypeError(f"op class {cls.__name__} needs a name and a forward")
    op = cls()
    claims = [(OPS, op.name)] + [(_MODULES, m) for m in op.modules] + [(_FUNCTIONS, f) for f in op.functions]
    claims += [(_METHODS, m) for m in op.methods]
    for table, key in claims:
        if key in table:
            raise TypeError(f"op {op.name!r}: {key!r} is already registered by op {table[key].name!r}")
    for table, key in claims:
        table[key] = op
    return cls


def op_for_module(mod: nn.Module) -> Op | None:
    """The op a module is traced as (by its type or nearest registered base type), or None."""
    return next((_MODULES[t] for t in type(mod).__mro__ if t in _MODULES), None)


def op_for_function(fn: Any) -> Op | None:
    """The op a function call is traced as, or None."""
    try:
        return _FUNCTIONS.get(fn)
    except TypeError:  # an unhashable callable
        return None


def op_for_method(method: str) -> Op | None:
    """The op a tensor method call is traced as, or None."""
    return _METHODS.get(method)


def supported_forms() -> str:
    """What tracing recognises, for error messages."""
    modules = sorted({m.__name__ for m in _MODULES})
    functions = sorted({getattr(f, "__name__", str(f)) for f in _FUNCTIONS})
    return (f"supported modules: {', '.join(modules)}; functions: {', '.join(functions)}; "
            f"tensor methods: {', '.join(sorted(_METHODS))}")
