"""The automatic per-layer budget: a target size or accuracy in, the recipe that meets it out.

1. **Measure.** For every layer, each joint setting of the techniques the recipe allows (the
   per-layer settings of its ``prune``, ``share`` and ``quantize`` stages; the grids of
   :mod:`deepshrink.analysis.sweep`) is applied to that layer alone, composed in stage order, and
   measured: the validation score, and the layer's real coded bytes with the recipe's coder.
   When the recipe prunes, each layer is pruned step by step along the sparsity grid with one
   short epoch of the prune stage's retraining per step, and the bit widths are measured on the
   retrained weights (:func:`measure_recovery`): retraining takes back most of a pruning drop and
   little of a sharing one. A control run, the same retraining with nothing pruned, takes out what
   the short retraining costs by itself (:func:`retrain_drift`).
2. **Allocate.** Assuming the layers' losses add up, the frontier is the Pareto set of the
   multiple-choice knapsack: the allocations (one option per layer) that no other beats on both
   total bytes and total drop (:func:`frontier`, exact, built layer by layer). It contains the
   points a Lagrangian sweep of ``bytes + λ · drop`` finds (Shoham & Gersho 1988, for bit
   allocation), and the points between them. It runs from the smallest file to the most accurate.
3. **Retrain and check.** The drops are measured one layer at a time and with less retraining
   than the recipe's, so they order the frontier but do not predict the final score. Each run is
   the recipe at one allocation, every retraining keeping its last epoch (:func:`last_epochs`), so
   nothing in a run selects on the validation split. That split is cut in two (:func:`split_check`):
   the **search half** measures the layers and decides the search; the **confirm half** judges only
   the file the search settled on. A run meets ``max_drop`` when its drop plus z paired standard
   errors does (:func:`paired_drop`, ``Target.confidence``): a finite check cannot tell 0.4 points
   from 0.6. The search keeps the smallest file that passed, which favours the runs the search
   half's noise flattered; the confirm half has chosen nothing, so its drop is an honest estimate
   of the chosen file's. ``max_drop``: a bisection along the frontier in log-bytes, each probe a
   full run of the recipe at that allocation (``search_scale`` < 1 shortens the probes' training:
   cheaper, but it loses accuracy the full run keeps, so it settles on larger files), until the
   smallest point known to meet the target on the search half is within ``search_tolerance`` of
   the largest known to miss it; then that point must meet it on the confirm half as well. A point
   the confirm half rejects counts as a miss, and the bisection resumes above it, up to the most
   accurate point. ``target_bytes``: the most accurate allocation whose
   predicted file fits, then smaller ones while the real file is too large.

The chosen settings are an ordinary recipe (:attr:`Budgeted.recipe`): the base recipe with one
exact-name rule per layer, which ``to_toml`` writes out for the user to read, edit and rerun.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from deepshrink.errors import ConfigError, DeepshrinkError
from deepshrink.analysis.sweep import Point, combos, measure, progress_bar, technique
from deepshrink.recipes.config import Recipe

#: The stage kinds whose per-layer setting the budget chooses, and the technique that measures it.
KNOBS = {"prune": "prune", "share": "share", "quantize": "quantize"}
#: Training epochs of a search probe, as a fraction of the recipe's (at least one epoch each): 1, full
#: runs, by default. Shorter probes are cheaper but lose accuracy the full run would keep, so the
#: search settles on a larger file (measured on LeNet-300-100: 0.25 put a 24 KB point 1.8 points
#: down, where the full recipe loses 0.65).
SEARCH_SCALE = 1.0
#: Training samples of each short retraining of :func:`measure_recovery` (one epoch over them).
RECOVERY_SAMPLES = 8192
#: Share of the validation split that confirms the search's file (:func:`split_check`), and its
#: seed. Judged on the samples that decided the search, the chosen files looked 0.22 points better
#: than on the other half of the validation split (12 searches on the LeNets: 0.15 against 0.37;
#: on test, 0.40): the search keeps the runs its check's noise flattered.
CHECK_SHARE = 0.5
CHECK_SEED = 0
#: One-sided confidence that a run's true drop is within ``max_drop``: a run meets it when its
#: validation drop plus z standard errors (z = 0.84 here) does. Half of a validation split of
#: 10,000 Fashion-MNIST samples gives a drop a standard error of 0.2-0.3 points.
CONFIDENCE = 0.8
#: Most allocations kept on the frontier (spread evenly in log-bytes).
MAX_FRONTIER = 2000
#: The search stops when the smallest allocation known to meet the drop is at most this much
#: larger than the largest known to miss it (relative bytes).
SEARCH_TOLERANCE = 0.08
#: Full runs tried for a byte target before giving up (each one step towards size).
MAX_FULL_RUNS = 3


class TargetUnreachable(DeepshrinkError, ValueError):
    """No allocation of the recipe meets the target; the message names the closest point."""


@dataclass(frozen=True)
class Target:
    """What the budget aims for: a file of at most ``bytes`` bytes (or ``ratio`` times smaller
    than the dense model), the most accurate such; or the smallest file within ``max_drop``
    points of the dense model's validation score, at one-sided ``confidence``: a run meets it when
    its validation drop plus z standard errors does, z the normal quantile of ``confidence`` (0.5:
    the drop itself; see :data:`CONFIDENCE`)."""

    bytes: int | None = None
    ratio: float | None = None
    max_drop: float | None = None
    confidence: float = CONFIDENCE

    @property
    def z(self) -> float:
        """Standard errors added to a run's drop before it is compared with ``max_drop``."""
        from statistics import NormalDist

        return NormalDist().inv_cdf(self.confidence)

    def __post_init__(self) -> None:
        c = self.confidence
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.5 <= c < 1:
            raise ConfigError(f"confidence (that a run's true drop is within max_drop) must be in [0.5, 1), got {c!r}")
        given = [k for k in ("bytes", "ratio", "max_drop") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"give exactly one target of bytes, ratio or max_drop; got {given or 'none'}")
        if self.bytes is not None and (isinstance(self.bytes, bool) or not isinstance(self.bytes, int)
                                       or self.bytes <= 0):
            raise ConfigError(f"target bytes must be a positive integer, got {self.bytes!r}")
        if self.ratio is not None and (not isinstance(self.ratio, (int, float)) or isinstance(self.ratio, bool)
                                       or not math.isfinite(self.ratio) or self.ratio < 1):
            raise ConfigError(f"target ratio must be a finite number >= 1 (dense bytes / file bytes), "
                              f"got {self.ratio!r}")
        if self.max_drop is not None and (not isinstance(self.max_drop, (int, float)) or isinstance(self.max_drop, bool)
                                          or not math.isfinite(self.max_drop) or not 0 <= self.max_drop <= 100):
            raise ConfigError(f"max_drop (points of the validation score the file may lose) must be in [0, 100], "
                              f"got {self.max_drop!r}")

    def max_bytes(self, dense_bytes: int) -> int | None:
        """The byte budget, or None for an accuracy target."""
        if self.bytes is not None:
            return self.bytes
        if self.ratio is not None:
            return int(dense_bytes / self.ratio)
        return None

    def describe(self) -> str:
        if self.bytes is not None:
            return f"at most {self.bytes:,} bytes"
        if self.ratio is not None:
            return f"at least {self.ratio:g}x smaller"
        return (f"within {self.max_drop:g} points of the dense model on validation"
                + (f" at {self.confidence:g} confidence" if self.confidence > 0.5 else ""))


