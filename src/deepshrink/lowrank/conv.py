"""Low-rank convolutions: each scheme replaces one ``Conv2d`` by a ``Sequential`` of smaller real
convolutions, so the stored graph, the runtime and the ONNX export see ordinary conv layers.

* :func:`spatial_svd_conv`, the channel/spatial scheme of Jaderberg, Vedaldi and Zisserman (2014):
  a ``K``-channel ``h×1`` convolution followed by a ``1×w`` one, from the SVD of the kernel
  rearranged as a ``(C·h) × (C'·w)`` matrix (exact at full rank).
* :func:`tucker2_conv`, Tucker-2 on the two channel modes (Kim et al. 2016):
  ``1×1`` (C → r_in), ``h×w`` core (r_in → r_out), ``1×1`` (r_out → C'); computed by
  :func:`tensorly.decomposition.partial_tucker` (HOOI, SVD initialisation).
* :func:`cp_conv`, CP decomposition (Lebedev et al. 2015): ``1×1`` (C → R), depthwise ``h×1``,
  depthwise ``1×w``, ``1×1`` (R → C'); computed by :func:`tensorly.decomposition.parafac`.
  The best rank-R CP approximation of a tensor need not exist (the problem is ill-posed: a
  sequence of rank-R tensors can approach a tensor of higher rank while its components
  diverge and cancel). :func:`cp_conv` measures that and raises :class:`DecompositionError`
  instead of returning such a fit.

Ranks follow the one rank rule of :func:`deepshrink.lowrank.resolve_rank`: an ``int`` is an
absolute rank, a ``float`` in (0, 1] the fraction of the layer's weights to keep.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from deepshrink.errors import ConfigError, DecompositionError
from deepshrink.lowrank.svd import check_rank, energy_rank

#: Names of the layers that replace a factorised convolution ``x`` (``x.reduce``, ...), per scheme.
SPATIAL_FACTORS = ("vertical", "horizontal")
TUCKER_FACTORS = ("reduce", "core", "restore")
CP_FACTORS = ("reduce", "vertical", "horizontal", "restore")


def _check_conv(layer: nn.Module, method: str) -> None:
    if not isinstance(layer, nn.Conv2d):
        raise ConfigError(f"{method} factorisation needs an nn.Conv2d, got {type(layer).__name__}")
    if layer.groups != 1:
        raise ConfigError(f"{method} factorisation needs groups=1, got groups={layer.groups}")
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        raise ConfigError(f"{method} factorisation needs explicit zero padding, got padding={layer.padding!r}, "
                          f"padding_mode={layer.padding_mode!r}")


def _conv(cin: int, cout: int, kernel: tuple[int, int], weight: torch.Tensor, *, stride=(1, 1), padding=(0, 0),
          dilation=(1, 1), groups: int = 1, bias: torch.Tensor | None = None) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape))
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _bias(layer: nn.Conv2d) -> torch.Tensor | None:
    return None if layer.bias is None else layer.bias.detach()


# --- spatial (Jaderberg) SVD -------------------------------------------------------------------

def spatial_rank(rank: int | float, shape: tuple[int, ...]) -> int:
    """Rank ``K`` of the spatial scheme: ``K(C·h + C'·w)`` weights against ``C'·C·h·w``."""
    check_rank(rank)
    cout, cin, h, w = shape
    full = min(cin * h, cout * w)
    if isinstance(rank, int):
        return min(rank, full)
    return max(1, min(full, math.floor(rank * cout * cin * h * w / (cin * h + cout * w))))


def spatial_factors(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(vertical (K, C, h, 1), horizontal (C', K, 1, w))`` whose composition is the best
    rank-``k`` approximation of ``weight`` (C', C, h, w) in the ``(C·h) × (C'·w)`` arrangement."""
    cout, cin, h, w = weight.shape
    m = weight.detach().double().permute(1, 2, 0, 3).reshape(cin * h, cout * w)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:k].sqrt()
    vertical = (u[:, :k] * root).T.reshape(k, cin, h, 1)
    horizontal = (root[:, None] * vh[:k]).reshape(k, cout, w).permute(1, 0, 2).reshape(cout, k, 1, w)
    return vertical.to(weight.dtype), horizontal.to(weight.dtype)


