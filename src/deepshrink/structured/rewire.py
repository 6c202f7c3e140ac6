"""Removing channels for real: slice every parameter that follows them, fix the modules' sizes.

:func:`shrink` keeps given channels of given groups (:mod:`deepshrink.structured.groups`);
:func:`narrow` chooses them by importance (the L1 or L2 norm of the weight rows that make each
channel, as in Li et al., *Pruning Filters for Efficient ConvNets*, ICLR 2017, or the first-order
Taylor estimate ``|activation · gradient|`` of Molchanov et al., *Pruning Convolutional Neural
Networks for Resource Efficient Inference*, ICLR 2017) and keeps the most important fraction.
The result is an ordinary, smaller dense network: its linear layers have fewer features, its
convolutions fewer channels, so it is smaller and faster with any dense kernel and its traced
graph shows the smaller layers. No mask is left behind.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
from torch import nn

from deepshrink.errors import ConfigError, ModelError
from deepshrink.structured.groups import ChannelGroup, channel_groups, layer_of
from deepshrink.train.loop import as_enum

__all__ = ["ChannelImportance", "channel_importance", "kept_count", "narrow", "select", "shrink"]

Inputs = Sequence[torch.Tensor] | torch.Tensor
Batches = Sequence[tuple[Sequence[torch.Tensor], Any]]


class ChannelImportance(StrEnum):
    """How a channel's importance is scored."""

    L1 = "l1"
    """Sum of the absolute values of the weight rows making it (summed over a group's producers)."""
    L2 = "l2"
    """Euclidean norm of those rows."""
    TAYLOR = "taylor"
    """``|Σ activation · gradient|`` per sample over its positions, summed over calibration batches."""


def kept_count(size: int, fraction: float, multiple: int = 1) -> int:
    """Channels kept of ``size`` when ``fraction`` of them is removed: the removed count rounded,
    the kept count rounded to a multiple of ``multiple`` (at least one multiple, at most ``size``),
    never zero."""
    kept = size - round(fraction * size)
    if multiple > 1:
        kept = max(multiple, multiple * round(kept / multiple))
    return max(1, min(size, kept))


def _rows(t: torch.Tensor, axis: int, p: float) -> torch.Tensor:
    flat = t.detach().movedim(axis, 0).reshape(t.shape[axis], -1).double()
    return flat.norm(p=p, dim=1)


