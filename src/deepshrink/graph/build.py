"""Run a :class:`~deepshrink.graph.ir.Graph` in PyTorch with each op's registered forward."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from deepshrink.errors import InvalidHeader, ModelError
from deepshrink.graph.ir import Graph, Node, check_params
from deepshrink.graph.ops import OPS


class GraphNet(nn.Module):
    """An ``nn.Module`` that runs a :class:`Graph` with the given parameter tensors.

    ``forward`` takes the graph's inputs in their order (or by name) and returns its output, or
    a tuple for a graph with several outputs.

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
        statistics = {pname for node in graph.nodes for role, pname in node.params.items()
                      if role in OPS[node.op].statistics}
        self.weights = nn.ParameterList(
            nn.Parameter(tensors[p].detach().to(device="cpu", dtype=torch.float32), requires_grad=p not in statistics)
            for p in names
        )
        self._index = {p: i for i, p in enumerate(names)}
        for node in graph.nodes:
            try:
                OPS[node.op].check_tensors(node.attrs, self._params(node))
            except ValueError as exc:
                raise InvalidHeader(f"node {node.name!r}: {exc}") from None
        # per node: its op and its parameters' (role, index), looked up once
        self._steps = [
            (node, OPS[node.op], free, tuple((role, self._index[p]) for role, p in node.params.items()))
            for node, free in zip(graph.nodes, graph.free_after())
        ]
        self.eval()

    def named_graph_tensors(self) -> dict[str, torch.Tensor]:
        """The network's parameters under their names in the graph (the source model's names)."""
        return {p: self.weights[i] for p, i in self._index.items()}

    def _params(self, node: Node) -> dict[str, torch.Tensor]:
        """``node``'s parameters by role."""
        return {role: self.weights[self._index[pname]] for role, pname in node.params.items()}

    def forward(self, *xs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env = self.bind(xs, named)
        weights = self.weights
        for node, op, freed, roles in self._steps:
            env[node.name] = op.forward(node.attrs, [env[j] for j in node.inputs], {r: weights[i] for r, i in roles})
            for j in freed:
                del env[j]
        if isinstance(self.graph.output, str):
            return env[self.graph.output]
        return tuple(env[o] for o in self.graph.output)

    def bind(self, xs: tuple[torch.Tensor, ...], named: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The graph's inputs by name from positional and keyword arguments; a
        :class:`ModelError` for a missing, unknown or repeated input."""
        names = self.graph.input_names
        unknown = sorted(set(named) - set(names))
        if len(xs) > len(names) or unknown:
            raise ModelError(f"the network takes the inputs {list(names)}; got {len(xs)} positional and {sorted(named)}")
        env = dict(zip(names, xs))
        twice = sorted(set(env) & set(named))
        missing = [n for n in names if n not in env and n not in named]
        if twice or missing:
            raise ModelError(f"the network takes the inputs {list(names)}: {'repeated ' + str(twice) if twice else 'missing ' + str(missing)}")
        env.update(named)
        return env

    def run_node(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        """Run one node on its input tensors (``nn.Module._apply``, which ``.to()`` uses, is not
        overridden)."""
        return OPS[node.op].forward(node.attrs, args, self._params(node))


def build(graph: Graph, tensors: Mapping[str, torch.Tensor]) -> GraphNet:
    """Build a runnable module; raises :class:`InvalidHeader` if a parameter is missing or its
    shape does not fit the other parameters of its node. The shapes against an input are checked
    by :meth:`Graph.plan`."""
    return GraphNet(graph, tensors)