@dataclass(frozen=True)
class Option:
    """One joint setting of one layer (technique -> value), its bytes and measured drop (points)."""

    setting: Mapping[str, float]
    bytes: int
    drop: float


@dataclass(frozen=True)
class Allocation:
    """One setting per layer; ``bytes`` of the layers' weights, ``drop`` the sum of their
    measured drops (points, without retraining)."""

    choice: Mapping[str, Option]
    bytes: int
    drop: float

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "predicted_drop": self.drop,
                "layers": {n: {**o.setting, "bytes": o.bytes, "drop": o.drop} for n, o in self.choice.items()}}


def knobs(recipe: Recipe) -> list[str]:
    """The techniques the budget varies for ``recipe``, in stage order; a :class:`ConfigError`
    when it has none (or a share stage that is not k-means)."""
    out = []
    for stage in recipe.stages:
        if stage.kind in KNOBS:
            if stage.kind == "share" and getattr(stage, "method", "kmeans") != "kmeans":
                raise ConfigError("the budget chooses k-means bits per layer; a share stage with method "
                                  f"{stage.method.value!r} has no per-layer setting it can vary")
            out.append(KNOBS[stage.kind])
    if not out:
        raise ConfigError(f"recipe {recipe.name!r} has no stage whose per-layer setting the budget can choose "
                          f"(it varies {', '.join(f'{k} {technique(t).key}' for k, t in KNOBS.items())})")
    return out


def options(points: Sequence[Point], base_val: float, *, monotone: bool = True) -> list[Option]:
    """Measured points as options: drop in points of the validation score, never below zero
    (a setting that scores above the dense model is noise, not a gain).

    With ``monotone`` the drops are made consistent with what must hold without noise: a higher
    sparsity loses at least as much (isotonic regression along the sparsity grid, for each value of
    the other settings: ``scipy.optimize.isotonic_regression``, which pools neighbours rather than
    trusting the worst), and fewer bits lose at least as much (a running maximum from the widest
    setting down). Each point is measured once, after a short retraining, so its drop carries a few
    tenths of a point of training noise; the fit averages it over neighbouring settings."""
    from scipy.optimize import isotonic_regression

    opts = [Option({k.split(".")[0]: v for k, v in p.setting.items()}, p.bytes, max(0.0, 100 * (base_val - p.val)))
            for p in points]
    if not monotone or not opts or "prune" not in opts[0].setting:
        return opts
    drop = {id(o): o.drop for o in opts}
    groups: dict[tuple, list[Option]] = {}
    for o in opts:
        groups.setdefault(tuple(sorted((k, v) for k, v in o.setting.items() if k != "prune")), []).append(o)
    for group in groups.values():
        group.sort(key=lambda o: o.setting["prune"])
        for o, d in zip(group, isotonic_regression([drop[id(o)] for o in group]).x):
            drop[id(o)] = float(d)
    others = [k for k in opts[0].setting if k != "prune"]
    if len(others) == 1:  # one bit-width setting: fewer bits never lose less
        key = others[0]
        by_sparsity: dict[float, list[Option]] = {}
        for o in opts:
            by_sparsity.setdefault(o.setting["prune"], []).append(o)
        for group in by_sparsity.values():
            worst = 0.0
            for o in sorted(group, key=lambda o: -o.setting[key]):
                worst = max(worst, drop[id(o)])
                drop[id(o)] = worst
    return [replace(o, drop=drop[id(o)]) for o in opts]


