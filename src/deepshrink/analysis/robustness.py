"""How robust each layer's weights are: accuracy under injected noise, and second-order estimates.

Two measures of the same question ("how much can this layer's weights move before the network
cares?"), which lossy compression (pruning, sharing, quantisation, low rank) then spends:

* **Noise injection** (:func:`noise_sensitivity`): perturb one layer at a time with Gaussian noise
  whose scale is relative to the layer's own weight spread, and score the whole model. It is the
  black-box, finite-size view: quantisation and sharing errors are roughly such noise.
* **Second order**: the diagonal empirical Fisher information :func:`fisher_information`
  ``E_x[(∂ℓ_x/∂w)²]`` over *samples* (per-sample gradients, not per-batch, else the cross terms
  between samples of a batch leak in), the per-weight curvature estimate behind Optimal Brain Damage
  (LeCun et al. 1990, the saliency ``½ F w²`` of :func:`saliency`) and Fisher pruning (Theis et
  al. 2018); and the Hutchinson estimate of each layer's Hessian trace :func:`hessian_trace`
  (Rademacher probes, Hessian-vector products by double backward), the per-layer sensitivity HAWQ
  (Dong et al. 2019) allocates bit widths by. The Fisher equals the Hessian of the loss at a
  minimum for a well-specified model (Gauss–Newton); comparing the two is a cheap check.

Every function leaves the caller's model as it found it: same weights bit for bit, same
train/eval mode, no gradients left behind, even when the evaluation raises.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from deepshrink.errors import ConfigError

#: Noise scales of :func:`noise_sensitivity`, relative to the standard deviation of the layer's
#: weights: 0 (the unperturbed model) up to noise as large as the weights themselves.
NOISE_SCALES: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
#: Samples per vectorised per-sample-gradient call of :func:`fisher_information` (bounds memory:
#: the call holds one gradient of every analysed weight per sample).
FISHER_CHUNK = 32
#: Rademacher probes of :func:`hessian_trace`.
HUTCHINSON_PROBES = 8


def _weight_param(name: str, module: nn.Module) -> tuple[str, nn.Parameter]:
    """The parameter holding ``module``'s weight (relative name, parameter): ``weight_orig`` for a
    module with a pruning mask attached (the hook multiplies it by the mask at every forward, so the
    pruned positions stay pruned), else ``weight``."""
    attr = "weight_orig" if tprune.is_pruned(module) else "weight"
    p = getattr(module, attr, None)
    if not isinstance(p, nn.Parameter):
        raise ConfigError(f"layer {name!r} ({type(module).__name__}) has no weight parameter to analyse")
    return attr, p


def _check_layers(model: nn.Module, layers: Mapping[str, nn.Module]) -> dict[str, str]:
    """``layer name → qualified parameter name in model`` of each layer's weight; a
    :class:`ConfigError` for an empty mapping or a layer that is not a module of ``model``."""
    if not layers:
        raise ConfigError("no layers to analyse")
    names = {id(m): n for n, m in model.named_modules()}
    out = {}
    for name, module in layers.items():
        if id(module) not in names:
            raise ConfigError(f"layer {name!r} is not a module of the model")
        attr, _ = _weight_param(name, module)
        prefix = names[id(module)]
        out[name] = f"{prefix}.{attr}" if prefix else attr
    return out


def _layer_seed(seed: int, layer: str, repeat: int) -> int:
    """A seed per (seed, layer, draw), independent of which other layers or scales a call analyses,
    so a layer's numbers do not change when the caller adds a layer."""
    return (seed * 1_000_003 + zlib.crc32(layer.encode()) * 7919 + repeat) % (2**63 - 1)


# --- noise injection -----------------------------------------------------------------------------

