"""The op registry: one :class:`Op` subclass per operation, registered with :func:`register`.

An op class holds everything deepshrink knows about its operation: its name in the graph
format, inputs, parameter roles, attribute schema and validation, output dtype, output shape,
multiply-accumulates and scratch memory in integer arithmetic, how ``torch.fx`` tracing
recognises it (module types, functions, methods) and reads its attributes, its PyTorch forward
and its ONNX nodes. Tracing, validation, shape planning, building and ONNX export all read
:data:`OPS`, so adding an op is writing one class (and one case in ``tests/graph/test_registry.py``).

Tensors have a dtype (:data:`DTYPES`): float32 activations, int64 indices (token ids, attention
masks) and bool masks. :meth:`Op.dtype` checks an op's input dtypes and gives its output dtype;
the graph checks every node this way when it is built (:class:`~deepshrink.graph.ir.Graph`),
so an integer input reaches only ops that accept it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
    return ints(2, lo)


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


def ints(n: int, lo: int, hi: int = 1 << 31) -> Validator:
    """A list of ``n`` integers, each in ``[lo, hi]``."""
    one = int_in(lo, hi)

    def check(v: Any) -> list[int]:
        if not isinstance(v, (list, tuple)) or len(v) != n:
            raise ValueError(f"expected a list of {n} integers, got {v!r}")
        return [one(x) for x in v]

    return check


def axis(lo: int = -9, hi: int = 8) -> Validator:
    """A dimension index in ``[lo, hi]`` other than 0, the batch dimension (a negative index is
    checked against the input's rank by the op's shape rule)."""
    check_int = int_in(lo, hi)

    def check(v: Any) -> int:
        if check_int(v) == 0:
            raise ValueError("dimension 0 is the batch dimension; ops act on the dimensions of each sample")
        return v

    return check


def dim_list(v: Any) -> list[int]:
    """1 to 8 distinct dimension indices (see :func:`axis`)."""
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 8:
        raise ValueError(f"expected a list of 1 to 8 dimensions, got {v!r}")
    out = [axis()(x) for x in v]
    if len(set(out)) != len(out):
        raise ValueError(f"dimensions repeat in {v!r}")
    return out


def one_of(*choices: Any) -> Validator:
    """One of the given JSON values (of the same type: ``true`` is not ``1``)."""

    def check(v: Any) -> Any:
        if not any(type(v) is type(c) and v == c for c in choices):
            raise ValueError(f"expected one of {list(choices)}, got {v!r}")
        return v

    return check


def either(*checks: Validator) -> Validator:
    """The first of ``checks`` that accepts the value; the errors of all otherwise."""

    def check(v: Any) -> Any:
        errors = []
        for c in checks:
            try:
                return c(v)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; or ".join(errors))

    return check


def nullable(inner: Validator) -> Validator:
    """``null`` or a value ``inner`` accepts."""
    return lambda v: None if v is None else inner(v)


MAX_SCALAR = 1e30
"""Largest magnitude of a number an op stores as an attribute (a scale, a fill value)."""


def scalar(v: Any) -> int | float:
    """A finite number of magnitude ≤ :data:`MAX_SCALAR`, kept an integer when it is one (an
    integer scalar keeps an integer tensor integer, as in PyTorch)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {v!r}")
    if isinstance(v, int):
        return int_in(-(1 << 53), 1 << 53)(v)
    return real(-MAX_SCALAR, MAX_SCALAR)(v)


def as_ints(v: Any, n: int) -> list[int]:
    """A PyTorch int-or-tuple argument (``3`` or ``(3, 5)``) as a list of ``n`` ints."""
    return [int(v)] * n if isinstance(v, int) else [int(x) for x in v]


def as_pair(v: Any) -> list[int]:
    """A PyTorch int-or-pair argument (``3`` or ``(3, 5)``) as a list of two ints."""
    return as_ints(v, 2)


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


def dim_indices(ds: Sequence[int], x: Shape) -> list[int]:
    """:func:`dim_index` of each of ``ds``, refusing two names of one dimension."""
    out = [dim_index(d, x) for d in ds]
    if len(set(out)) != len(out):
        raise ValueError(f"dims {list(ds)} name a dimension twice in the input {fmt(x)}")
    return out


def broadcast(*shapes: Shape) -> Shape:
    """The per-sample shape several tensors broadcast to (numpy rules, aligned at the last
    dimension; every tensor has the batch dimension)."""
    rank = max(map(len, shapes))
    out = []
    for i in range(-rank, 0):
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            raise ValueError(f"inputs {', '.join(map(fmt, shapes))} do not broadcast (dimension {i}: sizes {sorted(sizes)})")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


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
    return spatial(x, 2)


