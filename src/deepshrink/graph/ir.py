"""A small, validated graph representation of a feed-forward network.

A :class:`Graph` is a list of :class:`Node` in topological order. Each node applies one operation
from a fixed allow-list (:data:`OPS`) to the outputs of earlier nodes (or the graph input,
named ``"input"``), with JSON-safe attributes and named parameters. The graph is what a
deepshrink file stores as the network's structure: reading it never runs code, it only selects
operations from the allow-list, and every field is checked by :meth:`Graph.from_dict`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from deepshrink.errors import InvalidHeader

INPUT = "input"
MAX_NODES = 10_000
MAX_LEAKY_SLOPE = 1e3
_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,200}")  # used with fullmatch: no trailing newline
_PARAM_NAME = re.compile(r"[A-Za-z0-9_./\-]{1,200}")  # no ':' (it separates a tensor's sections)

Shape = tuple[int, ...]


def _int(lo: int, hi: int = 1 << 31) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"expected an integer in [{lo}, {hi}], got {v!r}")
        return v

    return check


def _pair(lo: int) -> Callable[[Any], list[int]]:
    one = _int(lo)

    def check(v: Any) -> list[int]:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError(f"expected a list of 2 integers, got {v!r}")
        return [one(x) for x in v]

    return check


def _real(lo: float, hi: float) -> Callable[[Any], float]:
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


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _shape(v: Any) -> list[int]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 8:
        raise ValueError(f"expected a list of 1 to 8 integers, got {v!r}")
    out = [_int(-1)(x) for x in v]
    if out.count(-1) > 1:
        raise ValueError(f"at most one -1 allowed in a shape, got {v!r}")
    return out


# ----------------------------------------------------------------------------------------------
# shape inference: per-sample shapes (without the batch dimension) in integer arithmetic

def _fmt(x: Shape) -> str:
    return "(" + ", ".join(["N", *map(str, x)]) + ")"


def _dim(d: int, x: Shape) -> int:
    """A dimension index of the batched shape ``(N, *x)``, refusing the batch dimension."""
    full = len(x) + 1
    if not -full <= d < full or d % full == 0:
        raise ValueError(f"dim={d} must name a non-batch dimension of the input {_fmt(x)}")
    return d % full


def _window(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    """Output length of a sliding window (effective extent ``k``) as PyTorch computes it."""
    span = n + 2 * p - k
    if span < 0:
        raise ValueError(f"a kernel of extent {k} does not fit the padded input of length {n + 2 * p}")
    out = (span + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _image(x: Shape) -> Shape:
    if len(x) != 3:
        raise ValueError(f"expects an input of shape (N, C, H, W), got {_fmt(x)}")
    return x


def _same(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    return ins[0], 0


def _linear(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    x, (out_f, in_f) = ins[0], ps["weight"]
    if not x or x[-1] != in_f:
        raise ValueError(f"weight {ps['weight']} takes {in_f} input features; the input is {_fmt(x)}")
    return x[:-1] + (out_f,), math.prod(x[:-1]) * in_f * out_f


def _conv2d(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    x, w, g = _image(ins[0]), ps["weight"], a["groups"]
    if min(w) < 1:
        raise ValueError(f"weight shape {w} has an empty dimension")
    if w[0] % g or x[0] != w[1] * g:
        raise ValueError(
            f"weight {w} with groups={g} needs {w[1] * g} input channels and output channels divisible "
            f"by {g}; the input is {_fmt(x)}"
        )
    hw = tuple(
        _window(x[1 + i], a["dilation"][i] * (w[2 + i] - 1) + 1, a["stride"][i], a["padding"][i], False)
        for i in range(2)
    )
    return (w[0], *hw), w[0] * hw[0] * hw[1] * w[1] * w[2] * w[3]


def _pool(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    x, k, p = _image(ins[0]), a["kernel"], a["padding"]
    if 2 * p[0] > k[0] or 2 * p[1] > k[1]:
        raise ValueError(f"padding {p} must be at most half the kernel {k}")
    hw = tuple(_window(x[1 + i], k[i], a["stride"][i], p[i], a["ceil_mode"]) for i in range(2))
    return (x[0], *hw), x[0] * hw[0] * hw[1] * k[0] * k[1]


def _global_pool(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    x = _image(ins[0])
    return (x[0], 1, 1), math.prod(x)


def _flatten(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    x, start = ins[0], a["start_dim"]
    if not 1 <= start <= len(x):
        raise ValueError(f"start_dim={start} must name a non-batch dimension of the input {_fmt(x)}")
    return x[: start - 1] + (math.prod(x[start - 1 :]),), 0


def _reshape(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    x, target = ins[0], a["shape"]
    if target[0] not in (0, -1):
        raise ValueError(f"shape {target} must keep the batch dimension (0 or -1 first)")
    dims = []
    for i, d in enumerate(target[1:], 1):
        if d == 0 and i > len(x):
            raise ValueError(f"shape {target}: 0 copies dimension {i}, which the input {_fmt(x)} lacks")
        dims.append(x[i - 1] if d == 0 else d)
    n, known = math.prod(x), math.prod(d for d in dims if d != -1)
    if -1 in dims and known and n % known == 0:
        dims[dims.index(-1)] = n // known
    if math.prod(dims) != n or -1 in dims:
        raise ValueError(f"shape {target} does not hold the {n} values per sample of the input {_fmt(x)}")
    return tuple(dims), 0


def _batch_norm(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    x, (c,) = ins[0], ps["running_mean"]
    if not x or x[0] != c:
        raise ValueError(f"statistics for {c} channels; the input is {_fmt(x)}")
    return x, math.prod(x)


def _softmax(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    _dim(a["dim"], ins[0])
    return ins[0], math.prod(ins[0])


def _add(a: Mapping[str, Any], ins: list[Shape], ps: Mapping[str, Shape]) -> tuple[Shape, int]:
    x, y = ins
    if len(x) != len(y) or any(i != j and 1 not in (i, j) for i, j in zip(x, y)):
        raise ValueError(f"inputs {_fmt(x)} and {_fmt(y)} do not broadcast (same rank, equal or 1 per dimension)")
    out = tuple(max(i, j) for i, j in zip(x, y))
    return out, math.prod(out)


Infer = Callable[[Mapping[str, Any], list[Shape], Mapping[str, Shape]], tuple[Shape, int]]


@dataclass(frozen=True)
class OpSpec:
    """What an operation takes and does: number of inputs, parameter roles, attribute checks,
    and ``infer``, which maps per-sample input shapes (and parameter shapes by role) to the
    per-sample output shape and multiply-accumulates, raising ``ValueError`` when the attributes
    or parameters do not fit the inputs. The first of ``params`` is the principal parameter, of
    ``param_ndim`` dimensions; every other parameter holds one value per ``principal.shape[0]``."""

    inputs: int
    params: tuple[str, ...] = ()
    optional_params: tuple[str, ...] = ()
    attrs: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    infer: Infer = _same
    param_ndim: int = 0


_POOL = {"kernel": _pair(1), "stride": _pair(1), "padding": _pair(0), "ceil_mode": _bool}

OPS: dict[str, OpSpec] = {
    "linear": OpSpec(1, ("weight",), ("bias",), infer=_linear, param_ndim=2),
    "conv2d": OpSpec(
        1,
        ("weight",),
        ("bias",),
        {"stride": _pair(1), "padding": _pair(0), "dilation": _pair(1), "groups": _int(1)},
        _conv2d,
        4,
    ),
    "relu": OpSpec(1),
    "tanh": OpSpec(1),
    "sigmoid": OpSpec(1),
    "leaky_relu": OpSpec(1, attrs={"negative_slope": _real(-MAX_LEAKY_SLOPE, MAX_LEAKY_SLOPE)}),
    "identity": OpSpec(1),
    "max_pool2d": OpSpec(1, attrs=_POOL, infer=_pool),
    "avg_pool2d": OpSpec(1, attrs={**_POOL, "count_include_pad": _bool}, infer=_pool),
    "global_avg_pool2d": OpSpec(1, infer=_global_pool),
    "flatten": OpSpec(1, attrs={"start_dim": _int(0, 7)}, infer=_flatten),
    "reshape": OpSpec(1, attrs={"shape": _shape}, infer=_reshape),
    "batch_norm": OpSpec(
        1, ("running_mean", "running_var"), ("weight", "bias"), {"eps": _real(0.0, 1.0)}, _batch_norm, 1
    ),
    "softmax": OpSpec(1, attrs={"dim": _int(-8, 7)}, infer=_softmax),
    "log_softmax": OpSpec(1, attrs={"dim": _int(-8, 7)}, infer=_softmax),
    "add": OpSpec(2, infer=_add),
}


def check_params(node: Node, shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    """The shapes of ``node``'s parameters by role, checked against each other (the principal
    parameter's rank, one value per its first dimension for the others)."""
    spec = OPS[node.op]
    out: dict[str, Shape] = {}
    for role, pname in node.params.items():
        if pname not in shapes:
            raise InvalidHeader(f"node {node.name!r}: parameter {pname!r} ({role}) is missing")
        out[role] = tuple(shapes[pname])
    principal = spec.params[0] if spec.params else None
    for role, shape in out.items():
        want = len(shape) == spec.param_ndim if role == principal else shape == out[principal][:1]
        if not want:
            expected = f"{spec.param_ndim} dims" if role == principal else str(out[principal][:1])
            raise InvalidHeader(
                f"node {node.name!r}: {role} {node.params[role]!r} has shape {shape}, expected {expected}"
            )
    return out


