"""Magnitude pruning (Han et al. 2015): masks while retraining, permanent zeros afterwards.

Masks are applied with :mod:`torch.nn.utils.prune`, whose forward pre-hook recomputes
``weight = weight_orig * weight_mask`` at every forward, so pruned weights stay exactly zero
during retraining. :func:`make_permanent` removes the hooks and leaves plain weights with zeros.
"""

from __future__ import annotations

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from deepshrink.errors import ConfigError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and convolution modules by qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRUNABLE)}


def layer_kind(module: nn.Module) -> str:
    """'conv' or 'linear' (the kind recipes use for default settings)."""
    return "linear" if isinstance(module, nn.Linear) else "conv"


def current_weight(module: nn.Module) -> torch.Tensor:
    """The weight as the forward pass sees it (masked when a mask is attached), computed afresh:
    the hook's cached ``weight`` can be stale after ``load_state_dict``."""
    if tprune.is_pruned(module):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def magnitude_mask(
    weight: torch.Tensor, *, sparsity: float | None = None, threshold: float | None = None
) -> torch.Tensor:
    """Keep the weights of largest magnitude: either the fraction ``1 - sparsity`` of them, or
    those with ``|w| > threshold``. Already-zero weights stay pruned. Pure function."""
    if (sparsity is None) == (threshold is None):
        raise ConfigError("give exactly one of sparsity or threshold")
    mag = weight.detach().abs()
    if threshold is not None:
        if threshold < 0:
            raise ConfigError(f"threshold must be ≥ 0, got {threshold}")
        return (mag > threshold).to(weight.dtype)
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity}")
    n_prune = int(round(sparsity * mag.numel()))
    mask = (mag != 0).to(weight.dtype)
    if n_prune == 0:
        return mask
    # ranks by magnitude; ties broken by position so the count is exact
    order = torch.argsort(mag.reshape(-1), stable=True)
    flat = torch.ones(mag.numel(), dtype=weight.dtype)
    flat[order[:n_prune]] = 0
    return flat.reshape(mag.shape) * mask


def apply_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Attach (or tighten) a pruning mask on ``module.weight``."""
    if tprune.is_pruned(module):
        with torch.no_grad():
            module.weight_mask.mul_(mask.to(module.weight_mask.dtype))
            # make the hook's product current without waiting for a forward pass
            module.weight = module.weight_orig * module.weight_mask
    else:
        tprune.custom_from_mask(module, "weight", mask)


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove every pruning hook; the zeros stay in plain ``weight`` parameters."""
    for m in prunable_layers(model).values():
        if tprune.is_pruned(m):
            tprune.remove(m, "weight")
    return model


def sparsity_of(model: nn.Module) -> dict[str, float]:
    """Fraction of zero weights per prunable layer."""
    return {
        name: float((current_weight(m) == 0).float().mean()) for name, m in prunable_layers(model).items()
    }