def spatial_svd_conv(layer: nn.Conv2d, rank: int | float = 0.5, energy: float | None = None) -> nn.Sequential:
    """Replace ``layer`` (C → C', h×w) by ``Sequential(vertical: C → K, h×1; horizontal: K → C', 1×w)``."""
    _check_conv(layer, "spatial")
    w = layer.weight.detach()
    cout, cin, h, kw = w.shape
    if energy is not None:
        s = torch.linalg.svdvals(w.double().permute(1, 2, 0, 3).reshape(cin * h, cout * kw))
        k = energy_rank(s, energy)
    else:
        k = spatial_rank(rank, tuple(w.shape))
    vertical, horizontal = spatial_factors(w, k)
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    return nn.Sequential(OrderedDict(zip(SPATIAL_FACTORS, (
        _conv(cin, k, (h, 1), vertical, stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1)),
        _conv(k, cout, (1, kw), horizontal, stride=(1, sw), padding=(0, pw), dilation=(1, dw), bias=_bias(layer)),
    ), strict=True)))


# --- Tucker-2 --------------------------------------------------------------------------------

def tucker_weights(ranks: tuple[int, int], shape: tuple[int, ...]) -> int:
    """Weights of a Tucker-2 factorisation: ``C·r_in + r_in·r_out·h·w + r_out·C'``."""
    (r_out, r_in), (cout, cin, h, w) = ranks, shape
    return cin * r_in + r_in * r_out * h * w + r_out * cout


