"""Truncated SVD of linear layers (first step of issue 3: low-rank factorisation).

``W (m×n) ≈ U_k S_k V_kᵀ`` is replaced by two real layers, ``n → k`` (weight ``√S_k V_kᵀ``, no
bias) and ``k → m`` (weight ``U_k √S_k``, the original bias), so the model really has
``k(m + n)`` instead of ``mn`` weights and FLOPs. Pure functions; the stored graph and the ONNX
export see two ordinary linear layers.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from deepshrink.errors import ConfigError

#: Names of the two layers that replace a factorised linear layer ``x`` (``x.first``, ``x.second``);
#: recipes name them in the stages after a low-rank stage.
LINEAR_FACTORS = ("first", "second")


def check_rank(rank: int | float) -> None:
    """Raise a :class:`ConfigError` unless ``rank`` is an int ≥ 1 or a float fraction in (0, 1]."""
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise ConfigError(f"rank must be an int (absolute) or a float (fraction of parameters), got {rank!r}")
    if isinstance(rank, int) and rank < 1:
        raise ConfigError(f"an absolute rank must be ≥ 1, got {rank}")
    if isinstance(rank, float) and not 0 < rank <= 1:
        raise ConfigError(f"a rank fraction must be in (0, 1], got {rank}")


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest k whose singular values hold ``energy`` of the squared spectrum, at most their count."""
    if not 0 < energy <= 1:
        raise ConfigError(f"energy must be in (0, 1], got {energy!r}")
    power = singular_values.double() ** 2
    share = torch.cumsum(power, 0) / power.sum().clamp_min(1e-300)
    return min(len(power), int(torch.searchsorted(share, torch.tensor(energy - 1e-12, dtype=share.dtype))) + 1)


def resolve_rank(rank: int | float, shape: tuple[int, int], singular_values: torch.Tensor | None = None,
                 energy: float | None = None) -> int:
    """The one rank rule: an ``int`` is an absolute rank; a ``float`` in (0, 1] is the fraction of
    the layer's parameters to keep (largest k with k(m + n) ≤ fraction·mn, at least 1); with
    ``energy`` the smallest k whose singular values hold that share of the squared spectrum
    (``rank`` is then ignored). The result is clipped to [1, min(m, n)]."""
    m, n = shape
    full = min(m, n)
    if energy is not None:
        if singular_values is None:
            raise ConfigError("an energy threshold needs the singular values")
        return min(full, energy_rank(singular_values, energy))
    check_rank(rank)
    if isinstance(rank, int):
        return min(rank, full)
    return max(1, min(full, math.floor(rank * m * n / (m + n))))


def truncated_svd(weight: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(A, B)`` with ``A @ B`` the best rank-``k`` approximation of ``weight`` (m×n):
    ``A = U_k √S_k`` (m×k) and ``B = √S_k V_kᵀ`` (k×n), the singular values split evenly."""
    if weight.ndim != 2:
        raise ConfigError(f"truncated_svd needs a matrix, got shape {tuple(weight.shape)}")
    if not 1 <= k <= min(weight.shape):
        raise ConfigError(f"rank must be in 1..{min(weight.shape)}, got {k}")
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:k].sqrt()
    return (u[:, :k] * root).to(weight.dtype), (root[:, None] * vh[:k]).to(weight.dtype)


def factorize_linear(layer: nn.Linear, rank: int | float = 0.5, energy: float | None = None) -> nn.Sequential:
    """Replace ``layer`` by ``Sequential(first: n→k, second: k→m)`` holding its rank-k SVD."""
    w = layer.weight.detach()
    s = torch.linalg.svdvals(w.double()) if energy is not None else None
    k = resolve_rank(rank, tuple(w.shape), s, energy)
    a, b = truncated_svd(w, k)
    first = nn.Linear(w.shape[1], k, bias=False)
    second = nn.Linear(k, w.shape[0], bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(b)
        second.weight.copy_(a)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(OrderedDict(zip(LINEAR_FACTORS, (first, second), strict=True)))
