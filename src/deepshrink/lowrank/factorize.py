"""One entry point for every low-rank scheme: :func:`factorize` replaces a layer by a
``Sequential`` of smaller real layers, chosen by method name."""

from __future__ import annotations

from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.lowrank.conv import cp_conv, spatial_svd_conv, tucker2_conv
from deepshrink.lowrank.slr import NeuronScores, slr_linear
from deepshrink.lowrank.svd import factorize_linear, resolve_rank

LINEAR_METHODS = ("svd", "slr")
CONV_METHODS = ("spatial", "tucker", "cp")
METHODS = LINEAR_METHODS + CONV_METHODS
#: Names of the layers that replace a factorised layer ``x`` (``x.first``, ``x.second``, ...), per
#: method, in order. Rules of later stages can name them before anything is factorised.
FACTOR_NAMES: dict[str, tuple[str, ...]] = {
    "svd": ("first", "second"),
    "slr": ("first", "second"),
    "spatial": ("vertical", "horizontal"),
    "tucker": ("reduce", "core", "restore"),
    "cp": ("reduce", "vertical", "horizontal", "restore"),
}


def check_method(method: str, layer: nn.Module, name: str = "layer") -> None:
    """Raise a :class:`ConfigError` naming the methods that fit ``layer`` when ``method`` does not."""
    if method not in METHODS:
        raise ConfigError(f"{name}: unknown low-rank method {method!r}; expected one of {METHODS}")
    if isinstance(layer, nn.Linear) and method not in LINEAR_METHODS:
        raise ConfigError(f"{name} is a linear layer; method {method!r} factorises convolutions. "
                          f"Use one of {LINEAR_METHODS} for it")
    if isinstance(layer, nn.Conv2d) and method not in CONV_METHODS:
        raise ConfigError(f"{name} is a convolution; method {method!r} factorises linear layers. "
                          f"Use one of {CONV_METHODS} for it (for example _conv = {{ method = \"tucker\", rank = 0.5 }})")
    if not isinstance(layer, (nn.Linear, nn.Conv2d)):
        raise ConfigError(f"{name}: low-rank methods factorise nn.Linear and nn.Conv2d, got {type(layer).__name__}")


def factorize(layer: nn.Module, method: str, *, rank: int | float = 0.5, energy: float | None = None,
              scores: NeuronScores | None = None, reduced_rank: int | float = 0.5, unimportant: float = 0.5,
              ) -> nn.Sequential:
    """``layer`` factorised by ``method`` (see :data:`METHODS`) at ``rank`` (int = absolute,
    float = fraction of the layer's weights) or ``energy``. SLR needs the layer's neuron ``scores``."""
    check_method(method, layer)
    if method == "svd":
        return factorize_linear(layer, rank=rank, energy=energy)
    if method == "slr":
        if scores is None:
            raise ConfigError("SLR needs neuron importance scores (see deepshrink.lowrank.neuron_importance)")
        if energy is not None:
            import torch

            rank = resolve_rank(1, tuple(layer.weight.shape), torch.linalg.svdvals(layer.weight.detach().double()),
                                energy)
        return slr_linear(layer, scores, rank=rank, reduced_rank=reduced_rank, unimportant=unimportant)
    if method == "spatial":
        return spatial_svd_conv(layer, rank=rank, energy=energy)
    if method == "tucker":
        return tucker2_conv(layer, rank=rank, energy=energy)
    if energy is not None:
        raise ConfigError("cp takes a rank, not an energy threshold")
    return cp_conv(layer, rank=rank)


def weight_counts(module: nn.Module) -> tuple[int, int]:
    """``(weights, non-zero weights)`` of every Linear/Conv weight in ``module`` (masks applied)."""
    from deepshrink.prune import current_weight, prunable_layers

    total = nonzero = 0
    for m in prunable_layers(module).values():
        w = current_weight(m)
        total += w.numel()
        nonzero += int((w != 0).sum())
    return total, nonzero
