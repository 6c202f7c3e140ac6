"""``deepshrink analyze``: how sensitive each layer of a trained network is to each technique,
how robust its weights are, and how pruning changes its singular values.

:func:`analyze` measures, per layer and one layer at a time:

- **sensitivity curves**: the validation score and the layer's real coded bytes at each
  setting of each technique of :data:`~deepshrink.analysis.sweep.TECHNIQUES` (pruning rate,
  k-means bits, integer bits, SVD and SLR rank), without retraining;
- **robustness**: the validation score under Gaussian noise of several scales relative to the
  weights' spread, and two second-order estimates of how much the loss rises when a weight moves:
  the diagonal Fisher information and Hutchinson's Hessian trace
  (:mod:`deepshrink.analysis.robustness`);
- **spectra**: the singular values before and after magnitude pruning
  (:mod:`deepshrink.analysis.spectra`): is a pruned layer closer to low rank, or farther?

The result is a plain document (:meth:`Analysis.to_dict`, the schema the HTML report reads) that
``analyze`` writes as JSON and as a self-contained HTML page.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deepshrink.analysis.robustness import NOISE_SCALES
from deepshrink.analysis.sweep import TECHNIQUES, Curve, combos, measure, progress_bar, technique
from deepshrink.coding import Coder
from deepshrink.errors import ConfigError
from deepshrink.util.atomic import write_bytes_atomic

#: The techniques :func:`analyze` measures by default (every registered one).
DEFAULT_TECHNIQUES = tuple(TECHNIQUES)
#: Training samples the Fisher information (and the Hessian trace) average over.
FISHER_SAMPLES = 1000
#: The pruning rate the spectra compare against the dense layer.
SPECTRA_SPARSITY = 0.9


@dataclass
class Analysis:
    """Everything :func:`analyze` measured; :meth:`to_dict` is the JSON document."""

    model: str
    data: str
    metric: str
    baseline_val: float
    dense_bytes: int
    layers: list[dict[str, Any]]
    curves: list[Curve] = field(default_factory=list)
    noise: list[dict[str, Any]] = field(default_factory=list)
    fisher: list[dict[str, Any]] = field(default_factory=list)
    spectra: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "metric": self.metric,
                "seconds": sum(self.seconds.values()), "seconds_by_part": dict(self.seconds),
                "dense_bytes": self.dense_bytes, "baseline": {"val": self.baseline_val}, "layers": self.layers,
                "curves": [c.to_dict() for c in self.curves], "noise": self.noise, "fisher": self.fisher,
                "spectra": self.spectra}

    def write_json(self, path: str | os.PathLike) -> None:
        write_bytes_atomic(path, json.dumps(self.to_dict(), indent=1).encode())

    def html(self) -> str:
        from deepshrink.report import analysis_page

        return analysis_page(self.to_dict())

    def write_html(self, path: str | os.PathLike) -> int:
        """Write the HTML report (atomically); returns its size in bytes."""
        from deepshrink.report import write_page

        return write_page(path, self.html())


def analyze(model: nn.Module, data: Any, *, objective: str = "classify",
            techniques: Sequence[str] = DEFAULT_TECHNIQUES, grids: Mapping[str, Sequence[float]] | None = None,
            coder: Coder | str = Coder.ANS, noise_scales: Sequence[float] = NOISE_SCALES,
            fisher_samples: int = FISHER_SAMPLES, spectra_sparsity: float = SPECTRA_SPARSITY,
            val_limit: int | None = None, progress: bool | None = None, name: str = "model",
            data_name: str = "data") -> Analysis:
    """Analyse trained ``model`` on ``data`` (see the module docstring); the model is not changed.

    Scores are the objective's primary metric on the validation split (its first ``val_limit``
    samples when given), which must not be empty. The model is traced first, so a model with
    operations deepshrink does not support is refused, naming them, before any measurement."""
    from deepshrink.analysis.robustness import fisher_information, hessian_trace, noise_sensitivity
    from deepshrink.analysis.spectra import spectra_before_after
    from deepshrink.graph import fold_batchnorm_modules
    from deepshrink.pipeline.compress import dense_bytes
    from deepshrink.pipeline.context import CompressContext, load_splits
    from deepshrink.prune import current_weight
    from deepshrink.train import get_objective

    for t in techniques:
        technique(t)  # a ConfigError naming the known ones
    if not 0 <= spectra_sparsity < 1:
        raise ConfigError(f"spectra_sparsity must be in [0, 1), got {spectra_sparsity!r}")
    if fisher_samples < 0:
        raise ConfigError(f"fisher_samples must be >= 0, got {fisher_samples!r}")
    if any(not 0 <= s < 100 for s in noise_scales):
        raise ConfigError(f"noise scales must be in [0, 100) (sigma / std of the weights), got {list(noise_scales)}")
    if data.split_sizes().get("val", 0) <= 0:
        raise ConfigError("analyze scores on the validation split, and the data has none (val_size=0)")
    obj = get_objective(objective)
    model = copy.deepcopy(model).eval()
    splits = load_splits(data, obj)
    fold_batchnorm_modules(model, splits["train"].take(slice(0, 4)).inputs)
    ctx = CompressContext.create(model, data, obj, progress=progress, splits=splits)  # traces: refuses bad ops

    def evaluate(m: nn.Module) -> float:
        return float(ctx.evaluate(m, "val", limit=val_limit))

    base = evaluate(model)
    layers = [{"name": n, "kind": k, "shape": list(current_weight(ctx.layers[n]).shape),
               "params": current_weight(ctx.layers[n]).numel(), "dense_bytes": 4 * current_weight(ctx.layers[n]).numel()}
              for n, k in ctx.kinds.items()]
    jobs = [(n, t) for n, k in ctx.kinds.items() for t in techniques if k in technique(t).kinds]
    settings = {t: combos([t], grids) for t in techniques}
    seconds: dict[str, float] = {}
    curves = []
    t0 = time.perf_counter()
    with progress_bar(sum(len(settings[t]) for _, t in jobs), "analyze: sensitivity", progress) as bar:
        for n, t in jobs:
            try:
                pts = measure(model, n, settings[t], evaluate, coder=coder, tick=lambda: bar.update(1))
            except ConfigError:  # e.g. a rank the layer's shape cannot take
                continue
            curves.append(Curve(n, t, pts))
    seconds["sensitivity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    noise = []
    if noise_scales:
        by_layer = noise_sensitivity(model, ctx.layers, evaluate, scales=tuple(noise_scales))
        noise = [{"layer": n, "points": pts} for n, pts in by_layer.items()]
    seconds["noise"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fisher = []
    if fisher_samples:
        batches, loss = ctx.calibration(fisher_samples)
        info = fisher_information(model, ctx.layers, batches, loss)
        hess = hessian_trace(model, ctx.layers, batches, loss)
        fisher = [{"layer": n, "trace": float(v["trace"]), "per_weight": float(v["per_weight"]),
                   "hessian_trace": float(hess[n]["trace"]), "hessian_trace_std": float(hess[n]["std"])}
                  for n, v in info.items()]
    seconds["fisher"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    spectra = []
    for n, k in ctx.kinds.items():
        if k in ("linear", "conv"):
            spectra.append(spectra_before_after(current_weight(ctx.layers[n]).detach(), spectra_sparsity, layer=n))
    seconds["spectra"] = time.perf_counter() - t0
    with torch.no_grad():
        dense = dense_bytes(model, ctx.graph)
    return Analysis(name, data_name, obj.primary, base, dense, layers, curves, noise, fisher, spectra, seconds)