def noise_sensitivity(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    evaluate: Callable[[nn.Module], float],
    scales: Sequence[float] = NOISE_SCALES,
    repeats: int = 2,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """The score of ``model`` with Gaussian noise ``N(0, (scale·std(W))²)`` added to one layer's
    weight ``W`` at a time, for each scale, averaged over ``repeats`` draws.

    ``evaluate(model)`` scores the whole model (validation accuracy in 0..1). The same
    ``repeats`` noise directions are used at every scale of a layer (common random numbers), so a
    layer's curve is smooth in the scale and scale 0 is the unperturbed model exactly (evaluated
    once). For a pruned layer (mask attached) the noise lands on the kept weights only. The weight
    is restored bit for bit after each evaluation, also when ``evaluate`` raises.

    Returns ``{layer: [{"scale": s, "val": mean score, "std": std over draws}, ...]}`` in the
    order of ``scales``; deterministic for a given ``seed``."""
    _check_layers(model, layers)
    scales = [float(s) for s in scales]
    if not scales or any(not math.isfinite(s) or s < 0 for s in scales):
        raise ConfigError(f"noise scales must be a non-empty list of finite numbers ≥ 0, got {scales}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an int ≥ 1, got {repeats!r}")
    result: dict[str, list[dict]] = {}
    baseline: float | None = None
    for name, module in layers.items():
        _, param = _weight_param(name, module)
        saved = param.detach().clone()
        spread = float(saved.float().std()) if saved.numel() > 1 else float(saved.abs().max())
        rows = []
        try:
            for s in scales:
                if s == 0.0:
                    if baseline is None:
                        baseline = float(evaluate(model))
                    rows.append({"scale": s, "val": baseline, "std": 0.0})
                    continue
                vals = []
                for r in range(repeats):
                    gen = torch.Generator().manual_seed(_layer_seed(seed, name, r))
                    noise = torch.randn(saved.shape, generator=gen, dtype=torch.float32)
                    with torch.no_grad():
                        param.copy_(saved + (s * spread * noise).to(saved.dtype))
                    vals.append(float(evaluate(model)))
                    with torch.no_grad():
                        param.copy_(saved)
                rows.append({"scale": s, "val": float(np.mean(vals)), "std": float(np.std(vals))})
        finally:
            with torch.no_grad():
                param.copy_(saved)
        result[name] = rows
    return result


# --- Fisher information --------------------------------------------------------------------------

def _as_inputs(x: Any) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def _samples(batches: Iterable[tuple[Any, Any]], samples: int | None) -> Iterator[tuple[tuple[torch.Tensor, ...], Any]]:
    """The batches cut to at most ``samples`` samples in total."""
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise ConfigError(f"samples must be an int ≥ 1 or None, got {samples!r}")
    left = samples
    for x, ref in batches:
        xs = _as_inputs(x)
        n = len(xs[0])
        if left is not None:
            if left <= 0:
                return
            if n > left:
                xs, ref, n = tuple(t[:left] for t in xs), (ref[:left] if isinstance(ref, torch.Tensor) else ref), left
            left -= n
        yield xs, ref


class _Frozen:
    """The model in eval mode with its parameters' ``requires_grad`` saved, restored on exit (also
    the mode and any gradients the analysis left)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        self.was = self.model.training
        self.grads = {n: p.requires_grad for n, p in self.model.named_parameters()}
        self.model.eval()
        return self.model

    def __exit__(self, *exc) -> None:
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.grads[n])
            p.grad = None
        self.model.train(self.was)


def _per_sample_vmap(model: nn.Module, keys: list[str], xs: tuple[torch.Tensor, ...], ref: Any,
                     loss: Callable[[torch.Tensor, Any], torch.Tensor]) -> list[torch.Tensor]:
    """Squared per-sample gradients of ``keys`` summed over the batch, with
    ``vmap(grad(·))`` over chunks of :data:`FISHER_CHUNK` samples."""
    from torch.func import functional_call, grad, vmap

    params = dict(model.named_parameters())
    rest = {k: v.detach() for k, v in params.items() if k not in keys}
    rest.update({k: v.detach() for k, v in model.named_buffers()})
    ref_dim = 0 if isinstance(ref, torch.Tensor) else None

    def one(w: dict[str, torch.Tensor], x: tuple[torch.Tensor, ...], r: Any) -> torch.Tensor:
        out = functional_call(model, {**rest, **w}, tuple(t.unsqueeze(0) for t in x))
        return loss(out, r.unsqueeze(0) if isinstance(r, torch.Tensor) else r)

    per_sample = vmap(grad(one), in_dims=(None, 0, ref_dim))
    w = {k: params[k].detach() for k in keys}
    sums = [torch.zeros(params[k].shape, dtype=torch.float64) for k in keys]
    for i in range(0, len(xs[0]), FISHER_CHUNK):
        part = tuple(t[i : i + FISHER_CHUNK] for t in xs)
        r = ref[i : i + FISHER_CHUNK] if ref_dim == 0 else ref
        g = per_sample(w, part, r)
        for s, k in zip(sums, keys):
            s += g[k].double().square().sum(0)
    return sums


def _per_sample_loop(model: nn.Module, keys: list[str], xs: tuple[torch.Tensor, ...], ref: Any,
                     loss: Callable[[torch.Tensor, Any], torch.Tensor]) -> list[torch.Tensor]:
    """The same as :func:`_per_sample_vmap`, one backward pass per sample (for ops vmap cannot batch)."""
    params = dict(model.named_parameters())
    ws = [params[k] for k in keys]
    sums = [torch.zeros(p.shape, dtype=torch.float64) for p in ws]
    for j in range(len(xs[0])):
        r = ref[j : j + 1] if isinstance(ref, torch.Tensor) else ref
        value = loss(model(*(t[j : j + 1] for t in xs)), r)
        for s, g in zip(sums, torch.autograd.grad(value, ws, allow_unused=True)):
            if g is not None:
                s += g.double().square()
    return sums


def fisher_information(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    batches: Iterable[tuple[tuple[torch.Tensor, ...], Any]],
    loss: Callable[[torch.Tensor, Any], torch.Tensor],
    samples: int | None = None,
    *,
    vectorize: bool = True,
) -> dict[str, dict]:
    """The diagonal empirical Fisher information of each layer's weight,
    ``F = E_x[(∂ℓ_x/∂W)²]`` over the samples of ``batches`` (at most ``samples`` of them).

    ``batches`` and ``loss`` are what :meth:`CompressContext.calibration
    <deepshrink.pipeline.context.CompressContext.calibration>` returns: ``(inputs, target)``
    pairs and a loss summed over a batch, called here on batches of one sample. Per-sample
    gradients come from ``torch.func`` (``functional_call`` + ``vmap(grad(·))``, in chunks of
    :data:`FISHER_CHUNK`); when vmap cannot batch an op of the model (or ``vectorize=False``) a
    loop of one backward pass per sample gives the same numbers, slower. The model is evaluated
    in eval mode (no dropout noise, batch-norm running statistics).

    Returns per layer ``{"trace": ΣF, "per_weight": mean F, "diag": F}`` (``diag`` a float32
    array of the weight's shape). Optimal Brain Damage's saliency is :func:`saliency`."""
    keys = _check_layers(model, layers)
    order = list(keys.values())
    sums: list[torch.Tensor] | None = None
    count = 0
    with _Frozen(model):
        params = dict(model.named_parameters())
        for k in order:
            params[k].requires_grad_(True)
        for xs, ref in _samples(batches, samples):
            part = None
            if vectorize:
                try:
                    part = _per_sample_vmap(model, order, xs, ref, loss)
                except (RuntimeError, NotImplementedError, ValueError):
                    vectorize = False  # an op without a batching rule: the loop, from now on
            if part is None:
                part = _per_sample_loop(model, order, xs, ref, loss)
            sums = part if sums is None else [a + b for a, b in zip(sums, part)]
            count += len(xs[0])
    if sums is None or count == 0:
        raise ConfigError("the Fisher information needs calibration samples; none were given")
    out = {}
    for name, s in zip(keys, sums):
        diag = (s / count).numpy()
        out[name] = {"trace": float(diag.sum()), "per_weight": float(diag.mean()), "diag": diag.astype(np.float32)}
    return out


def hessian_trace(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    batches: Iterable[tuple[tuple[torch.Tensor, ...], Any]],
    loss: Callable[[torch.Tensor, Any], torch.Tensor],
    samples: int | None = None,
    probes: int = HUTCHINSON_PROBES,
    seed: int = 0,
) -> dict[str, dict]:
    """Hutchinson's estimate of the trace of each layer's Hessian block of the mean per-sample loss
    (the same normalisation as :func:`fisher_information`): ``tr H = E_v[vᵀHv]`` for Rademacher
    ``v``, with ``Hv`` by double backward through the summed loss of each batch (HAWQ, Dong et al.
    2019, ranks layers by it). One probe vector spans every layer at once; its part on layer ``l``
    estimates that block's trace, as the cross terms have mean zero.

    Returns per layer ``{"trace": estimate, "per_weight": estimate / weights, "std": standard
    error over the probes}``; deterministic for a given ``seed``."""
    keys = _check_layers(model, layers)
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ConfigError(f"probes must be an int ≥ 1, got {probes!r}")
    params = dict(model.named_parameters())
    ws = [params[k] for k in keys.values()]
    # one fixed probe vector per (probe, layer), drawn once: the same v must meet every batch
    vs = []
    for k in range(probes):
        gen = torch.Generator().manual_seed(_layer_seed(seed, "hutchinson", k))
        vs.append([(torch.randint(0, 2, w.shape, generator=gen) * 2 - 1).to(w.dtype) for w in ws])
    quad = np.zeros((probes, len(ws)))
    count = 0
    with _Frozen(model):
        for w in ws:
            w.requires_grad_(True)
        for xs, ref in _samples(batches, samples):
            value = loss(model(*xs), ref)
            grads = torch.autograd.grad(value, ws, create_graph=True, allow_unused=True)
            live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            for k, v in enumerate(vs):
                if not live:
                    break
                dot = sum((grads[i] * v[i]).sum() for i in live)
                hv = torch.autograd.grad(dot, [ws[i] for i in live], retain_graph=True, allow_unused=True)
                for i, h in zip(live, hv):
                    if h is not None:
                        quad[k, i] += float((h.double() * v[i].double()).sum())
            count += len(xs[0])
    if count == 0:
        raise ConfigError("the Hessian trace needs calibration samples; none were given")
    quad /= count
    out = {}
    for i, name in enumerate(keys):
        trace = float(quad[:, i].mean())
        err = float(quad[:, i].std(ddof=1) / math.sqrt(probes)) if probes > 1 else float("nan")
        out[name] = {"trace": trace, "per_weight": trace / ws[i].numel(), "std": err}
    return out


def saliency(weight: torch.Tensor | np.ndarray, fisher_diag: torch.Tensor | np.ndarray) -> np.ndarray:
    """Optimal Brain Damage's saliency of each weight, ``½ F w²`` (LeCun et al. 1990, with the
    Fisher diagonal for the Hessian diagonal as in Theis et al. 2018): the loss increase that
    removing the weight costs to second order. Its ordering against ``|w|`` shows where magnitude
    pruning removes weights the loss cares about. A float64 array of the weight's shape."""
    w = weight.detach().cpu().double().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float64)
    f = (fisher_diag.detach().cpu().double().numpy() if isinstance(fisher_diag, torch.Tensor)
         else np.asarray(fisher_diag, np.float64))
    if w.shape != f.shape:
        raise ConfigError(f"the Fisher diagonal's shape {f.shape} differs from the weight's {w.shape}")
    return 0.5 * f * w * w