def spatial(x: Shape, nd: int) -> Shape:
    """``x`` if it has channels and ``nd`` spatial dimensions per sample."""
    if len(x) != nd + 1:
        names = ("L",) if nd == 1 else ("H", "W")
        raise ValueError(f"expects an input of shape (N, C, {', '.join(names)}), got {fmt(x)}")
    return x


# ----------------------------------------------------------------------------------------------
# dtypes

DTYPES = ("float32", "int64", "bool")
"""The dtypes a graph's tensors may have (graph inputs, node outputs)."""
TORCH_DTYPES: dict[Any, str] = {torch.float32: "float32", torch.int64: "int64", torch.bool: "bool"}
"""The torch dtypes tracing recognises (``x.float()``, ``x.to(torch.long)``) by their name here."""
ONNX_DTYPES = {"float32": 1, "int64": 7, "bool": 9}
"""The numbers of :data:`DTYPES` in ``onnx.TensorProto`` (FLOAT, INT64, BOOL)."""
_RANK = {"bool": 0, "int64": 1, "float32": 2}


def floats(ins: Sequence[str], what: str = "") -> str:
    """``"float32"`` if every input is float32; else a ``ValueError`` naming the first that is not."""
    for i, d in enumerate(ins):
        if d != "float32":
            raise ValueError(f"input {i}{what} is {d}; this op computes on float32 tensors")
    return "float32"


def same(ins: Sequence[str]) -> str:
    """The one dtype of all inputs (ops that only move values keep it)."""
    if len(set(ins)) != 1:
        raise ValueError(f"inputs of different dtypes {list(ins)}")
    return ins[0]


def promote(*dtypes: str) -> str:
    """PyTorch's result dtype of arithmetic on tensors of these dtypes (bool < int64 < float32);
    a Python scalar passes as ``"int64"`` or ``"float32"`` and never widens a tensor's kind
    beyond it, as in PyTorch (``int_tensor * 0.5`` is float32, ``float_tensor * 2`` stays float32)."""
    return max(dtypes, key=_RANK.__getitem__)


def scalar_dtype(v: int | float) -> str:
    """The dtype a Python scalar counts as in :func:`promote`."""
    return "int64" if isinstance(v, int) else "float32"


# ----------------------------------------------------------------------------------------------
# what an op sees while tracing and exporting


@dataclass(frozen=True)
class Call:
    """A function or method call met while tracing: its arguments as ``torch.fx`` recorded them
    (tensors are ``torch.fx.Node``; for a method, ``args[0]`` is the tensor it is called on)."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    name: str = ""
    """The function's or method's name (``"float"`` for ``x.float()``)."""
    size_of: Callable[[Any], tuple[Any, int] | None] = lambda v: None
    """For the value of ``t.size(k)`` or ``t.shape[k]`` (known only when the network runs): the
    tensor ``t`` and ``k``; None for anything else."""
    shape_of: Callable[[Any], Any] = lambda v: None
    """For the value of ``t.size()`` or ``t.shape``: the tensor ``t``; None for anything else."""
    dtype_of: Callable[[Any], str | None] = lambda v: None
    """The dtype (one of :data:`DTYPES`) an argument names: a torch dtype such as
    ``torch.float32``, ``t.dtype``, or a traced tensor's own dtype; None for anything else."""

    def arg(self, i: int, key: str, default: Any = None) -> Any:
        """Argument ``i`` by position, else by keyword ``key``, else ``default``."""
        return self.args[i] if len(self.args) > i else self.kwargs.get(key, default)

    def is_batch_size(self, v: Any) -> bool:
        """True for the value of ``x.size(0)`` (the batch size)."""
        size = self.size_of(v)
        return size is not None and size[1] == 0



