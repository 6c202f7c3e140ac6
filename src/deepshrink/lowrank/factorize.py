"""One entry point for every low-rank scheme: :func:`factorize` replaces a layer by a
``Sequential`` of smaller real layers, chosen by method name.

:data:`METHODS` is the one table of schemes: which layer kind each factorises and the names of
the layers that replace a factorised layer (the builders name their layers from the same
constants). Which layers have a low-rank form at all is decided from the layer kind the graph's
op registry gives (:func:`deepshrink.prune.layer_kind`) and the weight's shape, never from a
second list of module types: a linear layer (every ``nn.Linear``, attention projections
included) takes the linear schemes, a 2-D convolution with ``groups == 1`` the convolution
schemes; grouped and depthwise convolutions, 1-D convolutions and embeddings have none
(:func:`no_low_rank_form` says why)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.lowrank.conv import CP_FACTORS, SPATIAL_FACTORS, TUCKER_FACTORS, cp_conv, spatial_svd_conv, tucker2_conv
from deepshrink.lowrank.slr import NeuronScores, slr_linear
from deepshrink.lowrank.svd import LINEAR_FACTORS, factorize_linear, resolve_rank
from deepshrink.prune import layer_kind


class LowRankMethod(StrEnum):
    """The low-rank schemes (values are what recipes write)."""

    SVD = "svd"
    SLR = "slr"
    SPATIAL = "spatial"
    TUCKER = "tucker"
    CP = "cp"


@dataclass(frozen=True)
class Method:
    """A low-rank scheme: the layer kind it factorises and the names of the layers replacing one."""

    name: LowRankMethod
    kind: str
    factors: tuple[str, ...]


METHODS: dict[LowRankMethod, Method] = {m.name: m for m in (
    Method(LowRankMethod.SVD, "linear", LINEAR_FACTORS),
    Method(LowRankMethod.SLR, "linear", LINEAR_FACTORS),
    Method(LowRankMethod.SPATIAL, "conv", SPATIAL_FACTORS),
    Method(LowRankMethod.TUCKER, "conv", TUCKER_FACTORS),
    Method(LowRankMethod.CP, "conv", CP_FACTORS),
)}
LINEAR_METHODS = tuple(m for m, d in METHODS.items() if d.kind == "linear")
CONV_METHODS = tuple(m for m, d in METHODS.items() if d.kind == "conv")


def as_method(method: object, where: str = "lowrank") -> LowRankMethod:
    """``method`` as a :class:`LowRankMethod`; a :class:`ConfigError` listing the methods otherwise."""
    try:
        return LowRankMethod(method)
    except ValueError:
        raise ConfigError(f"{where}: method must be one of {[m.value for m in LowRankMethod]}, got {method!r}") from None


def low_rank_kind(layer: nn.Module) -> str | None:
    """``"linear"`` or ``"conv"``: which schemes of :data:`METHODS` can factorise ``layer``, or None
    when none can (see :func:`no_low_rank_form`)."""
    kind, weight = layer_kind(layer), getattr(layer, "weight", None)
    if kind == "linear" and isinstance(layer, nn.Linear):
        return "linear"
    if (kind == "conv" and isinstance(layer, nn.Conv2d) and weight is not None and weight.ndim == 4
            and layer.groups == 1 and not isinstance(layer.padding, str) and layer.padding_mode == "zeros"):
        return "conv"
    return None


def no_low_rank_form(name: str, layer: nn.Module) -> str:
    """Why ``layer`` (named ``name``) has no low-rank form, for an error message."""
    kind = layer_kind(layer)
    groups = getattr(layer, "groups", 1)
    if kind == "conv" and groups > 1:
        what = "depthwise" if groups == getattr(layer, "in_channels", None) else "grouped"
        return (f"{what} conv {name} (groups={groups}) has no low-rank form: its kernels act on "
                f"{layer.in_channels // groups} input channel(s) each, there is no channel matrix to factorise")
    if kind == "conv" and not isinstance(layer, nn.Conv2d):
        return (f"conv {name} ({type(layer).__name__}) has no low-rank form: the convolution schemes "
                f"{[m.value for m in CONV_METHODS]} factorise 2-D convolutions")
    if kind == "conv":
        return (f"conv {name} (padding={layer.padding!r}, padding_mode={layer.padding_mode!r}) has no low-rank form: "
                "the convolution schemes need explicit zero padding")
    if kind is None:
        return f"{name} is a {type(layer).__name__}, not a layer with a compressible weight"
    return (f"{kind} {name} ({type(layer).__name__}) has no low-rank form: low-rank methods factorise linear "
            "layers and 2-D convolutions")


def check_method(method: str, layer: nn.Module, name: str = "layer") -> None:
    """Raise a :class:`ConfigError` naming the methods that fit ``layer`` when ``method`` does not."""
    method = as_method(method, name)
    fits = low_rank_kind(layer)
    if fits is None:
        raise ConfigError(no_low_rank_form(name, layer))
    if fits == "linear" and METHODS[method].kind != "linear":
        raise ConfigError(f"{name} is a linear layer; method {method.value!r} factorises convolutions. "
                          f"Use one of {[m.value for m in LINEAR_METHODS]} for it")
    if fits == "conv" and METHODS[method].kind != "conv":
        raise ConfigError(f"{name} is a convolution; method {method.value!r} factorises linear layers. "
                          f"Use one of {[m.value for m in CONV_METHODS]} for it "
                          f"(for example _conv = {{ method = \"tucker\", rank = 0.5 }})")


def factorize(layer: nn.Module, method: str, *, rank: int | float = 0.5, energy: float | None = None,
              scores: NeuronScores | None = None, reduced_rank: int | float = 0.5, unimportant: float = 0.5,
              ) -> nn.Sequential:
    """``layer`` factorised by ``method`` (see :data:`METHODS`) at ``rank`` (int = absolute,
    float = fraction of the layer's weights) or ``energy``. SLR needs the layer's neuron ``scores``."""
    check_method(method, layer)
    method = LowRankMethod(method)
    if method is LowRankMethod.SVD:
        return factorize_linear(layer, rank=rank, energy=energy)
    if method is LowRankMethod.SLR:
        if scores is None:
            raise ConfigError("SLR needs neuron importance scores (see deepshrink.lowrank.neuron_importance)")
        if energy is not None:
            import torch

            rank = resolve_rank(1, tuple(layer.weight.shape), torch.linalg.svdvals(layer.weight.detach().double()),
                                energy)
        return slr_linear(layer, scores, rank=rank, reduced_rank=reduced_rank, unimportant=unimportant)
    if method is LowRankMethod.SPATIAL:
        return spatial_svd_conv(layer, rank=rank, energy=energy)
    if method is LowRankMethod.TUCKER:
        return tucker2_conv(layer, rank=rank, energy=energy)
    if energy is not None:
        raise ConfigError("cp takes a rank, not an energy threshold")
    return cp_conv(layer, rank=rank)


def weight_counts(module: nn.Module) -> tuple[int, int]:
    """``(weights, non-zero weights)`` of every layer weight in ``module`` (masks applied)."""
    from deepshrink.prune import current_weight, prunable_layers

    total = nonzero = 0
    for m in prunable_layers(module).values():
        w = current_weight(m)
        total += w.numel()
        nonzero += int((w != 0).sum())
    return total, nonzero
