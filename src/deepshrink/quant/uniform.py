"""The arithmetic of uniform, binary and ternary quantisation, in torch, once for both uses: the
post-training rounding that produces a :class:`~deepshrink.quant.encoding.QuantTensor`, and the
fake quantisation of quantisation-aware training (a :mod:`torch.nn.utils.parametrize`
parametrization whose ``original`` is the full-precision shadow weight, with the
straight-through estimator of Bengio et al. 2013 / Courbariaux et al. 2015).

Scales come from the weights of each group (a row, the whole tensor, or ``group_size``
elements of a row) by a calibration rule:

* ``minmax``: the range of the weights (symmetric: ``max |w|``),
* ``percentile``: the ``p``-th percentile of ``|w|`` (of ``w`` at both ends when asymmetric),
* ``mse``: the clipping fraction of the range, on a grid, that minimises the squared error of
  the quantised weights (as in TensorRT's and Banner et al. 2019's clipping searches).

Binary layers use the XNOR-Net scale ``mean |w|`` (Rastegari et al. 2016), ternary ones the TWN
threshold ``0.7 · mean |w|`` and scale ``mean |w|`` above it (Li et al. 2016). Trained ternary
quantisation (TTQ, Zhu et al. 2017) learns a positive and a negative scale per layer instead.

Pruned weights (exact zeros) stay zero: a symmetric grid has the level 0, an asymmetric one
gets an integer zero point (the range is widened to hold 0: ``zero = round(-lo / scale)``), a
ternary layer maps them to the middle symbol; binary levels have no zero, so the stage refuses
pruned binary layers. During training the zero pattern is a fixed mask.

Scales are rounded to float16 when that keeps them normal (relative change below 2^-11): the
file then stores them in half the bytes, and the levels are computed from the rounded scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
import torch.nn.utils.parametrize as P
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.quant.encoding import LEVELS, QuantTensor, group_ok, level_bits
from deepshrink.storage.tensors import _rows_cols


class Calibration(StrEnum):
    """How the clipping range (the scale) of an integer grid is chosen (values are what recipes write)."""

    MINMAX = "minmax"
    MSE = "mse"
    PERCENTILE = "percentile"


GRANULARITIES = ("tensor", "channel", "group")
#: Clipping fractions of the range the ``mse`` calibration tries.
MSE_GRID = tuple(np.round(np.linspace(0.3, 1.0, 29), 4))
#: Training steps between two grid searches of the ``mse`` calibration during training.
MSE_REFRESH = 32
#: TWN's threshold factor: ternary weights with ``|w| > 0.7 · mean |w|`` are nonzero (Li et al. 2016).
TWN_THRESHOLD = 0.7
#: Smallest normal float16: scales at least this large are rounded to float16 (exact storage).
HALF_NORMAL = 2.0 ** -14


@dataclass(frozen=True)
class QuantSpec:
    """How one layer is quantised (the per-layer settings of the stage, resolved): ``bits``
    (None: 1 for binary, 2 for ternary, 8 for int), ``levels``, ``granularity``, ``group_size``
    (elements per scale with ``granularity = "group"``) and ``symmetric`` (int only)."""

    bits: int | None = None
    levels: str = "int"
    granularity: str = "channel"
    group_size: int | None = None
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.levels not in LEVELS:
            raise ConfigError(f"levels must be one of {list(LEVELS)}, got {self.levels!r}")
        lo, hi = level_bits(self.levels)
        if self.bits is None:
            object.__setattr__(self, "bits", hi)
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not lo <= self.bits <= hi:
            allowed = f"{lo}" if lo == hi else f"{lo}..{hi}"
            raise ConfigError(f"bits must be {allowed} for {self.levels} levels, got {self.bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"granularity must be one of {list(GRANULARITIES)}, got {self.granularity!r}")
        if self.granularity == "group":
            g = self.group_size
            if isinstance(g, bool) or not isinstance(g, int) or g < 1:
                raise ConfigError(f"granularity \"group\" needs group_size, a positive integer, got {g!r}")
        elif self.group_size is not None:
            raise ConfigError(f"group_size is for granularity \"group\", not {self.granularity!r}")
        if not isinstance(self.symmetric, bool):
            raise ConfigError(f"symmetric must be true or false, got {self.symmetric!r}")
        if not self.symmetric and self.levels != "int":
            raise ConfigError(f"{self.levels} levels are symmetric (±scale); symmetric = false is for int levels")

    def group(self, shape: tuple[int, ...]) -> int:
        """Elements per scale for a weight of ``shape``; a :class:`ConfigError` when group_size
        does not divide its rows."""
        numel = math.prod(shape)
        _, cols = _rows_cols(shape)
        g = {"tensor": numel, "channel": cols}.get(self.granularity, self.group_size)
        if not group_ok(shape, g):
            raise ConfigError(f"group_size {g} does not divide the rows of a weight of shape {list(shape)} "
                              f"(row length {cols}); choose a divisor of {cols}")
        return g


@dataclass(frozen=True)
class Rule:
    """The calibration of integer grids: ``calibration`` and its ``percentile``."""

    calibration: Calibration = Calibration.MSE
    percentile: float = 99.99


def _half(s: torch.Tensor) -> torch.Tensor:
    """Scales rounded to float16 where that keeps them normal; positive (1 for empty groups)."""
    s = torch.where(s > 0, s, torch.ones_like(s))
    h = s.to(torch.float16).to(torch.float32)
    return torch.where(torch.isfinite(h) & (h >= HALF_NORMAL), h, s)


def _int_levels(w: torch.Tensor, bits: int, symmetric: bool, lo: torch.Tensor, hi: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Symbols, scales and zero points of groups ``w`` ([groups, group]) clipped to ``[lo, hi]``
    (symmetric: ``hi`` = the clip of ``|w|``)."""
    if symmetric:
        qmax = (1 << (bits - 1)) - 1
        s = _half(hi / qmax)
        level = torch.clamp(torch.round(w / s[:, None]), -qmax - 1, qmax)
        return level + (1 << (bits - 1)), s, None
    top = (1 << bits) - 1
    s = _half((hi - lo) / top)
    zero = torch.clamp(torch.round(-lo / s), 0, top)
    q = torch.clamp(torch.round(w / s[:, None]) + zero[:, None], 0, top)
    return q, s, zero