def _pareto(items: Sequence[tuple[int, float, Any]]) -> list[tuple[int, float, Any]]:
    """The items no other item beats on both bytes and drop, smallest first (ties: fewer bytes)."""
    out: list[tuple[int, float, Any]] = []
    for item in sorted(items, key=lambda t: (t[0], t[1])):
        if not out or item[1] < out[-1][1] - 1e-12:
            out.append(item)
    return out


def _thin(front: list[tuple[int, float, Any]], max_points: int) -> list[tuple[int, float, Any]]:
    """At most ``max_points`` of a Pareto front, evenly spread in log-bytes, both ends kept."""
    if len(front) <= max_points:
        return front
    logs = np.log([max(1, b) for b, _, _ in front])
    targets = np.linspace(logs[0], logs[-1], max_points)
    keep = sorted({int(np.argmin(np.abs(logs - t))) for t in targets} | {0, len(front) - 1})
    return [front[i] for i in keep]


def frontier(layer_options: Mapping[str, Sequence[Option]], max_points: int = MAX_FRONTIER) -> list[Allocation]:
    """The Pareto frontier of whole-network allocations (multiple-choice knapsack): every
    combination of one option per layer that no other combination beats on both total bytes and
    total drop, smallest file first. Built layer by layer, merging each layer's own Pareto options
    into the running front and dropping what is dominated (exact: a dominated partial allocation
    stays dominated whatever the remaining layers add), thinned to ``max_points`` spread evenly in
    log-bytes when it grows larger. Unlike a Lagrangian sweep, which finds only the points on the
    front's convex hull, this keeps the points between them, so the search can stop near any byte
    budget."""
    if not layer_options or any(not opts for opts in layer_options.values()):
        raise ConfigError("the budget needs at least one measured option for every layer")
    front: list[tuple[int, float, Any]] = [(0, 0.0, ())]
    for name, opts in layer_options.items():
        mine = _pareto([(o.bytes, o.drop, o) for o in opts])
        front = _thin(_pareto([(b + o.bytes, d + o.drop, (*c, (name, o))) for b, d, c in front
                               for _, _, o in mine]), max_points)
    return [Allocation(dict(c), b, d) for b, d, c in front]


def budget_recipe(recipe: Recipe, allocation: Allocation, kinds: Mapping[str, str], name: str | None = None) -> Recipe:
    """``recipe`` with its varied stages' layer rules replaced by one exact-name rule per layer of
    ``allocation``; other settings a layer's rules gave are kept. A layer the allocation does not
    cover gets no rule, so those stages leave it alone."""
    order = list(kinds)
    stages = []
    for stage in recipe.stages:
        tech = KNOBS.get(stage.kind)
        if tech is None or not any(tech in o.setting for o in allocation.choice.values()):
            stages.append(stage)
            continue
        key = technique(tech).key
        rules: dict[str, dict[str, Any]] = {}
        for layer, opt in allocation.choice.items():
            if tech not in opt.setting:
                continue
            kept = stage.layers.resolve(layer, kinds[layer], order)
            if stage.kind == "prune":
                kept.pop("quality", None)
            value = opt.setting[tech]
            rules[layer] = {**kept, key: int(value) if key == "bits" else float(value)}
        raw = stage.to_dict()
        raw["layers"] = rules
        stages.append(type(stage).parse(raw, f"budget ({stage.kind})"))
    return Recipe(name or f"{recipe.name}-budget", tuple(stages),
                  f"The stages of recipe {recipe.name!r} (coder {recipe.code_stage.coder.value}) with per-layer "
                  "settings chosen by deepshrink's automatic budget (deepshrink.analysis.budget).")


def _map_trainings(recipe: Recipe, change: Callable[[Any], Any], steps: Callable[[int], int] | None = None) -> Recipe:
    """``recipe`` with ``change`` applied to every stage's training settings (and ``steps`` to the
    prune stages' number of steps)."""
    stages = []
    for stage in recipe.stages:
        changes = {t: change(getattr(stage, t)) for t in stage.trainings}
        if steps is not None and stage.kind == "prune":
            changes["steps"] = steps(stage.steps)
        stages.append(replace(stage, **changes) if changes else stage)
    return Recipe(recipe.name, tuple(stages), recipe.description)


def scaled(recipe: Recipe, factor: float) -> Recipe:
    """``recipe`` with every training run's epochs times ``factor`` (at least one epoch; a run of
    zero epochs stays zero): the cheap probes of the search."""
    return _map_trainings(
        recipe, lambda cfg: replace(cfg, epochs=max(1, int(round(cfg.epochs * factor)))) if cfg.epochs > 0 else cfg,
        steps=lambda n: max(1, int(round(n * max(factor, 0.5)))))


