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
_NAME = re.compile(r"^[A-Za-z0-9_.:/\-]{1,200}$")
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_./\-]{1,200}$")  # no ':' (it separates a tensor's sections)


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


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a finite number, got {v!r}")
    try:
        out = float(v)
    except OverflowError:
        raise ValueError(f"expected a finite number, got an integer of {len(str(v))} digits") from None
    if not math.isfinite(out):
        raise ValueError(f"expected a finite number, got {v!r}")
    return out


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


@dataclass(frozen=True)
class OpSpec:
    """What an operation takes: number of inputs, parameter roles and attribute checks."""

    inputs: int
    params: tuple[str, ...] = ()
    optional_params: tuple[str, ...] = ()
    attrs: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)


OPS: dict[str, OpSpec] = {
    "linear": OpSpec(1, ("weight",), ("bias",)),
    "conv2d": OpSpec(
        1,
        ("weight",),
        ("bias",),
        {"stride": _pair(1), "padding": _pair(0), "dilation": _pair(1), "groups": _int(1)},
    ),
    "relu": OpSpec(1),
    "tanh": OpSpec(1),
    "sigmoid": OpSpec(1),
    "leaky_relu": OpSpec(1, attrs={"negative_slope": _float}),
    "identity": OpSpec(1),
    "max_pool2d": OpSpec(
        1, attrs={"kernel": _pair(1), "stride": _pair(1), "padding": _pair(0), "ceil_mode": _bool}
    ),
    "avg_pool2d": OpSpec(
        1,
        attrs={
            "kernel": _pair(1),
            "stride": _pair(1),
            "padding": _pair(0),
            "ceil_mode": _bool,
            "count_include_pad": _bool,
        },
    ),
    "global_avg_pool2d": OpSpec(1),
    "flatten": OpSpec(1, attrs={"start_dim": _int(0, 7)}),
    "reshape": OpSpec(1, attrs={"shape": _shape}),
    "batch_norm": OpSpec(1, ("running_mean", "running_var"), ("weight", "bias"), {"eps": _float}),
    "softmax": OpSpec(1, attrs={"dim": _int(-8, 7)}),
    "log_softmax": OpSpec(1, attrs={"dim": _int(-8, 7)}),
    "add": OpSpec(2),
}


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
        if not isinstance(node.name, str) or not _NAME.match(node.name) or node.name in known:
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
            if not isinstance(pname, str) or not _PARAM_NAME.match(pname):
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