def _ranges(w: torch.Tensor, symmetric: bool, rule: Rule) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group, the clipping range of the minmax or percentile rule (symmetric: 0 and the
    clip of ``|w|``; asymmetric: the range widened to hold 0)."""
    if symmetric:
        a = w.abs()
        hi = a.amax(1) if rule.calibration is not Calibration.PERCENTILE else torch.quantile(a, rule.percentile / 100, dim=1)
        return torch.zeros_like(hi), hi
    if rule.calibration is Calibration.PERCENTILE:
        lo, hi = torch.quantile(w, 1 - rule.percentile / 100, dim=1), torch.quantile(w, rule.percentile / 100, dim=1)
    else:
        lo, hi = w.amin(1), w.amax(1)
    return torch.clamp(lo, max=0), torch.clamp(hi, min=0)


def _dequant(q: torch.Tensor, s: torch.Tensor, zero: torch.Tensor | None, bits: int) -> torch.Tensor:
    z = zero[:, None] if zero is not None else float(1 << (bits - 1))
    return (q - z) * s[:, None]


def quantize_groups(w: torch.Tensor, spec: QuantSpec, rule: Rule, nonzero: torch.Tensor | None = None,
                    fractions: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Symbols ``q`` (float, integral), scales and zero points (None when symmetric) of the
    groups ``w`` ([groups, group], float32), and for ``mse`` the clipping fraction chosen per
    group. ``nonzero`` marks the weights that count for the mean-based scales of binary and
    ternary layers (pruned zeros do not); ``fractions``, when given, replace the ``mse`` search."""
    w = w.detach()
    if spec.levels in ("binary", "ternary"):
        a = w.abs()
        keep = (w != 0) if nonzero is None else nonzero
        n = keep.sum(1).clamp(min=1)
        mean = (a * keep).sum(1) / n
        if spec.levels == "binary":
            return (w >= 0).to(w.dtype), _half(mean), None, None
        big = a > TWN_THRESHOLD * mean[:, None]
        s = _half((a * big).sum(1) / big.sum(1).clamp(min=1))
        return torch.sign(w) * big + 1, s, None, None
    bits, sym = spec.bits, spec.symmetric
    lo, hi = _ranges(w, sym, rule)
    if rule.calibration is not Calibration.MSE:
        return (*_int_levels(w, bits, sym, lo, hi), None)
    if fractions is not None:
        return (*_int_levels(w, bits, sym, lo * fractions, hi * fractions), fractions)
    best, best_err, best_f = None, None, None
    for f in MSE_GRID:
        cand = _int_levels(w, bits, sym, lo * float(f), hi * float(f))
        err = ((_dequant(*cand, bits) - w) ** 2).sum(1)
        if best is None:
            best, best_err, best_f = list(cand), err, torch.full_like(err, float(f))
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_f = torch.where(better, float(f), best_f)
        best[0] = torch.where(better[:, None], cand[0], best[0])
        best[1] = torch.where(better, cand[1], best[1])
        if not sym:
            best[2] = torch.where(better, cand[2], best[2])
    return best[0], best[1], best[2], best_f


def quant_form(weight: torch.Tensor, spec: QuantSpec, rule: Rule, mask: torch.Tensor | None = None) -> QuantTensor:
    """The quantised form of ``weight`` (times ``mask``, the pruning pattern, when given)."""
    w = weight.detach().to(torch.float32) * (1 if mask is None else mask)
    shape = tuple(w.shape)
    group = spec.group(shape)
    nonzero = None if mask is None else (mask != 0).reshape(-1, group)
    q, s, zero, _ = quantize_groups(w.reshape(-1, group), spec, rule, nonzero)
    return QuantTensor(q.to(torch.uint8).reshape(shape).numpy(), spec.bits, spec.levels, group,
                       s.to(torch.float32).numpy().copy(), None if zero is None else zero.to(torch.uint8).numpy())


