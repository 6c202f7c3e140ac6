"""A small, validated graph representation of a feed-forward network.

A :class:`Graph` is a list of :class:`Node` in topological order. Each node applies one operation
of the op registry (:data:`~deepshrink.graph.ops.OPS`) to graph inputs or the outputs of earlier
nodes, with JSON-safe attributes and named parameters. The graph is what a deepshrink file
stores as the network's structure: reading it never runs code, it only selects operations from
the allow-list, and every field is checked by :meth:`Graph.from_dict`.

**Inputs.** A graph has one or more named, typed inputs (:class:`GraphInput`): a classifier has
one float32 input named ``"input"``; a sentence encoder takes ``input_ids`` and
``attention_mask`` (int64). The dict form stores ``"inputs"`` only when it differs from that one
float input, so older files, which have no ``"inputs"``, read unchanged. Each input may declare
its per-sample shape (the shape :meth:`Graph.plan` checks the file's limits against); a graph
whose single input has no declared shape takes it from the file's input specification.

**Dtypes.** Every value has a dtype (float32, int64 or bool), inferred node by node from the
inputs' declared dtypes by each op's :meth:`~deepshrink.graph.ops.Op.dtype` when the graph is
built: integer token ids reach an embedding, an integer mask reaches a cast or arithmetic, and
any other op given integers is refused there, with the node named.

**Outputs.** ``output`` names one node, or a tuple of nodes for a network returning several
values (a string in the dict form still means one output).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deepshrink.errors import InvalidHeader
from deepshrink.graph.ops import OPS, Shape
from deepshrink.graph.ops.base import DTYPES, fmt

INPUT = "input"
"""The name of a graph's input when it has one float32 input (every graph before several inputs)."""
MAX_NODES = 10_000
MAX_INPUTS = 64
MAX_OUTPUTS = 64
MAX_DIM = 2**31 - 1
_NAME = re.compile(r"[A-Za-z0-9_.:/\-]{1,200}")  # used with fullmatch: no trailing newline
_PARAM_NAME = re.compile(r"[A-Za-z0-9_./\-]{1,200}")  # no ':' (it separates a tensor's sections)


