"""Batch-norm folding: an inference-mode batch norm right after a convolution or linear layer is
an affine map per output channel, so it can be multiplied into that layer's weight and bias.
The folded graph has one layer where it had two, so compression stages prune, share and
factorise the weights the network really applies, and the network runs one op fewer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import torch

from deepshrink.errors import InvalidHeader
from deepshrink.graph.ir import Graph, Node

_LAYERS = ("conv1d", "conv2d", "linear")


def _fresh(want: str, taken: set[str]) -> str:
    while want in taken:
        want += "_folded"
    taken.add(want)
    return want


def fold_batchnorm(
    graph: Graph,
    state: Mapping[str, torch.Tensor],
    input_shapes: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
) -> tuple[Graph, dict[str, torch.Tensor]]:
    """Fold every ``batch_norm`` node whose input is a conv1d/conv2d/linear node into it;
    returns the new graph and its tensors (only those the new graph uses).

    A batch norm is folded only when nothing else reads the layer's output, the layer's
    parameters belong to it alone, and the batch norm normalises the layer's output channels:
    always for a convolution (channels are dimension 1), for a linear layer only when its output
    is ``(N, features)``, which needs the per-sample shapes (``input_shapes``, or the shapes the
    graph's inputs declare; without them linear layers are left alone). The folded weights are
    computed in float64 and stored as float32, so the network's outputs change only by float32
    rounding. A layer without a bias gains one (named after its weight, ``<layer>.bias``).
    """
    try:
        shapes = graph.plan(input_shapes, {k: tuple(v.shape) for k, v in state.items()}).shapes
    except InvalidHeader:  # no shapes known: convolutions still fold
        shapes = None
    reads = Counter(x for node in graph.nodes for x in node.inputs) + Counter(graph.outputs)
    owners = Counter(p for node in graph.nodes for p in set(node.params.values()))
    by_name = {node.name: node for node in graph.nodes}
    out = dict(state)
    taken = set(state) | set(graph.param_names)
    merged: dict[str, Node] = {}  # layer name -> the layer with the batch norm in it
    renamed: dict[str, str] = {}  # batch norm name -> layer name
    for bn in graph.nodes:
        layer = by_name.get(bn.inputs[0]) if bn.op == "batch_norm" else None
        if layer is None or layer.op not in _LAYERS or reads[layer.name] != 1:
            continue
        if any(owners[p] != 1 for p in layer.params.values()):
            continue
        if layer.op == "linear" and (shapes is None or len(shapes[layer.name]) != 1):
            continue
        p = bn.params
        var = state[p["running_var"]].double()
        scale = 1 / torch.sqrt(var + bn.attrs["eps"])
        if "weight" in p:
            scale = scale * state[p["weight"]].double()
        shift = -state[p["running_mean"]].double() * scale + (state[p["bias"]].double() if "bias" in p else 0)
        w = state[layer.params["weight"]].double()
        bias_name = layer.params.get("bias")
        bias = state[bias_name].double() if bias_name else torch.zeros(w.shape[0], dtype=torch.float64)
        if bias_name is None:
            stem = layer.params["weight"].removesuffix(".weight")
            bias_name = _fresh(f"{stem}.bias", taken)
        out[layer.params["weight"]] = (w * scale.reshape(-1, *[1] * (w.ndim - 1))).float()
        out[bias_name] = (bias * scale + shift).float()
        merged[layer.name] = Node(layer.name, layer.op, layer.inputs, layer.attrs,
                                  {**layer.params, "bias": bias_name})
        renamed[bn.name] = layer.name
    nodes = []
    for node in graph.nodes:
        if node.name in renamed:
            continue
        node = merged.get(node.name, node)
        nodes.append(Node(node.name, node.op, tuple(renamed.get(x, x) for x in node.inputs), node.attrs, node.params))
    outputs = tuple(renamed.get(o, o) for o in graph.outputs)
    folded = Graph(tuple(nodes), outputs[0] if isinstance(graph.output, str) else outputs, graph.inputs)
    return folded, {k: out[k] for k in folded.param_names}
