"""The compressed runtime's network: a graph run from typed compressed tensors.

:class:`CompressedNet` is what ``deepshrink.load(path, mode="compressed")`` puts in
:attr:`CompressedModel.net <deepshrink.runtime.CompressedModel>` instead of a
:class:`~deepshrink.graph.GraphNet`. Each layer node (``linear``, ``conv2d``, ``conv1d``) runs
through the kernel chosen for it at load (:mod:`deepshrink.runtime.select`); every other node
(activations, pooling, embeddings, norms, attention, tensor code) runs its op's registered
forward with its parameters decoded dense, as :class:`GraphNet` does. Factorised layers are
chains of ordinary layers in the file, so each factor gets its own kernel.

The steps are compiled once into a list of plain callables over numbered slots (a one-input,
one-output chain, such as an MLP or a LeNet, runs as ``x = f(x)`` for each step), so a call
costs little beyond the kernels themselves. It is for inference: no gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from deepshrink.errors import InvalidHeader
from deepshrink.graph import Graph, GraphNet
from deepshrink.graph.ir import Plan, check_params
from deepshrink.graph.ops import OPS
from deepshrink.graph.ops.base import Op
from deepshrink.runtime.kernels import LAYER_OPS, Layer
from deepshrink.runtime.select import SMALL_BATCH, Choice, KernelRequest, Selector, resolve_request
from deepshrink.storage.tensors import CompressedTensor


def _dispatch(small: Callable, large: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """One callable running ``small`` for batches under :data:`SMALL_BATCH`, else ``large``."""
    if small is large:
        return small
    return lambda x: small(x) if x.shape[0] < SMALL_BATCH else large(x)


def _node_fn(op: Op, attrs: Mapping[str, Any], params: dict[str, torch.Tensor]) -> Callable[[list], torch.Tensor]:
    forward = op.forward
    return lambda xs: forward(attrs, xs, params)


class CompressedNet(nn.Module):
    """Runs ``graph`` with layer weights kept compressed (``typed``: parameter name → typed
    tensor; see :mod:`deepshrink.storage.tensors`) and each layer's kernel chosen by measuring.

    ``plan`` gives every value's per-sample shape (the layers' synthetic inputs); ``large_batch``
    is the large batch measured; ``kernels`` forces kernels and ``prefer`` says what to optimise
    (``"speed"`` or ``"memory"``; see :func:`deepshrink.load`).
    :attr:`kernels` reports the choice per layer and :attr:`select_seconds` the time it took.
    """

    def __init__(self, graph: Graph, typed: Mapping[str, CompressedTensor], plan: Plan, *,
                 large_batch: int = 64, kernels: KernelRequest = None, prefer: str = "speed"):
        super().__init__()
        self.graph = graph
        shapes = {k: tuple(v.shape) for k, v in typed.items()}
        for node in graph.nodes:
            check_params(node, shapes)
        layer_nodes = [n for n in graph.nodes if n.op in LAYER_OPS]
        layer_weights = {n.params["weight"] for n in layer_nodes}
        # every other parameter (biases included) dense, decoded once however many nodes use it
        dense = {p: torch.from_numpy(np.ascontiguousarray(typed[p].to_dense(), dtype=np.float32))
                 for p in graph.param_names if p not in layer_weights}
        for node in graph.nodes:
            op = OPS[node.op]
            if type(op).check_tensors is not Op.check_tensors:
                try:
                    op.check_tensors(node.attrs, {r: dense[p] for r, p in node.params.items()})
                except ValueError as exc:
                    raise InvalidHeader(f"node {node.name!r}: {exc}") from None
        self._dense = dense
        layers = []
        for node in layer_nodes:
            bias = node.params.get("bias")
            layers.append(Layer(node.name, node.op, dict(node.attrs), typed[node.params["weight"]],
                                dense[bias] if bias else None, plan.shapes[node.inputs[0]], plan.shapes[node.name],
                                param=node.params["weight"]))
        forced = resolve_request(kernels, layers)
        selector = Selector(large_batch, prefer=prefer)
        self.choices: dict[str, Choice] = {}
        shared: dict[tuple, Choice] = {}  # nodes running one weight on one input shape share their kernels
        for node, layer in zip(layer_nodes, layers):
            key = (node.op, tuple(sorted(node.params.items())), repr(sorted(node.attrs.items())), layer.in_shape,
                   forced.get(layer.name))
            if key not in shared:
                shared[key] = selector.choose(layer, forced.get(layer.name))
                layer.release()
            self.choices[layer.name] = shared[key]
        self.select_seconds = selector.seconds
        self.large_batch = selector.large_batch
        self._compile()
        self.eval()

    def _compile(self) -> None:
        graph = self.graph
        slot = {name: i for i, name in enumerate(graph.input_names)}
        for node in graph.nodes:
            slot[node.name] = len(slot)
        self._slots = len(slot)
        steps, chain = [], []
        is_chain = len(graph.input_names) == 1 and isinstance(graph.output, str)
        prev = graph.input_names[0]
        for node, free in zip(graph.nodes, graph.free_after()):
            choice = self.choices.get(node.name)
            if choice is not None:
                layer_fn = _dispatch(choice.small.fn, choice.large.fn)
                one = layer_fn
                fn = (lambda f: (lambda xs: f(xs[0])))(layer_fn)
            else:
                params = {role: self._dense[p] for role, p in node.params.items()}
                fn = _node_fn(OPS[node.op], node.attrs, params)
                one = (lambda f: (lambda x: f([x])))(fn)
            is_chain = is_chain and node.inputs == (prev,) and set(free) <= {prev}
            prev = node.name
            chain.append(one)
            steps.append((fn, tuple(slot[i] for i in node.inputs), slot[node.name], tuple(slot[j] for j in free)))
        is_chain = is_chain and prev == graph.output
        self._chain = chain if is_chain else None
        self._steps = steps
        self._out = slot[graph.output] if isinstance(graph.output, str) else tuple(slot[o] for o in graph.output)
        self._n_inputs = len(graph.input_names)

    @property
    def kernels(self) -> list[dict[str, Any]]:
        """Per layer, in graph order: the kernel for batches under :data:`SMALL_BATCH`
        (``kernel_batch1``) and for larger ones (``kernel_batchN``), every candidate's median
        microseconds per call by batch (``timings_us``), the bytes kept for the weight
        (``weight_bytes_resident``, against ``weight_bytes_dense``), whether the kernel was
        forced or measured, and the candidates not tried with the reason (``rejected``). Nodes
        that run one weight on inputs of one shape share their kernels (``shared_with`` names
        the node whose choice they use)."""
        return [c.report(name, self.large_batch) for name, c in self.choices.items()]

    @property
    def weight_bytes_resident(self) -> int:
        """Bytes kept for the layers' weights by their kernels (once for layers that share them)."""
        return sum(c.resident_bytes for c in {id(c): c for c in self.choices.values()}.values())

    bind = GraphNet.bind

    def forward(self, *xs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if named or len(xs) != self._n_inputs:
            env = self.bind(xs, named)
            xs = tuple(env[n] for n in self.graph.input_names)
        if self._chain is not None:
            x = xs[0]
            for f in self._chain:
                x = f(x)
            return x
        vals: list[Any] = [*xs, *([None] * (self._slots - len(xs)))]
        for fn, ins, out, free in self._steps:
            vals[out] = fn([vals[i] for i in ins])
            for j in free:
                vals[j] = None
        out = self._out
        return vals[out] if isinstance(out, int) else tuple(vals[o] for o in out)

    def named_graph_tensors(self) -> dict[str, torch.Tensor]:
        """The network's parameters under their names in the graph, dense (layer weights are
        rebuilt from what their kernels keep)."""
        out = dict(self._dense)
        for node in self.graph.nodes:
            choice = self.choices.get(node.name)
            if choice is not None and node.params["weight"] not in out:
                out[node.params["weight"]] = choice.small.weight()
        return {p: out[p] for p in self.graph.param_names}

    def run_node(self, node, args: list[torch.Tensor]) -> torch.Tensor:
        """Run one node on its input tensors (its kernel for a layer)."""
        choice = self.choices.get(node.name)
        if choice is not None:
            return _dispatch(choice.small.fn, choice.large.fn)(args[0])
        return OPS[node.op].forward(node.attrs, args, {r: self._dense[p] for r, p in node.params.items()})