@dataclass(frozen=True)
class GraphInput:
    """One input of a graph: its name, dtype (one of ``float32``, ``int64``, ``bool``) and,
    optionally, its per-sample shape (without the batch dimension)."""

    name: str
    dtype: str = "float32"
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise InvalidHeader(f"graph input name {self.name!r} must match {_NAME.pattern}")
        if self.dtype not in DTYPES:
            raise InvalidHeader(f"graph input {self.name!r}: dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.shape is not None:
            shape = self.shape
            if not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 8 or not all(
                isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= MAX_DIM for d in shape
            ):
                raise InvalidHeader(
                    f"graph input {self.name!r}: shape must be a list of 1 to 8 integers in 1..{MAX_DIM}, got {shape!r}"
                )
            object.__setattr__(self, "shape", tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> GraphInput:
        """Parse an untrusted dict (from a file header)."""
        if not isinstance(data, dict) or not {"name", "dtype"} <= set(data) <= {"name", "dtype", "shape"}:
            raise InvalidHeader("graph input: expected an object with keys name, dtype and optionally shape")
        return cls(data["name"], data["dtype"], data.get("shape"))


SINGLE_INPUT = (GraphInput(INPUT),)
"""The inputs of a graph that does not declare any: one float32 tensor named ``"input"``."""


def check_params(node: Node, shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    """The shapes of ``node``'s parameters by role, checked against each other (by default the
    principal parameter's rank, one value per its first dimension for the others)."""
    op = OPS[node.op]
    out: dict[str, Shape] = {}
    for role, pname in node.params.items():
        if pname not in shapes:
            raise InvalidHeader(f"node {node.name!r}: parameter {pname!r} ({role}) is missing")
        out[role] = tuple(shapes[pname])
    try:
        op.check_param_shapes(node.attrs, out)
    except ValueError as exc:
        raise InvalidHeader(f"node {node.name!r}: {exc}") from None
    return out


@dataclass(frozen=True)
class Plan:
    """What a graph does with one sample: each value's shape (without the batch dimension) and
    dtype, the multiply-accumulates, the operations (multiply-accumulates, or at least one
    per output value for elementwise ops, so a long chain of cheap ops counts too), and the most
    activation values alive at once (with each op's scratch memory)."""

    shapes: Mapping[str, Shape]
    macs: int
    peak_elements: int
    ops: int
    dtypes: Mapping[str, str] = field(default_factory=dict)


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
    """Nodes in topological order over the graph's ``inputs``; ``output`` names the node whose
    value the network returns, or is a tuple of names for several values."""

    nodes: tuple[Node, ...]
    output: str | tuple[str, ...]
    inputs: tuple[GraphInput, ...] = SINGLE_INPUT

    def __post_init__(self) -> None:
        if isinstance(self.output, list):
            object.__setattr__(self, "output", tuple(self.output))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "_dtypes", _validate(self))

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the values the network returns (one or several)."""
        return self.output if isinstance(self.output, tuple) else (self.output,)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def dtypes(self) -> Mapping[str, str]:
        """The dtype of every input and node output, by name (inferred when the graph was built)."""
        return self._dtypes  # type: ignore[attr-defined]

    @property
    def param_names(self) -> list[str]:
        """All parameter names the graph refers to, in node order, without repeats."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            for pname in node.params.values():
                seen.setdefault(pname, None)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nodes": [n.to_dict() for n in self.nodes],
                               "output": self.output if isinstance(self.output, str) else list(self.output)}
        if self.inputs != SINGLE_INPUT:
            out["inputs"] = [i.to_dict() for i in self.inputs]
        return out

    def free_after(self) -> list[list[str]]:
        """For each node, the values no later node needs once it has run (never an output);
        a value nobody uses is freed right after it is computed. Linear in the graph's size."""
        last = {name: 0 for name in self.input_names}
        last.update({node.name: i for i, node in enumerate(self.nodes)})
        for i, node in enumerate(self.nodes):
            for inp in node.inputs:
                last[inp] = i
        keep = set(self.outputs)
        out: list[list[str]] = [[] for _ in self.nodes]
        for name, i in last.items():
            if name not in keep:
                out[i].append(name)
        return out

    def input_shapes(self, given: Sequence[int] | Mapping[str, Sequence[int]] | None = None) -> dict[str, Shape]:
        """Each input's per-sample shape: from ``given`` (one shape for a one-input graph, or
        shapes by input name), else the shape the input declares. Raises :class:`InvalidHeader`
        for an input without either."""
        if given is not None and not isinstance(given, Mapping):
            if len(self.inputs) != 1:
                raise InvalidHeader(f"the graph has {len(self.inputs)} inputs {list(self.input_names)}; give a shape for each by name")
            given = {self.inputs[0].name: given}
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.input_names))
        if unknown:
            raise InvalidHeader(f"shapes given for {unknown}, which are not inputs of the graph {list(self.input_names)}")
        out = {}
        for inp in self.inputs:
            shape = given.get(inp.name, inp.shape)
            if shape is None:
                raise InvalidHeader(f"graph input {inp.name!r} declares no shape and none was given")
            out[inp.name] = GraphInput(inp.name, inp.dtype, tuple(shape)).shape
        return out

    def plan(self, input_shapes: Sequence[int] | Mapping[str, Sequence[int]] | None,
             param_shapes: Mapping[str, Shape]) -> Plan:
        """Infer every node's per-sample output shape in integer arithmetic, validating each
        node's attributes and parameter shapes against its inputs (no tensor is touched).
        ``input_shapes`` is one shape for a one-input graph, shapes by input name, or None for
        the shapes the inputs declare. Raises :class:`InvalidHeader` naming the node."""
        shapes: dict[str, Shape] = self.input_shapes(input_shapes)
        live = peak = sum(map(math.prod, shapes.values()))
        macs = ops = 0
        for i, (node, freed) in enumerate(zip(self.nodes, self.free_after())):
            op, ins = OPS[node.op], [shapes[x] for x in node.inputs]
            ps = check_params(node, param_shapes)
            try:
                out = op.shape(node.attrs, ins, ps)
                if min(out, default=1) < 1:
                    raise ValueError(f"the output {fmt(out)} is empty")
                work = op.macs(node.attrs, ins, ps, out)
                scratch = op.scratch(node.attrs, ins, ps, out)
            except ValueError as exc:
                raise InvalidHeader(f"graph node {i} ({node.name!r}, {node.op}): {exc}") from None
            shapes[node.name] = out
            macs += work
            ops += max(work, math.prod(out))
            live += math.prod(out)
            peak = max(peak, live + scratch)
            live -= sum(math.prod(shapes[x]) for x in freed)
        return Plan(shapes, macs, peak, ops, self.dtypes)

    @classmethod
    def from_dict(cls, data: Any) -> Graph:
        """Parse and validate an untrusted dict (from a file header)."""
        if not isinstance(data, dict) or not {"nodes", "output"} <= set(data) <= {"nodes", "output", "inputs"}:
            raise InvalidHeader("graph: expected an object with the keys 'nodes', 'output' and optionally 'inputs'")
        raw_inputs = data.get("inputs", None)
        if raw_inputs is None:
            inputs = SINGLE_INPUT
        elif not isinstance(raw_inputs, list) or not 1 <= len(raw_inputs) <= MAX_INPUTS:
            raise InvalidHeader(f"graph: 'inputs' must be a list of 1 to {MAX_INPUTS} inputs")
        else:
            inputs = tuple(GraphInput.from_dict(x) for x in raw_inputs)
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
            node_inputs = raw["inputs"]
            if not isinstance(attrs, dict) or not isinstance(params, dict) or not isinstance(node_inputs, list):
                raise InvalidHeader(f"graph node {i}: attrs/params must be objects, inputs a list")
            nodes.append(Node(raw["name"], raw["op"], tuple(node_inputs), attrs, params))
        output = data["output"]
        if isinstance(output, list):
            if not 1 <= len(output) <= MAX_OUTPUTS:
                raise InvalidHeader(f"graph: 'output' must name 1 to {MAX_OUTPUTS} nodes")
            output = tuple(output)
        return cls(tuple(nodes), output, inputs)