def last_epochs(recipe: Recipe) -> Recipe:
    """``recipe`` with every training run keeping its last epoch (``keep_best = false``): the
    budget's runs, so that no run selects on the validation split that judges it (the cosine
    schedule ends at a small step, so the last epoch is close to the best)."""
    return _map_trainings(recipe, lambda cfg: replace(cfg, keep_best=False))


@dataclass
class Probe:
    """One run of the recipe at a frontier point: its index, the allocation's bytes, the file's
    bytes, its drop (points) on the search half of the validation split and that drop's standard
    error, whether it was a shortened search run, and whether it met the target there; for a run
    judged on the confirm half, its drop and standard error there and whether it met the target."""

    index: int
    predicted_bytes: int
    file_bytes: int
    val_drop: float
    search: bool
    met: bool
    val_se: float = 0.0
    confirm_drop: float | None = None
    confirm_se: float | None = None
    confirmed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Budgeted:
    """What :func:`auto_compress` chose and ran: the final compression result, the recipe it
    wrote, the frontier, the runs it made and the measured options per layer."""

    result: Any  # CompressionResult
    recipe: Recipe
    target: Target
    allocation: Allocation
    frontier: list[Allocation]
    probes: list[Probe] = field(default_factory=list)
    options: dict[str, list[Option]] = field(default_factory=dict)
    overhead_bytes: int = 0
    base_val: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    measured: Measured | None = None
    """What was measured (give it back as ``measured=`` to skip measuring again)."""
    check_val: float = 0.0
    """The dense model's score on the confirm half of the validation split."""
    check_samples: int = 0

    @property
    def check(self) -> Probe:
        """The full run of the chosen allocation, with its drop on the confirm half."""
        return next(p for p in reversed(self.probes) if not p.search and p.index == self.front_index)

    @property
    def check_drop(self) -> float:
        """The chosen file's drop (points) on the confirm half (on the search half when the data
        could not be split, or for a byte target, whose runs are not confirmed)."""
        c = self.check
        return c.val_drop if c.confirm_drop is None else c.confirm_drop

    @property
    def check_se(self) -> float:
        c = self.check
        return c.val_se if c.confirm_se is None else c.confirm_se

    @property
    def front_index(self) -> int:
        return next(i for i, a in enumerate(self.frontier) if a is self.allocation)

    def to_dict(self) -> dict[str, Any]:
        target = {k: v for k, v in self.target.__dict__.items() if v is not None}
        if self.target.max_drop is None:
            target.pop("confidence")
        return {"target": target,
                "allocation": self.allocation.to_dict(), "overhead_bytes": self.overhead_bytes,
                "baseline_val": self.base_val, "check_val": self.check_val, "check_samples": self.check_samples,
                "check_drop": self.check_drop, "check_se": self.check_se,
                "frontier": [{"bytes": a.bytes, "predicted_drop": a.drop}
                                                            for a in self.frontier],
                "runs": [p.to_dict() for p in self.probes], "seconds": self.seconds,
                "recipe": self.recipe.to_dict()}


def overhead_bytes(model: nn.Module, data: Any, recipe: Recipe, layers: Sequence[str]) -> int:
    """Bytes of the file besides the budgeted layers' weights (header, biases, other layers):
    the model packed with those weights zeroed, minus what the zeroed weights cost. Biases are
    rounded to float16 first when the recipe's share stage does so."""
    from deepshrink.pipeline.compress import coding_rule
    from deepshrink.pipeline.context import layer_table
    from deepshrink.pipeline.pack import pack_model
    from deepshrink.share.kmeans import round_to_half

    m = copy.deepcopy(model)
    mods, kinds = layer_table(m)
    with torch.no_grad():
        for n in layers:
            mods[n].weight.zero_()
    if any(s.kind == "share" and getattr(s, "float16", False) for s in recipe.stages):
        round_to_half(m)
    code = recipe.code_stage
    _, report = pack_model(m, data.input_spec, coding=coding_rule(code, code.coder, list(mods), kinds, {}), verify=False)
    zeroed = sum(t.total_bytes for t in report.tensors if t.name in {f"{n}.weight" for n in layers})
    return report.file_bytes - zeroed


@dataclass
class Measured:
    """What the budget measured on a model: the joint settings' points per layer and the dense
    model's validation score (:meth:`to_dict` / :meth:`from_dict` store it as JSON)."""

    points: dict[str, list[Point]]
    base: float

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "points": {n: [p.to_dict() for p in ps] for n, ps in self.points.items()}}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Measured:
        return cls({n: [Point(p["setting"], p["bytes"], p["val"]) for p in ps] for n, ps in raw["points"].items()},
                   float(raw["base"]))


