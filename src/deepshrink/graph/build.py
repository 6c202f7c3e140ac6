"""Run a :class:`~deepshrink.graph.ir.Graph` in PyTorch: rebuild real modules from the allow-list."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import InvalidHeader, LimitExceeded
from deepshrink.graph.ir import INPUT, Graph, Node


def _expect(node: Node, role: str, tensors: Mapping[str, torch.Tensor], ndim: int) -> torch.Tensor:
    pname = node.params[role]
    if pname not in tensors:
        raise InvalidHeader(f"node {node.name!r}: parameter {pname!r} ({role}) is missing")
    t = tensors[pname]
    if t.ndim != ndim:
        raise InvalidHeader(f"node {node.name!r}: {role} {pname!r} must have {ndim} dims, got shape {tuple(t.shape)}")
    return t


def _module(node: Node, tensors: Mapping[str, torch.Tensor], device: str) -> nn.Module | None:
    op, a = node.op, node.attrs
    if op == "linear":
        w = _expect(node, "weight", tensors, 2)
        m = nn.Linear(w.shape[1], w.shape[0], bias="bias" in node.params, device="meta")
    elif op == "conv2d":
        w = _expect(node, "weight", tensors, 4)
        groups = a["groups"]
        if w.shape[0] % groups:
            raise InvalidHeader(f"node {node.name!r}: {w.shape[0]} output channels are not divisible by groups={groups}")
        m = nn.Conv2d(
            w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(a["stride"]),
            padding=tuple(a["padding"]), dilation=tuple(a["dilation"]), groups=groups,
            bias="bias" in node.params, device="meta",
        )
    elif op == "batch_norm":
        rm = _expect(node, "running_mean", tensors, 1)
        m = nn.BatchNorm1d(rm.shape[0], eps=a["eps"], affine="weight" in node.params, device="meta")
    else:
        return None
    params = {}
    for role, pname in node.params.items():
        t = tensors.get(pname)
        if t is None:
            raise InvalidHeader(f"node {node.name!r}: parameter {pname!r} ({role}) is missing")
        expected = tuple(getattr(m, role).shape)
        if tuple(t.shape) != expected:
            raise InvalidHeader(
                f"node {node.name!r}: {role} {pname!r} has shape {tuple(t.shape)}, expected {expected}"
            )
        params[role] = t
    m = m.to_empty(device=device)
    if device == "meta":
        return m
    with torch.no_grad():
        for t in list(m.parameters()) + list(m.buffers()):
            t.zero_()  # nothing uninitialised, even for a role the node does not name
        for role, t in params.items():
            getattr(m, role).copy_(t)
    return m


class GraphNet(nn.Module):
    """An ``nn.Module`` that runs a :class:`Graph` with the given parameter tensors."""

    def __init__(self, graph: Graph, tensors: Mapping[str, torch.Tensor], device: str = "cpu"):
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        self._sources: dict[str, tuple[str, str]] = {}  # parameter name -> (layer key, role)
        for node in graph.nodes:
            m = _module(node, tensors, device)
            if m is not None:
                key = f"n{len(self._keys)}"
                self._keys[node.name] = key
                self.layers[key] = m
                for role, pname in node.params.items():
                    self._sources.setdefault(pname, (key, role))
        # free every intermediate value after its last use
        last: dict[str, int] = {}
        for i, node in enumerate(graph.nodes):
            for inp in node.inputs:
                last[inp] = i
        self._free_after = [[n for n, j in last.items() if j == i and n != graph.output] for i in range(len(graph.nodes))]
        self.max_elements: int | None = None
        self.eval()

    def named_graph_tensors(self) -> dict[str, torch.Tensor]:
        """The network's parameters under their names in the graph (the source model's names)."""
        return {p: getattr(self.layers[key], role) for p, (key, role) in self._sources.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {INPUT: x}
        for i, node in enumerate(self.graph.nodes):
            args = [env[j] for j in node.inputs]
            out = self._apply(node, args)
            if self.max_elements is not None and out.numel() > self.max_elements:
                raise LimitExceeded(
                    f"node {node.name!r} produces {out.numel()} values per input batch, "
                    f"more than the limit of {self.max_elements}"
                )
            env[node.name] = out
            for j in self._free_after[i]:
                env.pop(j, None)
        return env[self.graph.output]

    def _apply(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        op, a, x = node.op, node.attrs, args[0]
        if node.name in self._keys:
            layer = self.layers[self._keys[node.name]]
            if op == "batch_norm":
                return F.batch_norm(
                    x, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps
                )
            return layer(x)
        if op == "relu":
            return F.relu(x)
        if op == "tanh":
            return torch.tanh(x)
        if op == "sigmoid":
            return torch.sigmoid(x)
        if op == "leaky_relu":
            return F.leaky_relu(x, a["negative_slope"])
        if op == "identity":
            return x
        if op == "max_pool2d":
            return F.max_pool2d(x, a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"])
        if op == "avg_pool2d":
            return F.avg_pool2d(
                x, a["kernel"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"],
                count_include_pad=a["count_include_pad"],
            )
        if op == "global_avg_pool2d":
            return F.adaptive_avg_pool2d(x, 1)
        if op == "flatten":
            return torch.flatten(x, a["start_dim"])
        if op == "reshape":
            shape = [x.shape[i] if d == 0 else d for i, d in enumerate(a["shape"])]
            return x.reshape(shape)
        if op == "softmax":
            return F.softmax(x, a["dim"])
        if op == "log_softmax":
            return F.log_softmax(x, a["dim"])
        if op == "add":
            return x + args[1]
        raise InvalidHeader(f"node {node.name!r}: op {op!r} has no PyTorch implementation")


def build(graph: Graph, tensors: Mapping[str, torch.Tensor], device: str = "cpu") -> GraphNet:
    """Build a runnable module; raises :class:`InvalidHeader` if a parameter is missing or misshapen.
    ``device="meta"`` builds it without data, for checking shapes at no memory cost."""
    return GraphNet(graph, tensors, device)
