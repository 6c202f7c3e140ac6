"""Sparse Low Rank factorisation (Swaminathan, Garg, Kannan, Andres, Neurocomputing 398, 2020).

Start from the truncated SVD ``W ≈ A·B`` of a fully connected layer (``A = U_k √S_k`` m×k holds
one row per output neuron, ``B = √S_k V_kᵀ`` k×n one column per input neuron). Rank the layer's
input and output neurons by importance; for the least important fraction keep only the leading
``r_s < k`` components: the trailing ``k − r_s`` entries of their rows of ``A`` (columns of ``B``)
become zero. The factors are sparse, so they go through the same sparse layout, weight sharing and
entropy coding as pruned layers, and the zero pattern is kept fixed during fine-tuning with
:mod:`torch.nn.utils.prune` masks (the same mechanism magnitude pruning uses).

Importance, one of the paper's three strategies (:class:`Importance`):

* ``"weight"``: the sum of absolute weights of the neuron's row (output) or column (input) of W;
* ``"activation"``: the mean absolute activation of the neuron over calibration batches
  (the layer's input for input neurons, its pre-activation output for output neurons);
* ``"taylor"``: the mean absolute first-order change in the loss when the neuron's activation is
  removed, ``|a · ∂L/∂a|`` per sample (Molchanov et al. 2017), over calibration batches.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.utils.prune as tprune
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.lowrank.svd import LINEAR_FACTORS, check_rank, truncated_svd

class Importance(StrEnum):
    """How SLR ranks neurons (values are what recipes write); see the module docstring."""

    WEIGHT = "weight"
    ACTIVATION = "activation"
    TAYLOR = "taylor"


@dataclass(frozen=True)
class NeuronScores:
    """Importance of a linear layer's input (``n``) and output (``m``) neurons; larger matters more."""

    inputs: torch.Tensor
    outputs: torch.Tensor


def _linear_layers(layers: Mapping[str, nn.Module]) -> None:
    for name, m in layers.items():
        if not isinstance(m, nn.Linear):
            raise ConfigError(f"SLR ranks the neurons of linear layers; {name!r} is a {type(m).__name__}")


def neuron_importance(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    strategy: str,
    batches: Iterable[tuple[torch.Tensor | tuple[torch.Tensor, ...], Any]] = (),
    loss: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
) -> dict[str, NeuronScores]:
    """Scores of every layer in ``layers`` (modules of ``model``), in one pass over ``batches``
    of ``(inputs, target)`` (unused by ``"weight"``): ``inputs`` a tensor or a tuple of the
    model's inputs. ``"taylor"`` differentiates ``loss(outputs, target)`` summed over the batch,
    by default cross-entropy on labels; a model trained to match a teacher passes its objective's
    loss with the teacher's outputs as ``target``."""
    try:
        strategy = Importance(strategy)
    except ValueError:
        raise ConfigError(f"importance must be one of {[i.value for i in Importance]}, got {strategy!r}") from None
    if loss is None:
        def loss(out: torch.Tensor, y: Any) -> torch.Tensor:
            return F.cross_entropy(out, y, reduction="sum")
    _linear_layers(layers)
    if strategy == "weight":
        return {n: NeuronScores(m.weight.detach().abs().sum(0), m.weight.detach().abs().sum(1))
                for n, m in layers.items()}
    sums = {n: [torch.zeros(m.in_features, dtype=torch.float64), torch.zeros(m.out_features, dtype=torch.float64)]
            for n, m in layers.items()}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def capture(_mod, args, out):
            x = args[0]
            if strategy == "taylor":
                for t in (x, out):
                    if t.requires_grad and not t.is_leaf:
                        t.retain_grad()
            seen[name] = (x, out)
        return capture

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    count = 0
    was = model.training
    model.eval()
    try:
        for x, y in batches:
            xs = x if isinstance(x, tuple) else (x,)
            seen.clear()
            if strategy == "activation":
                with torch.no_grad():
                    model(*xs)
                for n, (i, o) in seen.items():
                    sums[n][0] += i.detach().abs().reshape(-1, i.shape[-1]).sum(0).double()
                    sums[n][1] += o.detach().abs().reshape(-1, o.shape[-1]).sum(0).double()
            else:
                model.zero_grad(set_to_none=True)
                # gradients reach the first layer's inputs only through a leaf that requires them
                xs = tuple(t.detach().clone().requires_grad_(True) if t.is_floating_point() else t for t in xs)
                loss(model(*xs), y).backward()
                for n, (i, o) in seen.items():
                    for k, t in enumerate((i, o)):
                        g = t.grad if t.grad is not None else torch.zeros_like(t)
                        sums[n][k] += (t.detach() * g).abs().reshape(-1, t.shape[-1]).sum(0).double()
            count += len(xs[0])
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was)
    if count == 0:
        raise ConfigError(f"importance {strategy!r} needs calibration batches; none were given")
    return {n: NeuronScores((s[0] / count).float(), (s[1] / count).float()) for n, s in sums.items()}