def tucker_ranks(rank: int | float, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(r_out, r_in)``. An int is used for both channel modes (clipped to each); a fraction f
    scales both modes by the same α (``r = ⌊α·C⌋``, at least 1), the largest α whose
    factorisation keeps at most f of the weights (when even ranks (1, 1) keep more, (1, 1))."""
    check_rank(rank)
    cout, cin, h, w = shape
    if isinstance(rank, int):
        return min(rank, cout), min(rank, cin)
    hw = h * w
    # α² C C' hw + α (C² + C'²) = f C C' hw, then step down until the floored ranks fit
    a, b, c = cin * cout * hw, cin * cin + cout * cout, rank * cin * cout * hw
    alpha = (-b + math.sqrt(b * b + 4 * a * c)) / (2 * a)
    ranks = (max(1, min(cout, math.floor(alpha * cout))), max(1, min(cin, math.floor(alpha * cin))))
    while tucker_weights(ranks, shape) > c and ranks != (1, 1):
        r_out, r_in = ranks
        ranks = (r_out - 1, r_in) if r_out / cout >= r_in / cin and r_out > 1 or r_in == 1 else (r_out, r_in - 1)
    return ranks


def tucker2_factors(weight: torch.Tensor, ranks: tuple[int, int], n_iter_max: int = 100,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(core (r_out, r_in, h, w), out_factor (C', r_out), in_factor (C, r_in))`` with
    ``weight ≈ core ×₀ out_factor ×₁ in_factor``, by tensorly's partial Tucker (HOOI)."""
    import tensorly
    from tensorly.decomposition import partial_tucker

    with tensorly.backend_context("pytorch"):  # torch's thread pool, not a second BLAS one
        (core, (u_out, u_in)), _ = partial_tucker(
            weight.detach().double(), rank=list(ranks), modes=[0, 1], init="svd", n_iter_max=n_iter_max, tol=1e-10,
        )
    return core.to(weight.dtype), u_out.to(weight.dtype), u_in.to(weight.dtype)


def tucker2_conv(layer: nn.Conv2d, rank: int | float = 0.5, energy: float | None = None) -> nn.Sequential:
    """Replace ``layer`` by ``Sequential(reduce: 1×1 C → r_in, core: h×w r_in → r_out, restore: 1×1 r_out → C')``.
    With ``energy`` each mode keeps the smallest rank holding that share of its unfolding's squared
    singular values."""
    _check_conv(layer, "tucker")
    w = layer.weight.detach()
    cout, cin, h, kw = w.shape
    if energy is not None:
        r_out = energy_rank(torch.linalg.svdvals(w.double().reshape(cout, -1)), energy)
        r_in = energy_rank(torch.linalg.svdvals(w.double().transpose(0, 1).reshape(cin, -1)), energy)
    else:
        r_out, r_in = tucker_ranks(rank, tuple(w.shape))
    core, u_out, u_in = tucker2_factors(w, (r_out, r_in))
    return nn.Sequential(OrderedDict(zip(TUCKER_FACTORS, (
        _conv(cin, r_in, (1, 1), u_in.T),
        _conv(r_in, r_out, (h, kw), core, stride=layer.stride, padding=layer.padding, dilation=layer.dilation),
        _conv(r_out, cout, (1, 1), u_out, bias=_bias(layer)),
    ), strict=True)))


# --- CP ----------------------------------------------------------------------------------------

def cp_rank(rank: int | float, shape: tuple[int, ...]) -> int:
    """Rank ``R`` of the CP scheme: ``R(C + h + w + C')`` weights against ``C'·C·h·w``."""
    check_rank(rank)
    cout, cin, h, w = shape
    if isinstance(rank, int):
        return rank
    return max(1, math.floor(rank * cout * cin * h * w / (cin + h + w + cout)))


def cp_degeneracy(lam: np.ndarray, factors: list[np.ndarray]) -> tuple[float, float]:
    """``(congruence, size)`` of the most degenerate pair of CP components: the product over the
    modes of the cosines between their (normalised, sign-adjusted) factors, and the smaller of their
    two norms relative to the norm of the whole fit. Two large components with congruence near −1
    point in opposite directions and cancel: the signature of a diverging fit (Krijnen et al. 2008)."""
    r = len(lam)
    if r < 2:
        return 1.0, 0.0
    unit = [f / np.maximum(np.linalg.norm(f, axis=0), 1e-300) for f in factors]
    cong = np.sign(np.outer(lam, lam))
    for f in unit:
        cong = cong * (f.T @ f)
    approx = float(np.linalg.norm(np.einsum("r,ar,br,cr,dr->abcd", lam, *factors)))
    size = np.minimum.outer(np.abs(lam), np.abs(lam)) / max(approx, 1e-300)
    np.fill_diagonal(cong, 1.0)
    worst = np.unravel_index(np.argmin(np.where(size > 0.5, cong, 1.0)), cong.shape)
    return float(cong[worst]), float(size[worst])


def cp_factors(weight: torch.Tensor, rank: int, *, n_iter_max: int = 500, restarts: int = 3, seed: int = 0,
               max_congruence: float = -0.85) -> tuple[list[torch.Tensor], float]:
    """CP factors ``[A (C', R), B (C, R), Y (h, R), X (w, R)]`` (the weights folded into ``A``)
    and the relative error of the fit: tensorly's ALS from an SVD start (when R fits every mode)
    and from ``restarts`` random starts, the best fit kept.

    Raises :class:`DecompositionError` when that fit is degenerate: two components, each larger
    than half the fit, whose congruence is below ``max_congruence`` (they diverge and cancel:
    the best rank-R approximation does not exist, an ill-posed problem), or when it is not finite."""
    import tensorly
    from tensorly.decomposition import parafac

    t = weight.detach().double().numpy()
    inits = (["svd"] if rank <= min(t.shape) else []) + ["random"] * restarts
    best = None
    for i, init in enumerate(inits):
        with tensorly.backend_context("pytorch"):  # torch's thread pool, not a second BLAS one
            lam, factors = parafac(weight.detach().double(), rank, init=init, n_iter_max=n_iter_max, tol=1e-12,
                                   normalize_factors=True, random_state=seed + i)
        lam, factors = lam.numpy(), [f.numpy() for f in factors]
        approx = np.einsum("r,ar,br,cr,dr->abcd", lam, *factors)
        err = float(np.linalg.norm(approx - t) / max(np.linalg.norm(t), 1e-300))
        if math.isfinite(err) and np.isfinite(lam).all() and (best is None or err < best[0]):
            best = (err, lam, factors)
    if best is None:
        raise DecompositionError(f"CP decomposition of rank {rank} produced non-finite factors")
    err, lam, factors = best
    cong, size = cp_degeneracy(lam, factors)
    if cong < max_congruence:
        raise DecompositionError(
            f"CP decomposition of rank {rank} is degenerate: two components, each at least {size:.1f}× the size of the "
            f"whole fit, point in opposite directions (congruence {cong:.3f}) and cancel. The best rank-{rank} CP "
            "approximation of this kernel does not exist (an ill-posed problem), so ALS diverges. "
            "Use method = \"tucker\" or \"spatial\", or another rank."
        )
    a, b, y, x = (torch.from_numpy(np.ascontiguousarray(f)).to(weight.dtype) for f in factors)
    return [a * torch.from_numpy(lam).to(weight.dtype), b, y, x], err


def cp_conv(layer: nn.Conv2d, rank: int | float = 0.5, **kwargs) -> nn.Sequential:
    """Replace ``layer`` by ``Sequential(reduce: 1×1 C → R, vertical: depthwise h×1,
    horizontal: depthwise 1×w, restore: 1×1 R → C')`` from its rank-R CP decomposition."""
    _check_conv(layer, "cp")
    w = layer.weight.detach()
    cout, cin, h, kw = w.shape
    r = cp_rank(rank, tuple(w.shape))
    (a, b, y, x), _ = cp_factors(w, r, **kwargs)
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    return nn.Sequential(OrderedDict(zip(CP_FACTORS, (
        _conv(cin, r, (1, 1), b.T),
        _conv(r, r, (h, 1), y.T, stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), groups=r),
        _conv(r, r, (1, kw), x.T, stride=(1, sw), padding=(0, pw), dilation=(1, dw), groups=r),
        _conv(r, cout, (1, 1), a, bias=_bias(layer)),
    ), strict=True)))
