"""Channel dependency analysis: which channels of a traced network can be removed together.

Removing output channel ``c`` of a layer (a neuron of a linear layer, a filter of a convolution)
removes row ``c`` of its weight and bias, and column ``c`` (or the ``H·W`` columns of channel
``c`` after a flatten) of every layer that reads it; a batch norm or depthwise convolution in
between loses its channel ``c`` too; and when two branches are summed (the residual connections
of MobileNetV2) every layer producing either branch must lose the same channel. Each op of the
graph registry declares how it carries channels (:meth:`deepshrink.graph.ops.Op.channels`);
this module walks the graph once, making a channel *space* for every layer output and joining
the spaces an op merges (union-find). A joined space is a :class:`ChannelGroup`: the channels
that stand or fall together, with every parameter slice that goes with them.

A group is kept whole (``prunable`` False, with the ``reason``) when an op mixes its channels
some other way (reshape, transpose, matmul, attention, softmax or layer norm over the channels),
when it reaches the network's output (the classifier's classes stay), when an input of
per-channel values that no layer produces is combined with it, or when a parameter is shared.
Graph inputs carry no space, so they are never pruned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from deepshrink.errors import ModelError
from deepshrink.graph import Graph, trace
from deepshrink.graph.ops import OPS, Channels

__all__ = ["ChannelGroup", "Slice", "channel_groups", "layer_of"]


@dataclass(frozen=True)
class Slice:
    """The slice of parameter ``param`` (a state-dict name) that follows a group's channels: along
    ``axis``, channel ``c`` is the entries ``c·factor`` to ``(c+1)·factor - 1``."""

    param: str
    axis: int
    factor: int = 1


@dataclass
class ChannelGroup:
    """Channels that must be removed together. ``name`` is its first producing layer (in the
    model's definition order), ``producers`` the weights making the channels (their rows: what
    L1/L2 importance reads) and ``slices`` every parameter slice that follows the channels."""

    name: str
    size: int
    producers: list[Slice] = field(default_factory=list)
    slices: list[Slice] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    """Every producing layer, in definition order (``name`` is the first)."""
    reason: str | None = None
    """Why the channels must stay (None: the group is prunable)."""

    @property
    def prunable(self) -> bool:
        return self.reason is None


def layer_of(param: str) -> str:
    """The layer (module path) a parameter belongs to: ``features.0.weight`` → ``features.0``."""
    return param.rpartition(".")[0]


@dataclass
class _Space:
    size: int
    producers: list[Slice] = field(default_factory=list)
    slices: list[Slice] = field(default_factory=list)
    reason: str | None = None


class _Spaces:
    """Channel spaces under union-find."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.spaces: list[_Space] = []

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.spaces.append(_Space(size))
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            keep, gone = min(a, b), max(a, b)
            self.parent[gone] = keep
            mine, other = self.spaces[keep], self.spaces[gone]
            mine.producers += other.producers
            mine.slices += other.slices
            mine.reason = mine.reason or other.reason
        return a if a < b else b

    def block(self, s: int, reason: str) -> None:
        space = self.spaces[self.find(s)]
        space.reason = space.reason or reason

    def add(self, s: int, sl: Slice, producer: bool = False) -> None:
        space = self.spaces[self.find(s)]
        (space.producers if producer else space.slices).append(sl)


Value = tuple[int, int, int]
"""A value's channels: (space, per-sample axis, entries per channel on that axis)."""