def _validate(graph: Graph) -> dict[str, str]:
    """Check every field of ``graph``; returns the dtype of every value by name."""
    if not 1 <= len(graph.nodes) <= MAX_NODES:
        raise InvalidHeader(f"graph must have 1 to {MAX_NODES} nodes, got {len(graph.nodes)}")
    if not 1 <= len(graph.inputs) <= MAX_INPUTS or not all(isinstance(i, GraphInput) for i in graph.inputs):
        raise InvalidHeader(f"graph must have 1 to {MAX_INPUTS} inputs (GraphInput)")
    dtypes = {i.name: i.dtype for i in graph.inputs}
    if len(dtypes) != len(graph.inputs):
        raise InvalidHeader(f"graph input names must be unique, got {list(graph.input_names)}")
    for i, node in enumerate(graph.nodes):
        where = f"graph node {i} ({node.name!r})"
        if not isinstance(node.name, str) or not _NAME.fullmatch(node.name) or node.name in dtypes:
            raise InvalidHeader(f"{where}: name must be unique and match {_NAME.pattern}")
        op = OPS.get(node.op) if isinstance(node.op, str) else None
        if op is None:
            raise InvalidHeader(f"{where}: unknown op {node.op!r}; supported: {sorted(OPS)}")
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
        lo, hi = op.arity(normalised)
        if not lo <= len(node.inputs) <= hi or not all(isinstance(x, str) and x in dtypes for x in node.inputs):
            count = str(lo) if lo == hi else f"{lo} to {hi}"
            raise InvalidHeader(
                f"{where}: op {node.op} takes {count} input(s) naming earlier nodes or graph inputs "
                f"{list(graph.input_names)}, got {list(node.inputs)}"
            )
        try:
            dtypes[node.name] = op.dtype(normalised, [dtypes[x] for x in node.inputs])
        except ValueError as exc:
            names = ", ".join(f"{x!r} ({dtypes[x]})" for x in node.inputs)
            raise InvalidHeader(f"{where}: op {node.op} on {names}: {exc}") from None
        object.__setattr__(node, "attrs", normalised)  # e.g. an integer eps becomes a float
    outputs = graph.outputs
    if not outputs or not all(isinstance(o, str) and o in dtypes and o not in graph.input_names for o in outputs):
        raise InvalidHeader(f"graph output {graph.output!r} must name one of its nodes, or a list of them")
    return dtypes
