"""Inputs a stored network accepts, made up when no real data is at hand.

Checking that two runs of a network agree (the file against the model it was packed from, ONNX
against PyTorch) needs inputs the network accepts. Real samples are the better probe and callers
pass them when they have them; without them a float32 input gets standard normal values, but an
integer input cannot get arbitrary numbers: token ids index an embedding table, and an id past its
last row is an error, not a probe. :func:`example_inputs` reads from the graph which tables an
input indexes and draws ids below the smallest of them.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from deepshrink.graph.ir import Graph
from deepshrink.graph.ops import OPS

__all__ = ["example_inputs", "index_bounds"]

#: Values drawn for an integer input that indexes no table (an attention mask: 0 or 1).
FLAG_VALUES = 2


def index_bounds(graph: Graph, tensor_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """For each int64 input of ``graph``: one more than the largest value it may hold, i.e. the
    rows of the smallest embedding table that looks it up directly (:data:`FLAG_VALUES` when
    none does: masks and flags hold 0 or 1)."""
    bounds = {i.name: FLAG_VALUES for i in graph.inputs if i.dtype == "int64"}
    looked_up: dict[str, int] = {}
    for node in graph.nodes:
        if OPS[node.op].layer_kind == "embedding" and node.inputs and node.inputs[0] in bounds:
            rows = tensor_shapes[node.params["weight"]][0]
            looked_up[node.inputs[0]] = min(rows, looked_up.get(node.inputs[0], rows))
    return {**bounds, **looked_up}


def example_inputs(
    graph: Graph,
    shapes: Mapping[str, tuple[int, ...]],
    tensor_shapes: Mapping[str, tuple[int, ...]],
    n: int = 2,
    seed: int = 0,
) -> tuple[torch.Tensor, ...]:
    """``n`` random samples of every input of ``graph`` (per-sample ``shapes`` by input name), in
    the graph's input order: float32 standard normal, int64 uniform below :func:`index_bounds`
    (``tensor_shapes`` gives the embedding tables' rows), bool fair coins. Deterministic in
    ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    bounds = index_bounds(graph, tensor_shapes)
    out = []
    for inp in graph.inputs:
        size = (n, *shapes[inp.name])
        if inp.dtype == "float32":
            out.append(torch.randn(size, generator=gen))
        elif inp.dtype == "int64":
            out.append(torch.randint(0, bounds[inp.name], size, generator=gen))
        else:
            out.append(torch.randint(0, 2, size, generator=gen).bool())
    return tuple(out)