def channel_groups(model: nn.Module, inputs: Sequence[torch.Tensor] | torch.Tensor,
                   graph: Graph | None = None) -> list[ChannelGroup]:
    """The channel groups of ``model`` traced on the example batch ``inputs`` (one tensor, or one
    per ``forward`` argument), in the definition order of their first producing layers."""
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    graph = graph or trace(model, inputs=tuple(inputs))
    state = dict(model.named_parameters()) | dict(model.named_buffers())
    shapes = graph.plan(None, {p: tuple(state[p].shape) for p in graph.param_names}).shapes
    uses: dict[str, int] = {}
    for node in graph.nodes:
        for p in set(node.params.values()):
            uses[p] = uses.get(p, 0) + 1
    spaces = _Spaces()
    values: dict[str, Value | None] = {}
    for node in graph.nodes:
        ins = [values.get(x) for x in node.inputs]
        in_shapes = [shapes[x] for x in node.inputs]
        out = shapes[node.name]
        flow: Channels = OPS[node.op].channels(node.attrs, in_shapes, out)
        where = f"node {node.name!r} ({node.op})"
        values[node.name] = _flow(spaces, flow, node.params, ins, in_shapes, out, where)
    for o in graph.outputs:
        v = values.get(o)
        if v is not None:
            spaces.block(v[0], f"its channels are the network's output {o!r}")
    for p, n in uses.items():
        if n > 1:
            for space in spaces.spaces:
                if any(s.param == p for s in space.slices + space.producers):
                    space.reason = space.reason or f"parameter {p!r} is shared by {n} nodes"
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups = []
    for s in range(len(spaces.parent)):
        if spaces.find(s) != s:
            continue
        space = spaces.spaces[s]
        layers = sorted({layer_of(p.param) for p in space.producers}, key=lambda n: order.get(n, len(order)))
        groups.append(ChannelGroup(layers[0], space.size, space.producers, space.slices, layers, space.reason))
    return sorted(groups, key=lambda g: order.get(g.name, len(order)))


def _flow(spaces: _Spaces, flow: Channels, params, ins: list[Value | None], in_shapes, out, where: str
          ) -> Value | None:
    """The channels of a node's output from its inputs' (see :class:`Channels`), recording the
    parameter slices that follow them and blocking the spaces it cannot carry."""
    tracked = [v for v in ins if v is not None]

    def block_all(reason: str) -> None:
        for v in tracked:
            spaces.block(v[0], f"{where}: {reason}")

    if flow.kind == "mix":
        block_all(flow.reason or "mixes channels")
        return None
    if flow.kind == "new":
        x = ins[0] if ins else None
        for v in tracked[1:] if x is not None else tracked:
            spaces.block(v[0], f"{where}: the channels reach an input the op does not read them on")
        if x is not None:
            if flow.axis is None or x[1] != flow.axis:
                spaces.block(x[0], f"{where}: reads its input's dimension {flow.axis} and the channels are on "
                                   f"dimension {x[1]}")
            else:
                for role, axis in flow.consumes.items():
                    if role in params:
                        spaces.add(x[0], Slice(params[role], axis, x[2]))
        s = spaces.new(out[flow.out_axis])
        for role, axis in flow.follows.items():
            if role in params:
                spaces.add(s, Slice(params[role], axis), producer=role == "weight")
        return s, flow.out_axis, 1
    if not tracked:
        return None
    if flow.kind == "same":
        x = ins[0]
        if x is None or len(tracked) > 1:
            block_all("combines the channels with another input")
            return None
        space, axis, factor = x
        if flow.axis is not None and axis != flow.axis:
            block_all(f"acts on dimension {flow.axis}, and the channels are on dimension {axis}")
            return None
        if axis in flow.mixes:
            block_all(flow.reason or "combines values across the channels")
            return None
        new_axis = axis - sum(d < axis for d in flow.drops)
        if axis >= len(in_shapes[0]) or new_axis >= len(out) or out[new_axis] != in_shapes[0][axis]:
            block_all("changes the size of the channel dimension")
            return None
        for role, ax in flow.follows.items():
            if role in params:
                spaces.add(space, Slice(params[role], ax, factor))
        return space, new_axis, factor
    if flow.kind == "merge":
        axis, factor = tracked[0][1], tracked[0][2]
        ok = all(v[1] == axis and v[2] == factor for v in tracked)
        ok = ok and all(len(s) == len(out) for s in in_shapes) and axis < len(out)
        ok = ok and all((s[axis] == out[axis]) if v is not None else s[axis] == 1 for v, s in zip(ins, in_shapes))
        if not ok:
            block_all("combines the channels with values whose channels cannot go with them (a network "
                      "input, the output of an op that mixes channels, or channels on another dimension)")
            return None
        root = tracked[0][0]
        for v in tracked[1:]:
            root = spaces.union(root, v[0])
        return root, axis, factor
    if flow.kind == "flatten":
        space, axis, factor = ins[0]  # type: ignore[misc]
        if axis < flow.axis:
            return space, axis, factor
        if axis == flow.axis:
            return space, axis, factor * math.prod(in_shapes[0][axis + 1:])
        block_all("flattens the channels into a dimension before them")
        return None
    raise ModelError(f"{where}: unknown channel flow {flow.kind!r}")  # pragma: no cover
