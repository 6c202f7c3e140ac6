"""Soft weight-sharing (Ullrich, Meeds, Welling, "Soft Weight-Sharing for Neural Network
Compression", ICLR 2017).

Instead of clustering trained weights once (k-means, :mod:`deepshrink.share.kmeans`), the network
is retrained with a learned Gaussian mixture prior over all its shared weights jointly,

    p(w) = prod_i sum_j pi_j N(w_i | mu_j, 1 / lambda_j),

one prior for the whole network. Component 0 has its mean fixed at zero and a fixed large mixing
proportion (the paper's 0.999): it pulls most weights to zero, which prunes without a pruning
stage. The other means, the precisions and the other proportions are learned with the weights,
under Gamma hyper-priors on the precisions that keep a component from collapsing onto one weight.
The loss is the paper's ``-log p(T | X, w) - tau log p(w, mu, lambda, pi)`` divided by the
number of training samples (:class:`CompressContext.fit` averages the data loss over a batch).

After training, components whose Gaussians nearly coincide are merged (the paper merges by KL
divergence), and every weight is set to the mean of its most responsible component (exactly 0
for the zero component): the network then holds at most J distinct weight values, which the
file stores with the sparse codebook layout (:mod:`deepshrink.storage`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
import torch.nn.utils.parametrize as P
from torch import nn

from deepshrink.errors import ConfigError
from deepshrink.share.kmeans import SharedWeight

#: Adam moves a parameter by about ``lr`` per step whatever the scale of its gradient, so a single
#: learning rate can act as several when a parameter is stored divided by a factor: the tensor
#: used is ``factor × stored``, and it moves ``factor × lr`` per step. The factors are the ratios of
#: the paper's learning rates to the weights' 5e-4 (its code: means 1e-4, log-precisions and
#: mixing logits 3e-3). One optimizer, one schedule, one ``lr`` setting (the weights').
MEAN_LR_FACTOR = 0.2
LOG_LR_FACTOR = 6.0

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: Weights per chunk of the mixture's log-likelihood (a 16-component table of 2 MB).
_CHUNK = 32768


class ShareMethod(StrEnum):
    """How a share stage shares weights (values are what recipes write): k-means per layer (Han et
    al. 2016) or soft weight-sharing under one learned mixture prior (Ullrich et al. 2017)."""

    KMEANS = "kmeans"
    SOFT = "soft"


@dataclass(frozen=True)
class Mixture:
    """A fitted mixture as plain arrays, component 0 the zero component: ``means`` (mean 0 first),
    ``log_precisions`` and ``mix`` (proportions summing to one)."""

    means: np.ndarray
    log_precisions: np.ndarray
    mix: np.ndarray

    def __len__(self) -> int:
        return len(self.means)


class MixturePrior(nn.Module):
    """The learned Gaussian mixture prior of soft weight-sharing over a set of weight tensors.

    ``components`` J counts the zero component. The J-1 other means start evenly spaced over the
    range of ``init`` (the weights to share; the paper's initialisation), every standard deviation
    at the spacing of those means (neighbouring components overlap, so every weight is claimed),
    the other proportions equal. ``zero_mix`` is the fixed proportion of the zero component.
    ``zero_gamma`` and ``gamma`` are the (shape, rate) of the Gamma hyper-priors on the precision
    of the zero component and of the others."""

    def __init__(self, init: torch.Tensor, components: int = 16, *, zero_mix: float = 0.999,
                 zero_gamma: Sequence[float] = (5000.0, 2.0), gamma: Sequence[float] = (250.0, 0.1),
                 start: str = "even"):
        super().__init__()
        if not 2 <= components <= 256:
            raise ConfigError(f"components must be in 2..256, got {components}")
        if not 0 < zero_mix < 1:
            raise ConfigError(f"zero_mix must be in (0, 1), got {zero_mix}")
        w = init.detach().reshape(-1).double()
        lo, hi = float(w.min()), float(w.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            raise ConfigError("soft weight-sharing needs finite weights that are not all equal")
        if start not in PRIOR_STARTS:
            raise ConfigError(f"prior start must be one of {list(PRIOR_STARTS)}, got {start!r}")
        k = components - 1
        self.zero_mix = float(zero_mix)
        self.zero_gamma = tuple(float(g) for g in zero_gamma)
        self.gamma = tuple(float(g) for g in gamma)
        if start == "even":
            means = torch.linspace(lo, hi, k, dtype=torch.float64) if k > 1 else torch.tensor([(lo + hi) / 2])
            spacing = (hi - lo) / max(k, 1)
            log_prec = torch.full((components,), -2 * math.log(spacing), dtype=torch.float64)
        else:
            means, log_prec = _kmeans_start(w.numpy(), k, self.zero_gamma)
        self.mean_param = nn.Parameter((means / MEAN_LR_FACTOR).float())
        self.log_prec_param = nn.Parameter((log_prec / LOG_LR_FACTOR).float())
        self.logit_param = nn.Parameter(torch.zeros(k))

    # the mixture's parameters ------------------------------------------------------------------

    def means(self) -> torch.Tensor:
        """All J means, the zero component's (fixed 0) first."""
        return torch.cat([self.mean_param.new_zeros(1), self.mean_param * MEAN_LR_FACTOR])

    def log_precisions(self) -> torch.Tensor:
        return self.log_prec_param * LOG_LR_FACTOR

    def log_mix(self) -> torch.Tensor:
        """Log mixing proportions: ``zero_mix`` for component 0, the rest shared by a softmax."""
        rest = torch.log_softmax(self.logit_param * LOG_LR_FACTOR, 0) + math.log1p(-self.zero_mix)
        return torch.cat([rest.new_full((1,), math.log(self.zero_mix)), rest])

    def mixture(self) -> Mixture:
        with torch.no_grad():
            return Mixture(self.means().double().numpy(), self.log_precisions().double().numpy(),
                           self.log_mix().exp().double().numpy())

    # likelihoods ---------------------------------------------------------------------------------

    def component_log_probs(self, w: torch.Tensor) -> torch.Tensor:
        """``log pi_j + log N(w_i | mu_j, 1/lambda_j)`` for every weight (rows) and component (columns)."""
        lp = self.log_precisions()
        d = w.reshape(-1, 1) - self.means()
        return self.log_mix() + 0.5 * lp - _HALF_LOG_2PI - 0.5 * lp.exp() * d * d

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        """``sum_i log p(w_i)`` under the mixture (:class:`_MixtureLogProb`; the same value as
        ``logsumexp(component_log_probs(w), 1).sum()``, with its gradients in one pass)."""
        return _MixtureLogProb.apply(w.reshape(-1), self.means(), self.log_precisions(), self.log_mix())

    def log_hyperprior(self) -> torch.Tensor:
        """``sum_j log Gamma(lambda_j | shape, rate)`` (the normalising constants dropped: they do not
        depend on anything learned)."""
        lp = self.log_precisions()
        shape = lp.new_tensor([self.zero_gamma[0]] + [self.gamma[0]] * (len(lp) - 1))
        rate = lp.new_tensor([self.zero_gamma[1]] + [self.gamma[1]] * (len(lp) - 1))
        return ((shape - 1) * lp - rate * lp.exp()).sum()

    def nll(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """``-log p(w) - log p(lambda)`` of the weight tensors together (the prior's term of the loss)."""
        return -sum(self.log_prob(w) for w in weights) - self.log_hyperprior()


#: How the mixture starts: ``even`` (the paper: means evenly over the weights' range, every
#: standard deviation at their spacing) or ``kmeans`` (see :func:`_kmeans_start`).
PRIOR_STARTS = ("even", "kmeans")


def _kmeans_start(w: np.ndarray, k: int, zero_gamma: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Means and log-precisions of a mixture started from the weights' own clusters.

    With the paper's even start, a short retraining snaps weights that have not clustered yet,
    and the wide zero component (standard deviation the spacing of the means, proportion 0.999)
    claims nearly all of them (9% validation accuracy after 2 epochs on LeNet-5). Here the non-zero
    weights (exact zeros are pruned weights, already the zero component's) are clustered by 1-D
    k-means into ``k + 1`` clusters; the one nearest zero gives way to the zero component, the
    ``k`` others give the means, each standard deviation its cluster's spread. The zero component
    starts at the mode of its Gamma hyper-prior, as narrow as the prior will hold it."""
    from deepshrink.share.kmeans import kmeans_1d

    v = w[w != 0]
    centroids, labels = kmeans_1d(v, k + 1)
    keep = np.ones(len(centroids), bool)
    keep[np.abs(centroids).argmin()] = False
    std = np.array([v[labels == j].std() if (labels == j).sum() > 1 else 0.0 for j in range(len(centroids))])
    floor = max(float(np.ptp(v)) / 1000, 1e-6)  # a cluster of one weight, or of equal ones, still has a width
    std = np.maximum(std, floor)[keep]
    means = centroids[keep].astype(np.float64)
    if len(means) < k:  # fewer distinct weights than components: the rest start beyond the largest
        extra = np.abs(means).max(initial=1e-2) * (1 + np.arange(1, k - len(means) + 1) / k)
        means, std = np.concatenate([means, extra]), np.concatenate([std, np.full(len(extra), floor)])
    shape, rate = zero_gamma
    zero_lp = math.log(max(shape - 1, 1e-3) / rate)
    log_prec = np.concatenate([[zero_lp], -2 * np.log(std)])
    return torch.from_numpy(means), torch.from_numpy(log_prec)


class _MixtureLogProb(torch.autograd.Function):
    """``sum_i log sum_j pi_j N(w_i | mu_j, 1/lambda_j)`` and its gradients, computed together.

    Autograd through ``logsumexp`` of the N×J component table keeps several N×J tensors and
    walks them about twenty times per step (about 0.27 s for LeNet-5's 430k weights on one core,
    more than the network's own step). With the responsibilities ``R = softmax_j(table)`` every
    gradient is a product of ``R`` with a few vectors:

        d/dw_i     = sum_j R_ij lambda_j (mu_j - w_i)
        d/dmu_j    = lambda_j (sum_i R_ij w_i - mu_j n_j),                n_j = sum_i R_ij
        d/dlog l_j = n_j / 2 - lambda_j / 2 sum_i R_ij (w_i - mu_j)^2
        d/dlog pi_j = n_j

    so the forward pass builds the table once, in place, and keeps only the gradients. It goes
    through the weights in chunks of :data:`_CHUNK`, whose table stays in the cache (1.6× faster
    than one table over LeNet-5's weights)."""

    @staticmethod
    def forward(ctx, w, means, log_prec, log_mix):  # noqa: D102
        lam = log_prec.exp()
        offset = log_mix + 0.5 * log_prec - _HALF_LOG_2PI
        value = w.new_zeros(())
        moments = w.new_zeros(len(means), 3)  # per component: n_j, sum_i R_ij w_i, sum_i R_ij w_i²
        grad_w = torch.empty_like(w)
        for start in range(0, len(w), _CHUNK):
            x = w[start : start + _CHUNK]
            table = x.reshape(-1, 1) - means
            table.square_().mul_(-0.5 * lam).add_(offset)
            top = table.amax(1, keepdim=True)
            r = table.sub_(top).exp_()
            total = r.sum(1, keepdim=True)
            value += (top + total.log()).sum()
            r.div_(total)
            moments += r.T @ torch.stack([torch.ones_like(x), x, x * x], 1)
            grad_w[start : start + _CHUNK] = r @ (lam * means) - (r @ lam) * x
        n, rw, rww = moments.unbind(1)
        grad_means = lam * (rw - means * n)
        grad_log_prec = 0.5 * n - 0.5 * lam * (rww - 2 * means * rw + means * means * n)
        ctx.save_for_backward(grad_w, grad_means, grad_log_prec, n)
        return value

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return tuple(grad * g for g in ctx.saved_tensors)


# after training --------------------------------------------------------------------------------

def _kl(m1: float, lp1: float, m2: float, lp2: float) -> float:
    """KL(N(m1, 1/exp(lp1)) || N(m2, 1/exp(lp2)))."""
    return 0.5 * (lp1 - lp2 + math.exp(lp2 - lp1) + math.exp(lp2) * (m1 - m2) ** 2 - 1)


def merge_components(mix: Mixture, max_kl: float) -> Mixture:
    """Merge the pair of components with the smallest symmetric KL divergence while it is below
    ``max_kl`` (the paper merges components that describe the same weights). A merged component
    keeps the moments of the pair (proportions added, mean and variance moment-matched); merging
    into the zero component keeps its mean at 0 and its variance."""
    means, lps, pis = list(mix.means), list(mix.log_precisions), list(mix.mix)
    while len(means) > 1:
        best, pair = max_kl, None
        for a in range(len(means)):
            for b in range(a + 1, len(means)):
                d = 0.5 * (_kl(means[a], lps[a], means[b], lps[b]) + _kl(means[b], lps[b], means[a], lps[a]))
                if d < best:
                    best, pair = d, (a, b)
        if pair is None:
            break
        a, b = pair
        pi = pis[a] + pis[b]
        if a > 0:
            m = (pis[a] * means[a] + pis[b] * means[b]) / pi
            var = (pis[a] * (math.exp(-lps[a]) + means[a] ** 2) + pis[b] * (math.exp(-lps[b]) + means[b] ** 2)) / pi - m * m
            means[a], lps[a] = m, -math.log(max(var, 1e-30))
        pis[a] = pi
        del means[b], lps[b], pis[b]
    return Mixture(np.array(means), np.array(lps), np.array(pis))


def assign(w: np.ndarray, mix: Mixture) -> np.ndarray:
    """Index of the most responsible component of each weight: ``argmax_j pi_j N(w | mu_j, 1/lambda_j)``."""
    v = np.asarray(w, np.float64).reshape(-1, 1)
    logp = np.log(mix.mix) + 0.5 * mix.log_precisions - 0.5 * np.exp(mix.log_precisions) * (v - mix.means) ** 2
    return logp.argmax(1).reshape(np.shape(w))


@torch.no_grad()
def snap(modules: Mapping[str, nn.Module], mix: Mixture, *, tune: bool = False) -> dict[str, dict[str, int]]:
    """Set every weight of ``modules`` to the mean of its most responsible component of ``mix`` (the
    zero component's weights to exactly 0). With ``tune``, the weights become a
    :class:`~deepshrink.share.SharedWeight` parametrization instead (the used means as learnable
    centroids, zero fixed), for a k-means style centroid fine-tuning; :func:`~deepshrink.share.finalize`
    removes it. Returns, per module, the values it holds and its non-zeros."""
    out = {}
    means = mix.means.astype(np.float32)
    for name, m in modules.items():
        w = m.weight.detach()
        j = assign(w.cpu().numpy(), mix)
        used = np.unique(j[j != 0])
        if tune:  # centroids = the used non-zero means; SharedWeight's index len(used) is the fixed zero
            lookup = np.full(len(means), len(used), np.int64)
            lookup[used] = np.arange(len(used))
            idx = torch.from_numpy(lookup[j]).to(w.device)
            P.register_parametrization(m, "weight", SharedWeight(idx, torch.from_numpy(means[used])), unsafe=True)
        else:
            m.weight.copy_(torch.from_numpy(np.where(j == 0, np.float32(0), means[j])))
        out[name] = {"values": int(len(used)), "nonzero": int((j != 0).sum()), "weights": int(j.size)}
    return out


def prior_penalty(prior: MixturePrior, modules: Mapping[str, nn.Module], tau: float, samples: int):
    """The training penalty of soft weight-sharing: ``tau × (-log p(w) - log p(lambda)) / samples``.
    The paper's loss sums the data term over the ``samples`` training samples; the trainer
    averages it over a batch, so the prior's term is divided by the same count."""
    scale = tau / samples

    def penalty() -> torch.Tensor:
        return scale * prior.nll([m.weight for m in modules.values()])

    return penalty
