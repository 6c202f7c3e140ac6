"""Run a :class:`~deepshrink.graph.ir.Graph` in PyTorch with the functional ops of the allow-list."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import InvalidHeader
from deepshrink.graph.ir import INPUT, Graph, Node, check_params


STATISTICS = frozenset({"running_mean", "running_var"})
"""Parameter roles that hold statistics, not learned weights: never trained through autograd."""


class GraphNet(nn.Module):
    """An ``nn.Module`` that runs a :class:`Graph` with the given parameter tensors.

    The parameters are the given tensors themselves (as float32 on the CPU; no copy when they
    already are), registered once however many nodes use them.
    """

    def __init__(self, graph: Graph, tensors: Mapping[str, torch.Tensor]):
        super().__init__()
        self.graph = graph
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        names = graph.param_names
        for node in graph.nodes:
            check_params(node, shapes)
        statistics = {pname for node in graph.nodes for role, pname in node.params.items() if role in STATISTICS}
        self.weights = nn.ParameterList(
            nn.Parameter(tensors[p].detach().to(device="cpu", dtype=torch.float32), requires_grad=p not in statistics)
            for p in names
        )
        self._index = {p: i for i, p in enumerate(names)}
        for node in graph.nodes:
            if node.op == "batch_norm":
                var = self._param(node, "running_var")
                if not bool((var + node.attrs["eps"] > 0).all()):
                    raise InvalidHeader(f"node {node.name!r}: running_var + eps must be positive")
        self._free_after = graph.free_after()
        self.eval()

    def named_graph_tensors(self) -> dict[str, torch.Tensor]:
        """The network's parameters under their names in the graph (the source model's names)."""
        return {p: self.weights[i] for p, i in self._index.items()}

    def _param(self, node: Node, role: str) -> torch.Tensor | None:
        pname = node.params.get(role)
        return None if pname is None else self.weights[self._index[pname]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, torch.Tensor] = {INPUT: x}
        for node, freed in zip(self.graph.nodes, self._free_after):
            env[node.name] = self._apply(node, [env[j] for j in node.inputs])
            for j in freed:
                del env[j]
        return env[self.graph.output]

    def _apply(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        op, a, x = node.op, node.attrs, args[0]
        if op == "linear":
            return F.linear(x, self._param(node, "weight"), self._param(node, "bias"))
        if op == "conv2d":
            return F.conv2d(
                x, self._param(node, "weight"), self._param(node, "bias"), a["stride"], a["padding"],
                a["dilation"], a["groups"],
            )
        if op == "batch_norm":
            return F.batch_norm(
                x, self._param(node, "running_mean"), self._param(node, "running_var"),
                self._param(node, "weight"), self._param(node, "bias"), False, 0.0, a["eps"],
            )
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


def build(graph: Graph, tensors: Mapping[str, torch.Tensor]) -> GraphNet:
    """Build a runnable module; raises :class:`InvalidHeader` if a parameter is missing or its
    shape does not fit the other parameters of its node. The shapes against an input are checked
    by :meth:`Graph.plan`."""
    return GraphNet(graph, tensors)