@dataclass(frozen=True)
class Plan:
    """What a graph does with one sample: each node's output shape (without the batch
    dimension), the multiply-accumulates, the operations (multiply-accumulates, or at least one
    per output value for elementwise ops, so a long chain of cheap ops counts too), and the most
    activation values alive at once."""

    shapes: Mapping[str, Shape]
    macs: int
    peak_elements: int
    ops: int


@dataclass(frozen=True)
class Node:
    """One operation: ``op`` applied to ``inputs`` with ``attrs`` and parameters ``params``
    (role → parameter name in the model's state dict)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "op": self.op, "inputs": list(self.inputs)}
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        if self.params:
            out["params"] = dict(self.params)
        return out


@dataclass(frozen=True)
class Graph:
    """Nodes in topological order; ``output`` names the node whose value the network returns."""

    nodes: tuple[Node, ...]
    output: str

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def param_names(self) -> list[str]:
        """All parameter names the graph refers to, in node order, without repeats."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            for pname in node.params.values():
                seen.setdefault(pname, None)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.to_dict() for n in self.nodes], "output": self.output}

    def free_after(self) -> list[list[str]]:
        """For each node, the values no later node needs once it has run (never the output);
        a value nobody uses is freed right after it is computed. Linear in the graph's size."""
        last = {node.name: i for i, node in enumerate(self.nodes)}
        for i, node in enumerate(self.nodes):
            for inp in node.inputs:
                last[inp] = i
        out: list[list[str]] = [[] for _ in self.nodes]
        for name, i in last.items():
            if name != self.output:
                out[i].append(name)
        return out

    def plan(self, input_shape: Shape, param_shapes: Mapping[str, Shape]) -> Plan:
        """Infer every node's per-sample output shape in integer arithmetic, validating each
        node's attributes and parameter shapes against its inputs (no tensor is touched).
        Raises :class:`InvalidHeader` naming the node."""
        shapes: dict[str, Shape] = {INPUT: tuple(input_shape)}
        live = peak = math.prod(input_shape)
        macs = ops = 0
        for i, (node, freed) in enumerate(zip(self.nodes, self.free_after())):
            spec = OPS[node.op]
            ps = check_params(node, param_shapes)
            try:
                out, work = spec.infer(node.attrs, [shapes[x] for x in node.inputs], ps)
                if min(out, default=1) < 1:
                    raise ValueError(f"the output {_fmt(out)} is empty")
            except ValueError as exc:
                raise InvalidHeader(f"graph node {i} ({node.name!r}, {node.op}): {exc}") from None
            shapes[node.name] = out
            macs += work
            ops += max(work, math.prod(out))
            live += math.prod(out)
            peak = max(peak, live)
            live -= sum(math.prod(shapes[x]) for x in freed)
        return Plan(shapes, macs, peak, ops)

    @classmethod
    def from_dict(cls, data: Any) -> Graph:
        """Parse and validate an untrusted dict (from a file header)."""
        if not isinstance(data, dict) or set(data) != {"nodes", "output"}:
            raise InvalidHeader("graph: expected an object with exactly the keys 'nodes' and 'output'")
        raw_nodes = data["nodes"]
        if not isinstance(raw_nodes, list) or not 1 <= len(raw_nodes) <= MAX_NODES:
            raise InvalidHeader(f"graph: 'nodes' must be a list of 1 to {MAX_NODES} nodes")
        nodes = []
        for i, raw in enumerate(raw_nodes):
            if not isinstance(raw, dict) or not {"name", "op", "inputs"} <= set(raw) <= {
                "name", "op", "inputs", "attrs", "params"
            }:
                raise InvalidHeader(
                    f"graph node {i}: expected keys name, op, inputs and optionally attrs, params"
                )
            attrs = raw.get("attrs", {})
            params = raw.get("params", {})
            inputs = raw["inputs"]
            if not isinstance(attrs, dict) or not isinstance(params, dict) or not isinstance(inputs, list):
                raise InvalidHeader(f"graph node {i}: attrs/params must be objects, inputs a list")
            nodes.append(Node(raw["name"], raw["op"], tuple(inputs), attrs, params))
        return cls(tuple(nodes), data["output"])