class FakeQuant(nn.Module):
    """Parametrization ``w → quantise(w · mask)`` with the straight-through estimator: the forward
    pass sees the quantised weight, the gradient reaches the shadow weight unchanged (zero at
    pruned positions). Scales are derived afresh from the shadow weight at every forward; the
    ``mse`` rule's grid search of clipping fractions (about ten times the cost of the rest) runs
    every :data:`MSE_REFRESH` training steps, the fractions it chose scaling the current range
    in between. In eval mode the quantised weight is cached until the shadow weight changes."""

    def __init__(self, spec: QuantSpec, rule: Rule, mask: torch.Tensor | None):
        super().__init__()
        self.spec, self.rule = spec, rule
        self.register_buffer("mask", mask)
        self._fractions: torch.Tensor | None = None
        self._steps = 0
        self._cache: tuple[tuple[int, int], torch.Tensor] | None = None

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        group = self.spec.group(tuple(w.shape))
        g = w.detach().reshape(-1, group)
        nonzero = None if self.mask is None else (self.mask != 0).reshape(-1, group)
        reuse = self.training and self._steps % MSE_REFRESH != 0
        q, s, zero, fractions = quantize_groups(g, self.spec, self.rule, nonzero, self._fractions if reuse else None)
        if self.training:
            self._steps += 1
            self._fractions = fractions
        if self.spec.levels == "binary":
            deq = (2 * q - 1) * s[:, None]
        elif self.spec.levels == "ternary":
            deq = (q - 1) * s[:, None]
        else:
            deq = _dequant(q, s, zero, self.spec.bits)
        return deq.reshape(w.shape)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        key = (id(w), w._version)
        if self.mask is not None:
            w = w * self.mask
        if self.training:
            self._cache = None
            return w + (self.quantized(w) - w).detach()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.quantized(w))
        return w + (self._cache[1] - w).detach()


class TrainedTernary(nn.Module):
    """Parametrization of trained ternary quantisation (Zhu et al. 2017): ``w → Wp`` where
    ``w > Δ``, ``-Wn`` where ``w < -Δ``, 0 elsewhere, with ``Δ = 0.7 · mean |w|`` (TWN's
    threshold, on the unpruned weights) and the learned scales ``Wp``, ``Wn`` (parameters of
    this module, started at TWN's scale of each sign). The shadow weight's gradient is scaled by
    ``Wp`` / ``Wn`` in the positive / negative region and passed as is in the zero region."""

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor | None):
        super().__init__()
        self.register_buffer("mask", mask)
        w = weight.detach() * (1 if mask is None else mask)
        pos, neg = self.regions(w)
        self.wp = nn.Parameter(_half(w[pos].mean().reshape(1) if pos.any() else torch.ones(1)))
        self.wn = nn.Parameter(_half((-w[neg]).mean().reshape(1) if neg.any() else torch.ones(1)))

    def regions(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = w.detach().abs()
        nz = (a != 0) if self.mask is None else (self.mask != 0)
        delta = TWN_THRESHOLD * (a * nz).sum() / nz.sum().clamp(min=1)
        return w > delta, w < -delta

    def scales(self) -> tuple[float, float]:
        """``Wp`` and ``Wn`` rounded to float16 (positive): the values the stored weight takes."""
        return tuple(float(_half(p.detach().abs().reshape(1))[0]) for p in (self.wp, self.wn))  # type: ignore[return-value]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mask is not None:
            w = w * self.mask
        pos, neg = self.regions(w)
        pos, neg = pos.to(w.dtype), neg.to(w.dtype)
        value = self.wp * pos - self.wn * neg
        grad_scale = self.wp.detach() * pos + self.wn.detach() * neg + (1 - pos - neg)
        latent = w * grad_scale
        return value + latent - latent.detach()

    def final(self, w: torch.Tensor) -> torch.Tensor:
        """The stored weight: three values ``-Wn, 0, Wp`` (float16-exact)."""
        w = w.detach() * (1 if self.mask is None else self.mask)
        pos, neg = self.regions(w)
        wp, wn = self.scales()
        out = torch.zeros_like(w)
        out[pos], out[neg] = wp, -wn
        return out


def attach(module: nn.Module, parametrization: nn.Module) -> None:
    P.register_parametrization(module, "weight", parametrization, unsafe=True)


def shadow(module: nn.Module) -> torch.Tensor:
    """The full-precision shadow weight of a module under a quantisation parametrization."""
    return module.parametrizations.weight.original.detach()


def detach_parametrization(module: nn.Module, value: torch.Tensor) -> None:
    """Remove the parametrization and set the plain weight to ``value`` exactly."""
    P.remove_parametrizations(module, "weight", leave_parametrized=False)
    with torch.no_grad():
        module.weight.copy_(value)
