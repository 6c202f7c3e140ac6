"""Singular-value spectra of layer weights before and after pruning: does sparsity make a layer
closer to low rank, or farther?

Pruning and low-rank factorisation are the two structural compressions a recipe chains; whether
they help or fight each other depends on what magnitude pruning does to the spectrum. Removing
the small weights subtracts a sparse matrix of small entries, which is close to noise in the
singular basis: it lowers every singular value a little, but spreads energy over the whole
spectrum, so the pruned matrix can need *more* rank for the same share of its energy.
:func:`spectra_before_after` measures it per layer with three numbers per matrix (dense and
pruned): the spectrum, the rank holding 90% of the squared spectrum (the same energy rule as
:func:`deepshrink.lowrank.svd.energy_rank`), the stable rank ``‖W‖_F² / ‖W‖_2²`` (a smooth,
threshold-free effective rank, Rudelson & Vershynin 2007) and the relative Frobenius error of the
best rank-r approximation at a few ranks (Eckart–Young: ``√(Σ_{i>r} σ_i²) / ‖W‖_F``, read off the
spectrum without forming the approximation).

A convolution's weight ``[out, in, kh, kw]`` is the matrix ``[out, in·kh·kw]``, the reshape its
SVD factorisation (and the im2col product) uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.lowrank.svd import energy_rank
from deepshrink.prune import current_weight, magnitude_mask, prunable_layers

#: Share of the squared spectrum the ``rank90_*`` numbers hold.
ENERGY = 0.9
#: Ranks (as fractions of the full rank ``min(m, n)``) at which the Eckart–Young error is reported.
RANK_FRACTIONS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5)
#: Sparsities of the research-question table (:func:`layer_spectra`).
SPARSITIES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)


def _matrix(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """``weight`` as a float64 matrix ``[out, rest]``; a :class:`ConfigError` for a vector."""
    w = weight.detach().cpu().double().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float64)
    if w.ndim < 2:
        raise ConfigError(f"a singular spectrum needs a matrix or a conv kernel, got shape {w.shape}")
    return w.reshape(w.shape[0], -1)


def singular_spectrum(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """The singular values of ``weight`` (a conv kernel ``[o, i, kh, kw]`` as ``[o, i·kh·kw]``),
    descending, computed in float64."""
    return np.linalg.svd(_matrix(weight), compute_uv=False)


def rank_energy(spectrum: np.ndarray, energy: float = ENERGY) -> int:
    """The smallest rank whose squared singular values hold ``energy`` of the total (0 for a zero matrix)."""
    if not np.any(spectrum):
        return 0
    return energy_rank(torch.from_numpy(np.ascontiguousarray(spectrum)), energy)


def stable_rank(spectrum: np.ndarray) -> float:
    """``‖W‖_F² / ‖W‖_2²``: between 1 (rank one) and the rank (flat spectrum); 0 for a zero matrix."""
    return float((spectrum**2).sum() / spectrum[0] ** 2) if spectrum.size and spectrum[0] > 0 else 0.0


def truncation_error(spectrum: np.ndarray, rank: int) -> float:
    """The relative Frobenius error ``‖W − W_r‖_F / ‖W‖_F`` of the best rank-``rank`` approximation
    (Eckart–Young), from the spectrum alone; 0 for a zero matrix."""
    power = spectrum.astype(np.float64) ** 2
    total = power.sum()
    return float(np.sqrt(power[rank:].sum() / total)) if total > 0 else 0.0


def report_ranks(shape: tuple[int, int], fractions: Sequence[float] = RANK_FRACTIONS) -> list[int]:
    """The ranks of :data:`RANK_FRACTIONS` of the full rank of a ``shape`` matrix (at least 1, no repeats)."""
    full = min(shape)
    return sorted({max(1, min(full, round(f * full))) for f in fractions})


def compare_spectra(dense: torch.Tensor | np.ndarray, pruned: torch.Tensor | np.ndarray, *,
                    layer: str = "", sparsity: float | None = None) -> dict:
    """The spectra record of :func:`spectra_before_after` for a dense weight and any pruned version
    of it (e.g. a pruned and retrained weight read from a compressed file); ``sparsity`` defaults
    to the pruned weight's measured share of zeros."""
    a, b = _matrix(dense), _matrix(pruned)
    if a.shape != b.shape:
        raise ConfigError(f"layer {layer!r}: the pruned weight's shape {b.shape} differs from the dense {a.shape}")
    sd, sp = np.linalg.svd(a, compute_uv=False), np.linalg.svd(b, compute_uv=False)
    ranks = report_ranks(a.shape)
    if sparsity is None:
        sparsity = float((b == 0).mean())
    return {
        "layer": layer,
        "sparsity": float(sparsity),
        "dense": sd.tolist(),
        "pruned": sp.tolist(),
        "rank90_dense": rank_energy(sd),
        "rank90_pruned": rank_energy(sp),
        "stable_rank_dense": stable_rank(sd),
        "stable_rank_pruned": stable_rank(sp),
        "full_rank": min(a.shape),
        "ranks": ranks,
        "error_dense": [truncation_error(sd, r) for r in ranks],
        "error_pruned": [truncation_error(sp, r) for r in ranks],
        # share of the dense matrix's energy the kept weights hold
        "energy_kept": float((sp**2).sum() / (sd**2).sum()) if sd.any() else 0.0,
    }


def spectra_before_after(weight: torch.Tensor | np.ndarray, sparsity: float, *, layer: str = "") -> dict:
    """Magnitude-prune ``weight`` to ``sparsity`` (:func:`deepshrink.prune.magnitude_mask`, the rule
    the prune stage uses, without retraining) and compare the spectra of the dense and the pruned
    matrix: ``{"layer", "sparsity", "dense", "pruned", "rank90_dense", "rank90_pruned",
    "stable_rank_dense", "stable_rank_pruned", "full_rank", "ranks", "error_dense",
    "error_pruned", "energy_kept"}`` (lists of floats, JSON-serialisable). ``error_*[i]`` is the
    relative error of the best rank-``ranks[i]`` approximation."""
    w = weight.detach().cpu() if isinstance(weight, torch.Tensor) else torch.from_numpy(np.asarray(weight))
    mask = magnitude_mask(w, sparsity=sparsity)
    return compare_spectra(w, w * mask.to(w.dtype), layer=layer, sparsity=sparsity)


def layer_spectra(model: nn.Module, sparsities: Iterable[float] = SPARSITIES,
                  layers: Mapping[str, nn.Module] | None = None) -> list[dict]:
    """:func:`spectra_before_after` of every layer of ``model`` (or of ``layers``) at each sparsity."""
    layers = prunable_layers(model) if layers is None else layers
    out = []
    for name, module in layers.items():
        w = current_weight(module)
        if w.ndim < 2:
            continue
        out.extend(spectra_before_after(w, s, layer=name) for s in sparsities)
    return out
