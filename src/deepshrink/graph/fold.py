"""Batch-norm folding: an inference-mode batch norm right after a convolution or linear layer is
an affine map per output channel, so it can be multiplied into that layer's weight and bias.
The folded graph has one layer where it had two, so compression stages prune, share and
factorise the weights the network really applies, and the network runs one op fewer.

:func:`fold_batchnorm` folds a stored graph and its tensors; :func:`fold_batchnorm_modules` does
the same to a PyTorch model in place, with the same arithmetic (it applies what
:func:`fold_batchnorm` computes). A compression run folds first (:func:`deepshrink.compress`):
retraining runs the model in training mode, where a batch norm would normalise with the
statistics of each small batch of the few thousand samples at hand and update its running
statistics from them, drifting away from the statistics of the data the network was trained on;
and pruning or sharing a convolution whose output is then rescaled per channel would treat
channels of very different real magnitude alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from deepshrink.errors import InvalidHeader, ModelError
from deepshrink.graph.ir import Graph, GraphInput, Node

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


def fold_batchnorm_modules(
    model: nn.Module, inputs: Sequence[GraphInput | torch.Tensor] | None = None
) -> dict[str, str]:
    """Fold, in place, every batch norm of ``model`` that directly follows a convolution or linear
    layer (found by tracing the model, not by module order) into that layer: the layer gets the
    folded weight and a bias (one is added where it had none), and the batch-norm module is
    replaced by ``nn.Identity``. Returns ``{batch-norm module: layer module}`` of what was folded.

    The folded model computes what ``model`` computes in eval mode (running statistics), up to
    float32 rounding; the weights are :func:`fold_batchnorm`'s. ``inputs`` (example batches or
    :class:`GraphInput` descriptions, as for :func:`~deepshrink.graph.trace`) declares the input
    shapes, which folding into linear layers needs; a model of several or integer inputs needs
    them to be traced at all. A batch norm stays where folding would change the network: its
    layer's output is read elsewhere too, or the batch-norm module or the layer runs more than
    once. A :class:`ModelError` refuses a model whose layers carry pruning masks or
    parametrizations (fold before compressing)."""
    from deepshrink.graph.trace import trace  # the tracer needs the op registry, which imports this package

    hooked = [n for n, m in model.named_modules() if parametrize.is_parametrized(m) or hasattr(m, "weight_orig")]
    if hooked:
        raise ModelError(f"fold batch norms before pruning or sharing: {', '.join(hooked[:5])} carry masks or "
                         "parametrizations")
    graph = trace(model, inputs=inputs)
    state = model.state_dict()
    folded, tensors = fold_batchnorm(graph, state)
    kept = {node.name for node in folded.nodes}
    new_params = {node.name: node.params for node in folded.nodes}
    by_name = {node.name: node for node in graph.nodes}
    uses = Counter(p for node in graph.nodes for p in set(node.params.values()))
    modules = dict(model.named_modules())
    done: dict[str, str] = {}
    for bn in graph.nodes:
        if bn.op != "batch_norm" or bn.name in kept:
            continue
        layer = by_name[bn.inputs[0]]
        layer_path = layer.params["weight"].removesuffix(".weight")
        bn_path = bn.params["running_mean"].removesuffix(".running_mean")
        layer_mod, bn_mod = modules.get(layer_path), modules.get(bn_path)
        params = new_params[layer.name]
        if (any(uses[p] != 1 for p in bn.params.values())  # the batch-norm module runs twice
                or not isinstance(bn_mod, nn.modules.batchnorm._BatchNorm) or layer_mod is None
                or params["bias"] != f"{layer_path}.bias"):
            continue
        with torch.no_grad():
            layer_mod.weight.copy_(tensors[params["weight"]])
            bias = tensors[params["bias"]].to(layer_mod.weight.dtype)
            if layer_mod.bias is None:
                layer_mod.bias = nn.Parameter(bias.clone(), requires_grad=layer_mod.weight.requires_grad)
            else:
                layer_mod.bias.copy_(bias)
        parent, _, child = bn_path.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Identity())
        done[bn_path] = layer_path
    return done
