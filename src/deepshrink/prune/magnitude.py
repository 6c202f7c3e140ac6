"""Magnitude pruning (Han et al. 2015): masks while retraining, permanent zeros afterwards.

Masks are attached with :mod:`torch.nn.utils.prune` (``weight_orig`` parameter, ``weight_mask``
buffer, and a forward pre-hook recomputing ``weight = weight_orig * weight_mask``), so a masked
model works anywhere. Retraining does not pay for that hook at every forward:
:func:`masked_training` (used by :func:`deepshrink.train.fit`) sets the pruned weights to zero
once, lets the forward pass use ``weight_orig`` directly and zeroes the pruned positions again
after each optimizer step. The optimizers are elementwise, so the kept weights follow the same
path as with the hook and the pruned ones are exactly zero at every forward.
:func:`make_permanent` removes the hooks and leaves plain weights with zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.graph.ops import OPS, op_for_module


def layer_kind(module: nn.Module) -> str | None:
    """The layer kind of ``module`` (``"linear"``, ``"conv"``, ``"embedding"``, ...), or None when
    its ``weight`` is not a compressible layer weight.

    The graph's op registry is the one place that says which op's weight is a layer weight
    (:attr:`deepshrink.graph.ops.Op.layer_kind`); every stage asks here, so a new layer op is
    pruned, shared and entropy-coded as soon as its op class names a kind. Subclasses (a module
    with a sharing parametrization is a subclass of its original type) have their base's kind."""
    op = op_for_module(module)
    return None if op is None else op.layer_kind


def layer_kinds() -> tuple[str, ...]:
    """Every layer kind some registered op declares, in registration order."""
    return tuple(dict.fromkeys(op.layer_kind for op in OPS.values() if op.layer_kind))


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The modules of ``model`` with a layer kind (see :func:`layer_kind`), by qualified name, in
    definition order."""
    return {name: m for name, m in model.named_modules() if layer_kind(m) is not None}


def current_weight(module: nn.Module) -> torch.Tensor:
    """The weight as the forward pass sees it (masked when a mask is attached), computed afresh:
    the hook's cached ``weight`` can be stale after ``load_state_dict``."""
    if tprune.is_pruned(module):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


class Ramp(StrEnum):
    """How iterative pruning reaches its target over its steps: the fraction of the target
    sparsity (or quality threshold) applied after step ``t`` of ``n``."""

    LINEAR = "linear"
    """``t / n``: Han et al. 2015's even steps. The last step removes most of what is left: at a
    target of 94 % in 4 steps it goes from 70.5 % to 94 %, 80 % of the surviving weights at once."""
    CUBIC = "cubic"
    """``1 - (1 - t / n)^3``: Zhu & Gupta 2017's gradual schedule, fast while the network is
    redundant and gentle near the target (94 % in 4 steps: 54 %, 82 %, 92.5 %, 94 %)."""

    def fraction(self, step: int, steps: int) -> float:
        """The fraction of the target reached after ``step`` of ``steps`` (1 at the last step)."""
        t = step / steps
        return t if self is Ramp.LINEAR else 1.0 - (1.0 - t) ** 3


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


@contextmanager
def masked_training(model: nn.Module) -> Iterator[Callable[[], None]]:
    """Swap every pruning hook in ``model`` for masking after the optimizer step.

    Inside the context each pruned tensor (``weight``) *is* its ``*_orig`` parameter, zero at the
    masked positions; call the yielded function after every optimizer step (or any other in-place
    change) to zero them again. On exit the hooks are back and ``*_orig`` keeps the zeros, so the
    masked weights are what they would be with the hooks.
    """
    saved: list[tuple[nn.Module, list]] = []
    masked: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for m in model.modules():
            names = [h._tensor_name for h in m._forward_pre_hooks.values() if isinstance(h, tprune.BasePruningMethod)]
            if not names:
                continue
            saved.append((m, list(m._forward_pre_hooks.items())))
            for key, hook in saved[-1][1]:
                if isinstance(hook, tprune.BasePruningMethod):
                    del m._forward_pre_hooks[key]
            for name in names:
                orig, mask = getattr(m, f"{name}_orig"), getattr(m, f"{name}_mask")
                orig.mul_(mask)  # the hook's product, in place (a float multiply is ~10x a masked_fill_)
                object.__setattr__(m, name, orig)  # a plain attribute, as the hook leaves it
                masked.append((orig, mask))

    @torch.no_grad()
    def reapply() -> None:
        for orig, mask in masked:
            orig.mul_(mask)

    try:
        yield reapply
    finally:
        with torch.no_grad():
            for m, hooks in saved:
                m._forward_pre_hooks.clear()
                m._forward_pre_hooks.update(hooks)
                for _, hook in hooks:
                    if isinstance(hook, tprune.BasePruningMethod):
                        name = hook._tensor_name
                        object.__setattr__(m, name, getattr(m, f"{name}_orig") * getattr(m, f"{name}_mask"))


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