def channel_importance(model: nn.Module, groups: Sequence[ChannelGroup], importance: ChannelImportance | str = "l1",
                       batches: Batches | None = None,
                       loss: Callable[[torch.Tensor, Any], torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Importance of every channel of each group (by group name). ``taylor`` needs calibration
    ``batches`` of ``(inputs, target)``; ``loss(output, target)`` defaults to the summed cross-entropy."""
    importance = as_enum(ChannelImportance, importance, "importance")
    state = dict(model.named_parameters()) | dict(model.named_buffers())
    if importance is not ChannelImportance.TAYLOR:
        p = 1.0 if importance is ChannelImportance.L1 else 2.0
        return {g.name: sum(_rows(state[s.param], s.axis, p) for s in g.producers).numpy() for g in groups}
    if not batches:
        raise ConfigError("importance 'taylor' needs calibration batches (inputs, target)")
    loss = loss or (lambda out, y: F.cross_entropy(out, y, reduction="sum"))
    scores = {g.name: torch.zeros(g.size, dtype=torch.float64) for g in groups}
    hooks = []
    for g in groups:
        for s in g.producers:
            mod = model.get_submodule(layer_of(s.param))
            last = isinstance(mod, (nn.Linear, nn.Embedding))  # their channels are the last dimension

            def capture(_mod, _args, out, g=g, last=last):
                if out.requires_grad:
                    def grad(gr, out=out):
                        channel = out.dim() - 1 if last else 1
                        prod = (out.detach() * gr).double()
                        dims = [d for d in range(1, out.dim()) if d != channel]
                        per = prod.sum(dims) if dims else prod  # (batch, channels)
                        scores[g.name].add_(per.abs().sum(0))
                    out.register_hook(grad)
            hooks.append(mod.register_forward_hook(capture))
    was = model.training
    model.eval()
    try:
        for xs, target in batches:
            model.zero_grad(set_to_none=True)
            out = model(*xs)
            loss(out, target).backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    return {k: v.numpy() for k, v in scores.items()}


def select(scores: np.ndarray, kept: int) -> list[int]:
    """The ``kept`` channels of highest score, in their original order (ties: the earlier)."""
    order = np.argsort(-scores, kind="stable")[:kept]
    return sorted(int(i) for i in order)


def _index(idx: torch.Tensor, factor: int) -> torch.Tensor:
    if factor == 1:
        return idx
    return (idx[:, None] * factor + torch.arange(factor)).reshape(-1)


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    mod = model.get_submodule(layer_of(name))
    attr = name.rpartition(".")[2]
    if attr in mod._parameters:
        old = mod._parameters[attr]
        mod._parameters[attr] = nn.Parameter(value.contiguous(), requires_grad=old.requires_grad)
    else:
        mod._buffers[attr] = value.contiguous()


def _fix_module(name: str, mod: nn.Module) -> None:
    """Make a module's size attributes agree with its sliced parameters."""
    if isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = mod.weight.shape
    elif isinstance(mod, nn.modules.conv._ConvNd):
        if mod.groups > 1:  # depthwise: one channel per group, in = out = groups
            mod.in_channels = mod.out_channels = mod.groups = mod.weight.shape[0]
        else:
            mod.out_channels, mod.in_channels = mod.weight.shape[:2]
    elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
        mod.num_features = mod.running_mean.shape[0]
    elif isinstance(mod, nn.Embedding):
        mod.embedding_dim = mod.weight.shape[1]
    else:
        raise ModelError(f"structured pruning cannot resize module {name!r} ({type(mod).__name__})")


def shrink(model: nn.Module, keep: Mapping[str, Sequence[int]], inputs: Inputs,
           groups: Sequence[ChannelGroup] | None = None) -> nn.Module:
    """Keep only channels ``keep[group]`` (indices, any order) of each named group of ``model``
    (traced on the example batch ``inputs``), in place; returns ``model``. Groups not named keep
    all their channels. A :class:`ConfigError` names a group that is not prunable (with the
    reason) or that does not exist; keeping every channel leaves the network's outputs unchanged."""
    groups = list(groups) if groups is not None else channel_groups(model, inputs)
    by_name = {g.name: g for g in groups}
    for layer in model.modules():
        if parametrize.is_parametrized(layer):
            raise ModelError("structured pruning needs plain parameters; the model has parametrizations (masks); "
                             "prune channels before unstructured pruning or sharing")
    cuts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, idx in keep.items():
        g = by_name.get(name)
        if g is None:
            prod = {lay: gr.name for gr in groups for lay in gr.layers}
            if name in prod:
                raise ConfigError(f"layer {name!r} shares its output channels with {prod[name]!r}; name the group "
                                  f"by its first layer {prod[name]!r}")
            raise ConfigError(f"no channel group {name!r}; the groups are {[gr.name for gr in groups]}")
        if not g.prunable:
            raise ConfigError(f"the output channels of layer {name!r} cannot be removed: {g.reason}")
        chosen = sorted({int(i) for i in idx})
        if not chosen or chosen[0] < 0 or chosen[-1] >= g.size:
            raise ConfigError(f"layer {name!r}: keep 1 to {g.size} channels with indices in [0, {g.size}), "
                              f"got {len(chosen)}")
        if len(chosen) == g.size:
            continue
        t = torch.tensor(chosen, dtype=torch.long)
        for s in g.producers + g.slices:
            cuts.setdefault(s.param, []).append((s.axis, _index(t, s.factor)))
    state = dict(model.named_parameters()) | dict(model.named_buffers())
    touched = set()
    with torch.no_grad():
        for pname, parts in cuts.items():
            value = state[pname].detach()
            for axis, idx in parts:
                value = value.index_select(axis, idx)
            _set_tensor(model, pname, value.clone())
            touched.add(layer_of(pname))
    for name in touched:
        _fix_module(name, model.get_submodule(name))
    return model


def narrow(model: nn.Module, fraction: float | Mapping[str, float], inputs: Inputs, importance: str = "l1", *,
           multiple: int = 1, inplace: bool = False, batches: Batches | None = None,
           loss: Callable[[torch.Tensor, Any], torch.Tensor] | None = None) -> nn.Module:
    """A narrower ``model``: ``fraction`` of the output channels of every prunable group removed
    (a float), or of the named groups (``{"fc1": 0.5}``, by their first layer), the least
    important by ``importance`` (``"l1"``, ``"l2"`` or ``"taylor"`` with calibration ``batches``);
    the kept count is rounded to a multiple of ``multiple``. ``inputs`` is an example batch. A
    copy unless ``inplace``. Layers whose outputs are the network's outputs keep them.

    For example, the student of a distillation as a half-width teacher::

        student = narrow(teacher, 0.5, torch.zeros(2, 1, 28, 28))
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"multiple must be an integer ≥ 1, got {multiple!r}")
    fractions = fraction if isinstance(fraction, Mapping) else None
    for k, f in (fractions or {"fraction": fraction}).items():
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ConfigError(f"fraction {k!r} must be in [0, 1), got {f!r}")
    if not inplace:
        model = copy.deepcopy(model)
    groups = channel_groups(model, inputs)
    if fractions is None:
        chosen = {g.name: float(fraction) for g in groups if g.prunable}  # type: ignore[arg-type]
    else:
        chosen = dict(fractions)
        by_name = {g.name: g for g in groups}
        for name in chosen:
            if name not in by_name:
                raise ConfigError(f"no channel group {name!r}; the groups are {list(by_name)}")
            if not by_name[name].prunable:
                raise ConfigError(f"the output channels of layer {name!r} cannot be removed: {by_name[name].reason}")
    targets = [g for g in groups if g.name in chosen]
    scores = channel_importance(model, targets, importance, batches, loss)
    keep = {g.name: select(scores[g.name], kept_count(g.size, chosen[g.name], multiple)) for g in targets}
    return shrink(model, keep, inputs, groups)
