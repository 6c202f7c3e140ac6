"""A small, validated graph representation of a feed-forward network.

A :class:`Graph` is a list of :class:`Node` in topological order. Each node applies one operation
of the op registry (:data:`~deepshrink.graph.ops.OPS`) to the outputs of earlier nodes (or the
graph input, named ``"input"``), with JSON-safe attributes and named parameters. The graph is what a
deepshrink file stores as the network's structure: reading it never runs code, it only selects
operations from the allow-list, and every field is checked by :meth:`Graph.from_dict`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deepshrink.errors import InvalidHeader
from deepshrink.graph.ops import OPS, Shape
from deepshrink.graph.ops.base import fmt

INPUT = "input"
MAX_NODES = 10_000
_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,200}")  # used with fullmatch: no trailing newline
_PARAM_NAME = re.compile(r"[A-Za-z0-9_./\-]{1,200}")  # no ':' (it separates a tensor's sections)

def check_params(node: Node, shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    """The shapes of ``node``'s parameters by role, checked against each other (the principal
    parameter's rank, one value per its first dimension for the others)."""
    op = OPS[node.op]
    out: dict[str, Shape] = {}
    for role, pname in node.params.items():
        if pname not in shapes:
            raise InvalidHeader(f"node {node.name!r}: parameter {pname!r} ({role}) is missing")
        out[role] = tuple(shapes[pname])
    principal = op.params[0] if op.params else None
    for role, shape in out.items():
        want = len(shape) == op.param_ndim if role == principal else shape == out[principal][:1]
        if not want:
            expected = f"{op.param_ndim} dims" if role == principal else str(out[principal][:1])
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
            op, ins = OPS[node.op], [shapes[x] for x in node.inputs]
            ps = check_params(node, param_shapes)
            try:
                out = op.shape(node.attrs, ins, ps)
                if min(out, default=1) < 1:
                    raise ValueError(f"the output {fmt(out)} is empty")
                work = op.macs(node.attrs, ins, ps, out)
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
        op = OPS.get(node.op) if isinstance(node.op, str) else None
        if op is None:
            raise InvalidHeader(f"{where}: unknown op {node.op!r}; supported: {sorted(OPS)}")
        if len(node.inputs) != op.inputs or not all(isinstance(x, str) and x in known for x in node.inputs):
            raise InvalidHeader(
                f"{where}: op {node.op} takes {op.inputs} input(s) naming earlier nodes or "
                f"'{INPUT}', got {list(node.inputs)}"
            )
        roles = set(node.params)
        if not set(op.params) <= roles <= set(op.params) | set(op.optional_params):
            raise InvalidHeader(
                f"{where}: op {node.op} needs parameters {list(op.params)} "
                f"(optional {list(op.optional_params)}), got {sorted(roles)}"
            )
        for pname in node.params.values():
            if not isinstance(pname, str) or not _PARAM_NAME.fullmatch(pname):
                raise InvalidHeader(f"{where}: parameter name {pname!r} must match {_PARAM_NAME.pattern}")
        try:
            op.check_roles(roles)
            normalised = op.check_attrs(node.attrs)
        except ValueError as exc:
            raise InvalidHeader(f"{where}: {exc}") from None
        object.__setattr__(node, "attrs", normalised)  # e.g. an integer eps becomes a float
        known.add(node.name)
    if not isinstance(graph.output, str) or graph.output not in known or graph.output == INPUT:
        raise InvalidHeader(f"graph output {graph.output!r} must name one of its nodes")