def _validate(graph: Graph) -> None:
    if not 1 <= len(graph.nodes) <= MAX_NODES:
        raise InvalidHeader(f"graph must have 1 to {MAX_NODES} nodes, got {len(graph.nodes)}")
    known = {INPUT}
    for i, node in enumerate(graph.nodes):
        where = f"graph node {i} ({node.name!r})"
        if not isinstance(node.name, str) or not _NAME.fullmatch(node.name) or node.name in known:
            raise InvalidHeader(f"{where}: name must be unique and match {_NAME.pattern}")
        spec = OPS.get(node.op) if isinstance(node.op, str) else None
        if spec is None:
            raise InvalidHeader(f"{where}: unknown op {node.op!r}; supported: {sorted(OPS)}")
        if len(node.inputs) != spec.inputs or not all(isinstance(x, str) and x in known for x in node.inputs):
            raise InvalidHeader(
                f"{where}: op {node.op} takes {spec.inputs} input(s) naming earlier nodes or "
                f"'{INPUT}', got {list(node.inputs)}"
            )
        roles = set(node.params)
        if not set(spec.params) <= roles <= set(spec.params) | set(spec.optional_params):
            raise InvalidHeader(
                f"{where}: op {node.op} needs parameters {list(spec.params)} "
                f"(optional {list(spec.optional_params)}), got {sorted(roles)}"
            )
        for pname in node.params.values():
            if not isinstance(pname, str) or not _PARAM_NAME.fullmatch(pname):
                raise InvalidHeader(f"{where}: parameter name {pname!r} must match {_PARAM_NAME.pattern}")
        if node.op == "batch_norm" and ("weight" in roles) != ("bias" in roles):
            raise InvalidHeader(f"{where}: batch_norm takes both weight and bias, or neither")
        if set(node.attrs) != set(spec.attrs):
            raise InvalidHeader(
                f"{where}: op {node.op} needs attributes {sorted(spec.attrs)}, got {sorted(node.attrs)}"
            )
        normalised = {}
        for key, check in spec.attrs.items():
            try:
                normalised[key] = check(node.attrs[key])
            except ValueError as exc:
                raise InvalidHeader(f"{where}: attribute {key}: {exc}") from None
        object.__setattr__(node, "attrs", normalised)  # e.g. an integer eps becomes a float
        known.add(node.name)
    if not isinstance(graph.output, str) or graph.output not in known or graph.output == INPUT:
        raise InvalidHeader(f"graph output {graph.output!r} must name one of its nodes")