class OnnxGraph(Protocol):
    """What an op's :meth:`Op.to_onnx` writes into (see :mod:`deepshrink.export.onnx_export`)."""

    def node(self, op_type: str, inputs: Sequence[str], output: str, **attrs: Any) -> str:
        """Append an ONNX node named ``output`` computing the tensor ``output``; returns it."""

    def cast(self, x: str, dtype: str) -> str:
        """The input tensor ``x`` as ``dtype`` (``x`` itself, or a Cast node's output): ONNX,
        unlike PyTorch, does no type promotion."""

    def dtype(self, x: str) -> str:
        """The dtype of the input tensor ``x``."""

    def init(self, key: str, array: np.ndarray) -> str:
        """Store ``array`` as the initializer ``key`` (once, however often asked); returns the
        name to read it by: ``key``, or for a parameter's own name :meth:`weight`'s tensor."""

    def param(self, pname: str) -> np.ndarray:
        """The float32 values of the network's parameter ``pname``."""

    def weight(self, pname: str, transpose: bool = False) -> str:
        """The tensor holding the network's parameter ``pname`` (with ``transpose``, its axes
        reversed: ``W^T`` of a matrix), written once however often asked: a dense initializer,
        or in a compact export the stored tensor's compact form. ``init(pname, ...)`` of a
        parameter's own name gives the same tensor."""


class CWriter(Protocol):
    """What an op's :meth:`Op.to_c` writes into (see :mod:`deepshrink.engine.codegen`): the C
    statements computing one node on one sample inside the engine's ``model_run``, with the
    kernels of ``deepshrink/engine/kernels.c``. Every C identifier is made by the writer; no name
    from the file reaches the code."""

    def x(self, i: int = 0) -> str:
        """The values of input ``i`` (a ``const float *`` expression)."""

    def y(self) -> str:
        """The node's output buffer (a ``float *`` expression)."""

    def alias(self) -> None:
        """The output is input 0's values unchanged (reshape, flatten, dropout): no code, no memory."""

    def in_place(self, i: int = 0) -> None:
        """The op reads each value of input ``i`` before writing the output at the same index
        (elementwise), so the output may take input ``i``'s buffer when nothing later reads it."""

    def weight(self, role: str) -> str:
        """The node's parameter ``role`` in its compressed layout (a ``const ds_weight *``)."""

    def tensor(self, role: str) -> str:
        """The node's parameter ``role`` as a const float array (biases); its C name."""

    def param(self, role: str) -> np.ndarray:
        """The float32 values of the node's parameter ``role``."""

    def shape(self, role: str) -> Shape:
        """The shape of the node's parameter ``role``."""

    def floats(self, values: np.ndarray) -> str:
        """A const float array holding ``values``; its C name."""

    def ints(self, values: Sequence[int]) -> str:
        """A const int32_t array holding ``values``; its C name."""

    def struct(self, ctype: str, fields: Mapping[str, int]) -> str:
        """A const struct ``ctype`` (``ds_conv``, ``ds_pool``) with these fields; a pointer to it."""

    def call(self, fn: str, *args: Any) -> None:
        """Append the statement ``fn(args);`` (strings as they are, numbers as C literals,
        None as NULL)."""


Params = Mapping[str, torch.Tensor]

CHANNEL_FLOWS = ("new", "same", "merge", "flatten", "mix")