def check_unimportant(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"the unimportant fraction must be in [0, 1), got {fraction!r}")


def least_important(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the ``round(fraction · len)`` lowest scores (ties broken by position)."""
    check_unimportant(fraction)
    count = int(round(fraction * scores.numel()))
    return torch.argsort(scores, stable=True)[:count]


def slr_rank(rank: int | float, shape: tuple[int, int], reduced: int | float, unimportant: float) -> tuple[int, int]:
    """``(k, r_s)``. An int ``rank`` is ``k``; a float is the fraction of the layer's weights kept
    as non-zeros in the sparse factors (so SLR and SVD at the same float compress equally).
    ``reduced`` is ``r_s``: an int, or a float fraction of ``k``."""
    m, n = shape
    full = min(m, n)
    check_unimportant(unimportant)
    if isinstance(reduced, bool) or not isinstance(reduced, (int, float)) or not reduced >= 0 or (
            isinstance(reduced, float) and not reduced < 1):
        raise ConfigError(f"reduced_rank must be an int ≥ 0 or a fraction of the rank in [0, 1), got {reduced!r}")
    check_rank(rank)
    u = int(round(unimportant * m)) + int(round(unimportant * n))

    def rs_of(k: int) -> int:
        return min(k - 1, reduced if isinstance(reduced, int) else math.floor(reduced * k)) if k > 1 else 0

    if isinstance(rank, int):
        k = min(rank, full)
        return k, rs_of(k)
    budget = rank * m * n
    k = 1
    while k < full and (k + 1) * (m + n) - u * (k + 1 - rs_of(k + 1)) <= budget:
        k += 1
    return k, rs_of(k)


def slr_masks(shape: tuple[int, int], k: int, r_s: int, in_idx: torch.Tensor, out_idx: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of ``(B (k×n), A (m×k))``: the unimportant inputs' columns of ``B`` and outputs' rows
    of ``A`` keep only their leading ``r_s`` components."""
    m, n = shape
    if not 0 <= r_s < k:
        raise ConfigError(f"the reduced rank must be in 0..{k - 1} (below the rank {k}), got {r_s}")
    mask_b = torch.ones(k, n)
    mask_a = torch.ones(m, k)
    mask_b[r_s:, in_idx] = 0
    mask_a[out_idx, r_s:] = 0
    return mask_b, mask_a


def slr_linear(layer: nn.Linear, scores: NeuronScores, rank: int | float = 0.25, reduced_rank: int | float = 0.5,
               unimportant: float = 0.5) -> nn.Sequential:
    """Replace ``layer`` by ``Sequential(first: n→k, second: k→m)`` holding its sparse low-rank
    factors; pruning masks on both weights keep the zero pattern fixed while fine-tuning
    (:func:`deepshrink.prune.make_permanent` removes them, leaving plain weights with zeros)."""
    if not isinstance(layer, nn.Linear):
        raise ConfigError(f"SLR factorises linear layers, got {type(layer).__name__}")
    w = layer.weight.detach()
    m, n = w.shape
    if scores.inputs.shape != (n,) or scores.outputs.shape != (m,):
        raise ConfigError(f"neuron scores of shape {tuple(scores.inputs.shape)}/{tuple(scores.outputs.shape)} do not "
                          f"fit a layer with {n} inputs and {m} outputs")
    k, r_s = slr_rank(rank, (m, n), reduced_rank, unimportant)
    a, b = truncated_svd(w, k)
    first = nn.Linear(n, k, bias=False)
    second = nn.Linear(k, m, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(b)
        second.weight.copy_(a)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    if k > 1 and unimportant > 0:
        mask_b, mask_a = slr_masks((m, n), k, r_s, least_important(scores.inputs, unimportant),
                                   least_important(scores.outputs, unimportant))
        tprune.custom_from_mask(first, "weight", mask_b)
        tprune.custom_from_mask(second, "weight", mask_a)
    return nn.Sequential(OrderedDict(zip(LINEAR_FACTORS, (first, second), strict=True)))