def measure_options(model: nn.Module, ctx: Any, techs: Sequence[str], *, grids: Mapping[str, Sequence[float]] | None,
                    coder: Any, context: Mapping[str, Any], progress: bool | None) -> tuple[dict[str, list[Point]], float]:
    """Every joint setting of ``techs`` on every layer they apply to, measured (see
    :func:`~deepshrink.analysis.sweep.measure`); returns the points per layer and the dense
    model's validation score."""
    settings = combos(techs, grids)
    layers = [n for n, k in ctx.kinds.items() if all(k in technique(t).kinds for t in techs)]
    if not layers:
        raise ConfigError(f"no layer of the model takes {', '.join(techs)}")
    base = ctx.evaluate(model, "val")
    out: dict[str, list[Point]] = {}
    with progress_bar(len(layers) * len(settings), "measure layers", progress) as pbar:
        for n in layers:
            out[n] = measure(model, n, settings, lambda m: ctx.evaluate(m, "val"), coder=coder, context=context,
                             tick=lambda: pbar.update(1))
    return out, base


def _plain_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its pruning masks applied as plain weights."""
    import torch.nn.utils.prune as tprune

    from deepshrink.prune import current_weight
    from deepshrink.prune.magnitude import make_permanent

    for mod in model.modules():
        if hasattr(mod, "weight_mask") and tprune.is_pruned(mod):
            mod.weight = current_weight(mod)  # the hook's cached product is not a leaf: deepcopy refuses it
    return make_permanent(copy.deepcopy(model))


def measure_recovery(model: nn.Module, ctx: Any, techs: Sequence[str], retrain: Any, *,
                     grids: Mapping[str, Sequence[float]] | None = None, coder: Any = "ans",
                     context: Mapping[str, Any] | None = None, samples: int = RECOVERY_SAMPLES,
                     progress: bool | None = None) -> dict[str, list[Point]]:
    """The joint settings of ``techs`` (``prune`` first) on every layer, measured the way the
    recipe reaches them: each layer alone is pruned step by step along the sparsity grid on a copy
    of the model, each step followed by one epoch of ``retrain`` (the prune stage's retraining) on
    the first ``samples`` training samples; at each step the other techniques' settings (bits)
    are applied to the retrained weights and measured without retraining (validation score and
    coded bytes), as the share stage only fine-tunes centroids. The scores are corrected by a
    control run that retrains the same way with nothing pruned (:func:`retrain_drift`), so a point
    carries what pruning its layer costs and not what the short retraining costs.

    Measured without any retraining, a pruning drop is mostly one that retraining takes back, and
    a sharing drop on a pruned, unretrained network hides in its damage: the frontier then
    prefers few pruned, coarsely shared weights (on LeNet-300-100 a 57 KB allocation chosen that
    way lost 1.0 point, where Deep Compression's 27 KB loses 0.65)."""
    from deepshrink.prune import apply_mask, current_weight, magnitude_mask

    others = [t for t in techs if t != "prune"]
    grid = sorted(float(v) for v in (grids or {}).get("prune", technique("prune").grid))
    settings = combos(others, grids) if others else [{}]
    layers = [n for n, k in ctx.kinds.items() if all(k in technique(t).kinds for t in techs)]
    if not layers:
        raise ConfigError(f"no layer of the model takes {', '.join(techs)}")
    short = short_context(ctx, samples)
    config = replace(retrain, epochs=1)

    def evaluate(m: nn.Module) -> float:
        return float(ctx.evaluate(m, "val"))

    out: dict[str, list[Point]] = {}
    with progress_bar((len(layers) + 1) * len(grid) * len(settings), "measure layers (prune, retrain, share)",
                      progress) as pbar:
        drift = retrain_drift(model, short, config, grid, evaluate, tick=lambda: pbar.update(len(settings)))
        for name in layers:
            m = copy.deepcopy(model)
            layer = m.get_submodule(name)
            out[name] = []
            for sp in grid:
                if sp > 0:
                    apply_mask(layer, magnitude_mask(current_weight(layer), sparsity=sp))
                    short.fit(m, config, desc=f"budget: retrain {name} at {sp:g}")
                plain = _plain_copy(m)  # masks made permanent: the settings change plain weights
                for p in measure(plain, name, settings, evaluate, coder=coder, context=context,
                                 tick=lambda: pbar.update(1)):
                    keys = {k if "." in k else f"{technique(others[0]).stage}.{k}": v for k, v in p.setting.items()}
                    out[name].append(Point({"prune.sparsity": sp, **keys}, p.bytes, p.val + drift[sp]))
    return out


def short_context(ctx: Any, samples: int = RECOVERY_SAMPLES) -> Any:
    """``ctx`` training on its first ``samples`` training samples only, without progress bars."""
    import dataclasses

    n = min(samples, len(ctx.splits["train"]))
    teacher = ctx.teacher["train"]
    return dataclasses.replace(ctx, splits={**ctx.splits, "train": ctx.splits["train"].take(slice(0, n))},
                               teacher={**ctx.teacher, "train": None if teacher is None else teacher[:n]},
                               progress=False)


def retrain_drift(model: nn.Module, short: Any, config: Any, grid: Sequence[float],
                  evaluate: Callable[[nn.Module], float], tick: Callable[[], None] | None = None) -> dict[float, float]:
    """What the short retraining of :func:`measure_recovery` costs by itself: the dense model
    retrained step by step along ``grid`` exactly as a pruned layer is (the same epochs on the same
    samples in the same order), with nothing pruned. Returns, per sparsity, the score to add back
    to a point measured after that many retraining steps: the control's loss against the dense
    model, made non-decreasing along the grid (isotonic regression: more epochs on a small subset
    never help on average, and one control run carries a few tenths of a point of noise).

    Without it every pruned layer is charged the retraining's own loss, and the losses add up
    over layers: on LeNet-5 (seed 0) one epoch on 8,192 samples cost the dense model 0.5 points and
    fourteen cost 1.0, so the frontier left conv2 and the classifier unpruned (13 KB and 5 KB of
    a 42 KB file) where Deep Compression prunes them to 15% and 20%."""
    from scipy.optimize import isotonic_regression

    m = copy.deepcopy(model)
    base, losses = evaluate(m), []
    for sp in grid:
        if sp > 0:
            short.fit(m, config, desc="budget: control (retrain, nothing pruned)")
        losses.append(max(0.0, base - evaluate(m)) if sp > 0 else 0.0)
        if tick is not None:
            tick()
    fit = isotonic_regression(losses).x
    return {sp: float(v) for sp, v in zip(grid, fit)}


def split_check(data: Any, share: float = CHECK_SHARE, seed: int = CHECK_SEED) -> tuple[Any, Any]:
    """``data`` with part of its validation split held out, and the held-out part as data of its
    own (its validation split): ``(search data, confirm data)``. The budget measures, runs and
    decides its search on the search data; the confirm samples judge only the file it settled on.
    ``(data, None)`` when ``data`` is not a :class:`~deepshrink.data.Dataset` or its validation
    split has fewer than two samples."""
    from deepshrink.data import Dataset

    n = data.split_sizes().get("val", 0)
    if not isinstance(data, Dataset) or n < 2:
        return data, None
    order = np.random.default_rng(seed).permutation(n)
    cut = min(n - 1, max(1, int(round(n * share))))
    held, kept = np.sort(order[:cut]), np.sort(order[cut:])
    return (replace(data, x_val=data.x_val[kept], y_val=data.y_val[kept]),
            replace(data, x_val=data.x_val[held], y_val=data.y_val[held]))


@dataclass
class _Setup:
    """What measuring and running the budget share: the model (a copy, batch norms folded), the
    search data and its context, the confirm half's context (the search context when the data
    cannot be split) and the recipe with every retraining keeping its last epoch."""

    model: nn.Module
    data: Any
    ctx: Any
    confirm: Any
    split: bool
    recipe: Recipe
    techs: list[str]
    objective: Any


def _setup(model: nn.Module, data: Any, recipe: Recipe, objective: str, progress: bool | None) -> _Setup:
    from deepshrink.graph import fold_batchnorm_modules
    from deepshrink.pipeline.compress import check_recipe
    from deepshrink.pipeline.context import CompressContext, load_splits
    from deepshrink.train import get_objective

    techs = knobs(recipe)
    if data.split_sizes().get("val", 0) <= 0:
        raise ConfigError("the budget measures and checks on the validation split, and the data has none "
                          "(val_size=0): give a validation split")
    obj = get_objective(objective)
    model = copy.deepcopy(model).eval()
    check_recipe(model, recipe, has_val=True)
    data, held = split_check(data)
    splits = load_splits(data, obj)
    fold_batchnorm_modules(model, splits["train"].take(slice(0, 4)).inputs)
    ctx = CompressContext.create(model, data, obj, progress=progress, splits=splits, teach_train=recipe.distills)
    confirm = ctx if held is None else CompressContext.create(model, held, obj, progress=False,
                                                              splits=load_splits(held, obj))
    return _Setup(model, data, ctx, confirm, held is not None, last_epochs(recipe), techs, obj)


def _measure(setup: _Setup, grids: Mapping[str, Sequence[float]] | None, progress: bool | None) -> Measured:
    model, ctx, techs, recipe = setup.model, setup.ctx, setup.techs, setup.recipe
    share = next((s for s in recipe.stages if s.kind == "share"), None)
    context = {"init": getattr(share, "init", "linear"), "float16": bool(getattr(share, "float16", False))}
    prune = next((s for s in recipe.stages if s.kind == "prune"), None)
    if prune is None:
        points, base = measure_options(model, ctx, techs, grids=grids, coder=recipe.code_stage.coder,
                                       context=context, progress=progress)
        return Measured(points, base)
    points = measure_recovery(model, ctx, techs, prune.retrain, grids=grids, coder=recipe.code_stage.coder,
                              context=context, progress=progress)
    return Measured(points, float(ctx.evaluate(model, "val")))


def measure_budget(model: nn.Module, data: Any, recipe: Recipe, *, objective: str = "classify",
                   grids: Mapping[str, Sequence[float]] | None = None, progress: bool | None = None) -> Measured:
    """Step 1 of :func:`auto_compress` alone: every layer's options under ``recipe``, measured on
    the search half of ``data``'s validation split (:func:`split_check`). Give the result to
    :func:`auto_compress` as ``measured=`` to run several targets on one measurement."""
    return _measure(_setup(model, data, recipe, objective, progress), grids, progress)


def paired_drop(base: nn.Module | torch.Tensor, other: nn.Module, ctx: Any, split: str = "val") -> tuple[float, float]:
    """The drop of ``other`` against ``base`` (a model, or its :meth:`per_sample` scores) on
    ``ctx``'s ``split``, in points of the objective's primary metric, and its standard error. The
    samples are paired, so the error is the standard deviation of the per-sample differences over
    sqrt(samples): far smaller than two independent scores' errors, since most samples are right
    (or wrong) for both models. An objective without per-sample scores gives an error of 0."""
    ref = base if isinstance(base, torch.Tensor) else ctx.per_sample(base, split)
    mine = ctx.per_sample(other, split)
    if ref is None or mine is None:
        dense = float(ctx.evaluate(base, split)) if isinstance(base, nn.Module) else float(base.mean())
        return 100 * (dense - float(ctx.evaluate(other, split))), 0.0
    diff = ref - mine
    se = float(diff.std() / math.sqrt(diff.numel())) if diff.numel() > 1 else 0.0
    return 100 * float(diff.mean()), 100 * se


def auto_compress(model: nn.Module, data: Any, recipe: Recipe, target: Target, *, objective: str = "classify",
                  search_scale: float = SEARCH_SCALE, search_tolerance: float = SEARCH_TOLERANCE, grids: Mapping[str, Sequence[float]] | None = None,
                  progress: bool | None = None, log: Callable[[str], None] | None = None,
                  measured: Measured | None = None) -> Budgeted:
    """Compress ``model`` on ``data`` with ``recipe``'s stages, their per-layer settings chosen to
    meet ``target`` (see the module docstring). ``measured``: what an earlier call on the same
    model, data and recipe measured (:attr:`Budgeted.measured`, or :func:`measure_budget`), to skip
    measuring again. Raises :class:`TargetUnreachable`, naming the
    closest point, when no allocation meets it; a :class:`ConfigError` for a recipe with nothing
    to vary or data without a validation split."""
    import time

    from deepshrink.pipeline.compress import compress, dense_bytes
    from deepshrink.runtime import load

    say = log or (lambda _msg: None)
    if not 0 < search_scale <= 1:
        raise ConfigError(f"search_scale must be in (0, 1], got {search_scale!r}")
    z = target.z
    setup = _setup(model, data, recipe, objective, progress)
    model, data, ctx, confirm, recipe, techs, obj = (setup.model, setup.data, setup.ctx, setup.confirm,
                                                     setup.recipe, setup.techs, setup.objective)
    if not setup.split:
        say("the data cannot be split (not a Dataset, or a validation split of one sample): the file the search "
            "settles on is confirmed on the samples that decided the search, which flatters it")

    def reference(c: Any) -> Any:  # the dense model's per-sample scores, once (the model itself without them)
        scores = c.per_sample(model, "val")
        return model if scores is None else scores

    search_ref = reference(ctx)
    confirm_ref = reference(confirm) if setup.split else search_ref
    confirm_base = float(confirm.evaluate(model, "val"))
    dense = dense_bytes(model, ctx.graph)
    limit = target.max_bytes(dense)
    t0 = time.perf_counter()
    given = measured is not None
    if measured is None:
        measured = _measure(setup, grids, progress)
    points, base = measured.points, measured.base
    if set(points) != {n for n, k in ctx.kinds.items() if all(k in technique(t).kinds for t in techs)}:
        raise ConfigError("the measured points given do not cover this model's layers")
    opts = {n: options(p, base) for n, p in points.items()}
    front = frontier(opts)
    overhead = overhead_bytes(model, data, recipe, list(opts))
    seconds = {"measure": time.perf_counter() - t0}
    how = "given" if given else f"measured in {seconds['measure']:.0f} s"
    say(f"{sum(len(p) for p in points.values())} settings on {len(points)} layers ({how}); "
        f"{len(front)} allocations on the frontier, "
        f"{overhead + front[0].bytes:,}..{overhead + front[-1].bytes:,} bytes")
    probes: list[Probe] = []
    cache: dict[tuple[int, bool], Any] = {}

    def run(i: int, search: bool) -> Any:
        search = search and search_scale < 1  # a probe at full scale is the full run
        if (i, search) in cache:
            return cache[(i, search)]
        r = budget_recipe(recipe, front[i], ctx.kinds)
        res = compress(model, data, scaled(r, search_scale) if search else r, progress=progress, objective=obj)
        drop, se = paired_drop(search_ref, load(res.data), ctx)
        met = res.file_bytes <= limit if limit is not None else drop + z * se <= target.max_drop + 1e-9
        probes.append(Probe(i, overhead + front[i].bytes, res.file_bytes, drop, search, met, se))
        bound = f" (+{z:.2f} SE: {drop + z * se:.2f})" if limit is None and z > 0 else ""
        say(f"{'search' if search else 'full'} run at frontier point {i + 1}/{len(front)}: "
            f"{res.file_bytes:,} bytes ({dense / res.file_bytes:.1f}x), validation drop {drop:.2f} ± {se:.2f} "
            f"points{bound} -> {'meets' if met else 'misses'} the target")
        if limit is None and len(probes) == 1 and z * se > target.max_drop / 2:
            say(f"warning: the search half of the validation split has {len(ctx.splits['val']):,} samples; its "
                f"standard error ({se:.2f} points) times {z:.2f} takes {z * se:.2f} of the {target.max_drop:g} "
                f"points allowed, so the budget settles on larger files; a larger validation split (val_size) "
                f"narrows it")
        cache[(i, search)] = (res, met)
        return res, met

    def confirmed(i: int) -> tuple[Any, bool]:
        """The full run at ``i``, judged on the confirm half (the search half when there is none)."""
        res, met = run(i, False)
        probe = next(p for p in reversed(probes) if p.index == i and not p.search)
        if probe.confirmed is None and met:
            probe.confirm_drop, probe.confirm_se = paired_drop(confirm_ref, load(res.data), confirm)
            probe.confirmed = (met if limit is not None
                               else probe.confirm_drop + z * probe.confirm_se <= target.max_drop + 1e-9)
            if limit is None and setup.split:
                say(f"confirm half ({len(confirm.splits['val']):,} samples, unused by the search): frontier point "
                    f"{i + 1} drops {probe.confirm_drop:.2f} ± {probe.confirm_se:.2f} points (+{z:.2f} SE: "
                    f"{probe.confirm_drop + z * probe.confirm_se:.2f}) -> "
                    f"{'confirmed' if probe.confirmed else 'not confirmed'}")
        return res, bool(probe.confirmed)

    t1 = time.perf_counter()
    if limit is not None:
        fits = [i for i, a in enumerate(front) if overhead + a.bytes <= limit]
        if limit <= overhead:
            raise TargetUnreachable(
                f"a target of {limit:,} bytes is smaller than the part of the file the budget cannot shrink: "
                f"{overhead:,} bytes of header, biases and unbudgeted tensors; the smallest file recipe "
                f"{recipe.name!r} reaches is about {overhead + front[0].bytes:,} bytes")
        if not fits:
            raise TargetUnreachable(
                f"no allocation of recipe {recipe.name!r} fits in {limit:,} bytes: the smallest it reaches is "
                f"about {overhead + front[0].bytes:,} bytes ({dense / (overhead + front[0].bytes):.1f}x; "
                f"{overhead:,} of them header, biases and unbudgeted tensors), at the most aggressive setting of "
                f"every layer")
        i = fits[-1]
        for _ in range(MAX_FULL_RUNS):
            res, met = confirmed(i)
            if met:
                break
            # the real file was larger than predicted: scale the budget by the miss and step down
            want = limit - (res.file_bytes - (overhead + front[i].bytes))
            smaller = [j for j in range(i) if overhead + front[j].bytes <= want] or ([i - 1] if i > 0 else [])
            if not smaller:
                break
            i = smaller[-1]
        if not met:
            raise TargetUnreachable(f"the files of recipe {recipe.name!r} stayed above {limit:,} bytes after "
                                    f"{MAX_FULL_RUNS} runs; the closest was {min(p.file_bytes for p in probes):,} bytes")
    else:
        # bisection in log-bytes: ``lo`` is the largest point known to miss (-1: none yet), ``hi`` the
        # smallest known (or, for the most accurate point, assumed) to meet the target on the search
        # half. The confirm half then judges ``hi``; a point it rejects counts as a miss, and the
        # bisection resumes above it.
        lo, hi = -1, len(front) - 1
        last = hi
        while True:
            while hi - lo > 1 and (lo < 0 or front[hi].bytes > (1 + search_tolerance) * front[lo].bytes):
                floor = front[lo].bytes if lo >= 0 else front[0].bytes
                middle = math.sqrt(floor * front[hi].bytes)
                mid = min(range(lo + 1, hi), key=lambda j: abs(math.log(front[j].bytes / middle)))
                _, ok = run(mid, True)
                if ok:
                    hi = mid
                else:
                    lo = mid
            res, met = run(hi, False)
            if met:
                res, met = confirmed(hi)
            if met or hi == last:
                break
            lo = hi
            hi = min((p.index for p in probes if p.met and p.index > lo), default=last)
        i = hi
        if not met:
            # the closest run: by the confirm half among the runs it judged, else by the search half
            def bound(p: Probe) -> tuple[float, float, str]:
                return ((p.val_drop, p.val_se, "search") if p.confirm_drop is None
                        else (p.confirm_drop, p.confirm_se, "confirm"))

            judged = [p for p in probes if p.confirm_drop is not None] or [p for p in probes if not p.search]
            best = min(judged, key=lambda p: bound(p)[0] + z * bound(p)[1])
            drop, se, half = bound(best)
            raise TargetUnreachable(
                f"no run of recipe {recipe.name!r} kept within {target.max_drop:g} points on validation at "
                f"{target.confidence:g} confidence; the closest lost {drop:.2f} ± {se:.2f} points (on the {half} "
                f"half of the validation split) at "
                f"{best.file_bytes:,} bytes "
                f"({dense / best.file_bytes:.1f}x; frontier point {best.index + 1} of {len(front)})")
    seconds["runs"] = time.perf_counter() - t1
    chosen = budget_recipe(recipe, front[i], ctx.kinds)
    return Budgeted(res, chosen, target, front[i], front, probes, opts, overhead, base, seconds, measured,
                    confirm_base, len(confirm.splits["val"]))