@dataclass(frozen=True)
class Channels:
    """How an op carries the channels of its inputs to its output: what structured pruning
    (:mod:`deepshrink.structured`) reads to find which channels can be removed together and
    which slices of which parameters go with them. Axes are per-sample dimension indices (0 is
    the dimension after the batch: an image's channels, a flat vector's features).

    ``kind`` is one of:

    - ``"new"``: the op makes a new channel space on its output's ``out_axis`` (linear,
      convolution with ``groups=1``, embedding); it reads its input's channels on ``axis``
      (None: the input has none, token ids) through the parameter axes ``consumes``.
    - ``"same"``: the output has input 0's channels on the same axis (elementwise ops, pooling,
      batch norm, depthwise convolution). ``axis`` (when set) is the only axis the channels may be
      on; the op combines values along ``mixes`` (softmax's dim, a pooling window), which must
      not hold the channels; ``drops`` are the axes it removes (a reduction without keepdim).
    - ``"merge"``: every input and the output share one channel space (the sum of two
      branches, a residual connection); an input of size 1 on the channel axis is broadcast.
    - ``"flatten"``: dimensions ``axis`` to the last become one (channel ``c`` of an image
      becomes features ``c·H·W`` to ``(c+1)·H·W - 1``).
    - ``"mix"``: the op combines channels some other way (reshape, transpose, matmul,
      attention, cat): every channel space touching it is kept whole, for ``reason``.

    ``follows`` maps a parameter role to its axis that follows the output's channels (a layer's
    weight rows and bias, batch norm's statistics)."""

    kind: str
    axis: int | None = None
    out_axis: int | None = None
    consumes: Mapping[str, int] = field(default_factory=dict)
    follows: Mapping[str, int] = field(default_factory=dict)
    mixes: tuple[int, ...] = ()
    drops: tuple[int, ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CHANNEL_FLOWS:
            raise ValueError(f"channel flow kind must be one of {CHANNEL_FLOWS}, got {self.kind!r}")


SAME = Channels("same")
"""The channels of an elementwise op: its input's, unchanged."""


class Op:
    """One operation of the graph format. Subclasses set the class attributes and override
    the methods their op needs; :func:`register` adds an instance to :data:`OPS`."""

    name: ClassVar[str]
    """The op's name in a graph (``node.op``); part of the file format."""
    inputs: ClassVar[int] = 1
    """Number of tensor inputs (the fewest, when :attr:`max_inputs` is set)."""
    max_inputs: ClassVar[int | None] = None
    """The most tensor inputs, for ops taking a variable number (``cat``); see :meth:`arity`."""
    params: ClassVar[tuple[str, ...]] = ()
    """Required parameter roles; the first is the principal parameter, of ``param_ndim`` dims;
    every other parameter holds one value per ``principal.shape[0]`` (unless
    :meth:`check_param_shapes` says otherwise)."""
    statistics: ClassVar[tuple[str, ...]] = ()
    """Parameter roles that hold statistics, not learned weights (never trained through autograd)."""
    optional_params: ClassVar[tuple[str, ...]] = ()
    param_ndim: ClassVar[int] = 0
    attrs: ClassVar[Mapping[str, Validator]] = {}
    """Attribute name → validator; a node has exactly these attributes (and any of
    :attr:`optional_attrs`)."""
    optional_attrs: ClassVar[Mapping[str, Validator]] = {}
    """Attributes a node may omit (an op that grew an attribute keeps reading older files)."""
    layer_kind: ClassVar[str | None] = None
    """``"linear"``, ``"conv"`` or ``"embedding"`` when the op's ``weight`` is a layer's
    compressible weight: the one table of layer kinds (stages and the default coding read it)."""
    modules: ClassVar[tuple[type[nn.Module], ...]] = ()
    """Module types traced as this op (subclasses too)."""
    functions: ClassVar[tuple[Callable[..., Any], ...]] = ()
    """Functions traced as this op."""
    methods: ClassVar[tuple[str, ...]] = ()
    """Tensor methods traced as this op."""
    onnx_type: ClassVar[str | None] = None
    """ONNX operator of the default :meth:`to_onnx`: the same inputs, no attributes."""
    batch_free: ClassVar[str | None] = None
    """How the op treats a value PyTorch holds without the batch dimension (``torch.arange(L)``;
    the graph holds it with one, broadcast over the batch): ``"make"`` (the op makes such a
    value), ``"keep"`` (the op acts elementwise or on trailing dimensions, its result is batch-free
    too), ``"broadcast"`` (combined with batched tensors the result is batched), or None (tracing
    refuses it: its dimension indices would mean other dimensions in PyTorch and in the graph)."""
    tuple_output: ClassVar[int | None] = None
    """For a module that returns a tuple (``nn.MultiheadAttention``: output and weights), the
    position of the value the op computes; using any other element is a tracing problem."""
    c_unary: ClassVar[str | None] = None
    """The ``ds_unary`` op (``"DS_RELU"``) of the default :meth:`to_c`: an elementwise op without
    attributes or parameters."""

    # validation, dtypes and shapes ------------------------------------------------------------

    def check_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """``attrs`` checked against :attr:`attrs` and :attr:`optional_attrs` and normalised (an
        integer ``eps`` becomes a float); raises ``ValueError`` naming the attribute."""
        keys, optional = set(attrs), set(self.optional_attrs)
        if not set(self.attrs) <= keys <= set(self.attrs) | optional:
            extra = f" (optional {sorted(optional)})" if optional else ""
            raise ValueError(f"op {self.name} needs attributes {sorted(self.attrs)}{extra}, got {sorted(attrs)}")
        out = {}
        for key in sorted(keys):
            check = self.attrs.get(key) or self.optional_attrs[key]
            try:
                out[key] = check(attrs[key])
            except ValueError as exc:
                raise ValueError(f"attribute {key}: {exc}") from None
        return out

    def arity(self, a: Mapping[str, Any]) -> tuple[int, int]:
        """The fewest and the most tensor inputs a node with attributes ``a`` takes."""
        return self.inputs, self.max_inputs or self.inputs

    def check_roles(self, roles: set[str]) -> None:
        """Constraints between parameter roles beyond required/optional; raise ``ValueError``."""

    def check_param_shapes(self, a: Mapping[str, Any], ps: Mapping[str, Shape]) -> None:
        """Check the parameters' shapes (by role) against each other and the attributes; raise
        ``ValueError``. By default: the principal parameter has :attr:`param_ndim` dims and every
        other parameter one value per the principal's first dimension."""
        principal = self.params[0] if self.params else None
        for role, shape in ps.items():
            if role == principal and len(shape) != self.param_ndim:
                raise ValueError(f"{role} has shape {shape}, expected {self.param_ndim} dims")
            if role != principal and principal is not None and shape != ps[principal][:1]:
                raise ValueError(f"{role} has shape {shape}, expected {ps[principal][:1]}")

    def dtype(self, a: Mapping[str, Any], ins: list[str]) -> str:
        """The output dtype from the input dtypes; raises ``ValueError`` for an input dtype the
        op does not take. By default every input must be float32."""
        return floats(ins)

    def shape(self, a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> Shape:
        """The per-sample output shape from the input shapes and parameter shapes (by role);
        raises ``ValueError`` when the attributes or parameters do not fit the inputs."""
        return ins[0]

    def macs(self, a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape], out: Shape) -> int:
        """Multiply-accumulates per sample (0 for ops that only move or map values)."""
        return 0

    def scratch(self, a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape], out: Shape) -> int:
        """Values per sample the op holds besides its inputs and output while it runs (attention's
        score matrix): counted in the plan's peak, so a file cannot hide a large temporary."""
        return 0

    def check_tensors(self, a: Mapping[str, Any], p: Params) -> None:
        """Checks on parameter values before the op runs; raise ``ValueError``."""

    def channels(self, a: Mapping[str, Any], ins: list[Shape], out: Shape) -> Channels:
        """How the op carries channels from inputs of per-sample shapes ``ins`` to its output
        ``out`` (see :class:`Channels`). By default it mixes them: structured pruning keeps
        whole every channel space an op without a declared mapping touches."""
        return Channels("mix", reason=f"op {self.name} has no channel mapping")

    # tracing ---------------------------------------------------------------------------------

    def from_module(self, mod: nn.Module) -> dict[str, Any]:
        """The attributes of a node for module ``mod`` (one of :attr:`modules`); raises
        :class:`UnsupportedOperationError` for a configuration the op cannot express."""
        return {}

    def from_module_call(self, mod: nn.Module, call: Call) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The tensor arguments and attributes of a call of module ``mod``: by default its first
        argument and :meth:`from_module`."""
        return (call.args[0],), self.from_module(mod)

    def module_params(self, mod: nn.Module) -> dict[str, str]:
        """The module's tensors that fill the op's roles: role → name inside the module. By
        default the module's own parameters and buffers named like the roles."""
        roles = set(self.params) | set(self.optional_params)
        return {
            role: role
            for role, value in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False))
            if value is not None and role in roles
        }

    def from_call(self, call: Call) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The tensor arguments and attributes of a call of one of :attr:`functions` or
        :attr:`methods`; raises :class:`UnsupportedOperationError` for arguments it cannot express."""
        return (call.args[0],), {}

    def gives_batch(self, attrs: Mapping[str, Any]) -> bool:
        """True if, applied to a batch-free value, the op only adds the batch dimension
        (``x.unsqueeze(0)``, ``x[None]``): the graph's value already has it."""
        return False

    def resolve(self, attrs: dict[str, Any]) -> tuple[Op, dict[str, Any]]:
        """The op (and attributes) a traced call becomes: an op may hand a special case to a more
        specific op (adaptive pooling to 1×1 is global pooling)."""
        return self, attrs

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

    def to_c(self, node: Node, ins: list[Shape], out: Shape, w: CWriter) -> None:
        """Write the C statements computing ``node`` on one sample (inputs of per-sample shapes
        ``ins``, output ``out``) with the engine's kernels; raises
        :class:`UnsupportedOperationError` for an op (or a configuration of it) the engine lacks."""
        if self.c_unary is None:
            raise UnsupportedOperationError(f"op {self.name!r} has no C kernel")
        w.in_place()
        w.call("ds_unary", self.c_unary, 0.0, 0.0, w.x(), w.y(), math.prod(out))


class Elementwise(Op):
    """An op applied to each value on its own (an activation): channels pass through it."""

    def channels(self, a, ins, out):
        return SAME


class Mover(Op):
    """An op that moves or selects values without computing on them (reshape, transpose, cat):
    it takes tensors of any one dtype and keeps it."""

    def dtype(self, a, ins):
        return same(ins)


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
