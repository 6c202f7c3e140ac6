"""Weight sharing by 1-D k-means (Han et al. 2016), with centroid fine-tuning.

During fine-tuning each shared layer's weight is a parametrization
(:mod:`torch.nn.utils.parametrize`): ``weight = table[indices]`` with ``table`` the K learnable
centroids followed by a fixed zero for pruned positions. Autograd sums the gradients of all the
weights of a cluster into its centroid, exactly the update of the paper; indices and the pruning
pattern stay fixed. :func:`finalize` removes the parametrization and leaves a plain weight that
holds at most K distinct non-zero values.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import torch
import torch.nn.utils.parametrize as P
from torch import nn

from deepshrink.errors import ConfigError

class KMeansInit(StrEnum):
    """How the centroids start (values are what recipes write): evenly over the weights' range
    (Han et al.'s best), at quantiles of the weights, or at randomly chosen weights."""

    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"


def kmeans_1d(
    values: np.ndarray, k: int, *, init: str = "linear", iters: int = 100, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster 1-D ``values`` into at most ``k`` centroids; returns (centroids float32 sorted,
    labels int64). Lloyd iterations on the sorted values: in one dimension each cluster is a run
    of the sorted values between two midpoints of the sorted centroids, so an iteration is ``k``
    binary searches and differences of prefix sums (O(k log n), not O(n log k): an embedding
    table of millions of weights iterates as fast as a small layer); labels are assigned once,
    at the end."""
    if k < 1:
        raise ConfigError(f"k must be ≥ 1, got {k}")
    try:
        init = KMeansInit(init)
    except ValueError:
        raise ConfigError(f"init must be one of {[i.value for i in KMeansInit]}, got {init!r}") from None
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    k = min(k, int(np.unique(v).size))
    if init == "linear":
        c = _linear_init(v, k)
    elif init == "density":
        c = np.quantile(v, (np.arange(k) + 0.5) / k)
    else:
        c = np.random.default_rng(seed).choice(v, size=k, replace=False)
    c = np.sort(c)
    order = np.argsort(v, kind="stable")
    sv = v[order]
    prefix = np.concatenate([[0.0], np.cumsum(sv)])

    def runs(c: np.ndarray) -> np.ndarray:
        # a value's label is the number of midpoints below it (np.searchsorted(mids, v)): the
        # values up to and including mids[j] have labels <= j
        return np.concatenate([[0], np.searchsorted(sv, (c[1:] + c[:-1]) / 2, side="right"), [sv.size]])

    for _ in range(iters):
        ends = runs(c)
        counts = np.diff(ends)
        sums = prefix[ends[1:]] - prefix[ends[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        if np.allclose(new, c, rtol=0, atol=1e-12):
            c = new
            break
        c = new
    counts = np.diff(runs(c))
    used = counts > 0  # drop empty clusters
    labels = np.empty(v.size, np.int64)
    labels[order] = np.repeat(np.arange(int(used.sum())), counts[used])
    return c[used].astype(np.float32), labels


def _linear_init(v: np.ndarray, k: int) -> np.ndarray:
    """Centroids evenly spaced over the range of the values (Han et al.'s linear initialisation),
    but over the negative and the positive parts separately when both signs occur. After
    pruning, the weights leave a gap around zero; plain ``linspace(min, max)`` would put
    centroids in that gap, where they stay empty and waste code space."""
    neg, pos = v[v < 0], v[v > 0]
    if len(neg) == 0 or len(pos) == 0 or k < 2:
        return np.linspace(v.min(), v.max(), k)
    span_neg, span_pos = neg.max() - neg.min(), pos.max() - pos.min()
    total = span_neg + span_pos
    k_neg = int(round(k * span_neg / total)) if total > 0 else k // 2
    k_neg = min(max(k_neg, 1), k - 1)
    return np.concatenate([np.linspace(neg.min(), neg.max(), k_neg), np.linspace(pos.min(), pos.max(), k - k_neg)])


class SharedWeight(nn.Module):
    """Parametrization ``centroids → cat(centroids, [0])[indices]``."""

    def __init__(self, indices: torch.Tensor, centroids: torch.Tensor):
        super().__init__()
        self.register_buffer("indices", indices)
        self._init = centroids

    def forward(self, centroids: torch.Tensor) -> torch.Tensor:
        table = torch.cat([centroids, centroids.new_zeros(1)])
        return table[self.indices]

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self._init.to(weight.dtype)


def share_module(module: nn.Module, bits: int, *, init: str = "linear") -> int:
    """Cluster the non-zero weights of ``module`` into ``2**bits - 1`` shared values (one symbol of
    the ``bits``-bit alphabet is kept for zero) and attach the parametrization. Returns K."""
    if not 1 <= bits <= 16:
        raise ConfigError(f"bits must be in 1..16, got {bits}")
    w = module.weight.detach()
    flat = w.reshape(-1)
    nz = flat != 0
    k_max = max(1, (1 << bits) - 1)
    centroids, labels = kmeans_1d(flat[nz].cpu().numpy(), k_max, init=init)
    k = len(centroids)
    idx = torch.full_like(flat, k, dtype=torch.long)
    idx[nz] = torch.from_numpy(labels)
    P.register_parametrization(
        module, "weight", SharedWeight(idx.reshape(w.shape), torch.from_numpy(centroids)), unsafe=True
    )
    return k


def centroids_of(module: nn.Module) -> nn.Parameter:
    """The learnable centroid tensor of a shared module."""
    return module.parametrizations.weight.original


def is_shared(module: nn.Module) -> bool:
    return P.is_parametrized(module, "weight") and isinstance(module.parametrizations.weight[0], SharedWeight)


def finalize(model: nn.Module) -> nn.Module:
    """Remove every sharing parametrization, leaving plain weights with the shared values."""
    for m in model.modules():
        if is_shared(m):
            P.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


@torch.no_grad()
def round_to_half(model: nn.Module) -> nn.Module:
    """Round every parameter to the nearest float16 value (kept as float32). Shared weights stay
    shared (their centroids are rounded) and zeros stay zero; storage then keeps codebooks and
    biases in half the bytes, losslessly."""
    for p in model.parameters():
        half = p.to(torch.float16)
        if torch.isfinite(half).all():  # a tensor beyond float16's range stays as it is
            p.copy_(half.to(p.dtype))
    return model
