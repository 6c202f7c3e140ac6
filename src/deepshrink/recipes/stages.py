"""The stage registry: one class per kind of compression stage.

A stage class is everything about its kind in one place: the settings a recipe gives it (a frozen
dataclass, validated on construction), how they are read from TOML (:meth:`Stage.parse`) and
written back (:meth:`Stage.to_dict`), the checks against a model before any training
(:meth:`Stage.check`), what it does to the model (:meth:`Stage.run`), where it may stand in a
recipe (:attr:`Stage.order`), whether it changes the graph's structure
(:attr:`Stage.changes_graph`) and whether it learns from the dense model (:attr:`Stage.distills`).
Adding a stage is writing one class with :func:`register_stage`; the pipeline only loops
``for stage in recipe.stages: stage.run(model, ctx)``.

Stages act on *layers*: the modules whose op in the graph registry declares a layer kind
(:func:`deepshrink.prune.layer_kind`: ``linear``, ``conv``, ``embedding``, ...). Pruning, sharing
and coding work on every kind, whatever the weight's number of dimensions; low-rank schemes
factorise the layers that have a low-rank form and skip the others unless a rule names them
exactly, which is refused with the reason (:func:`deepshrink.lowrank.no_low_rank_form`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from deepshrink.coding import Coder
from deepshrink.errors import ConfigError
from deepshrink.lowrank import (
    METHODS,
    Importance,
    LowRankMethod,
    NeuronScores,
    as_method,
    check_method,
    factorize,
    low_rank_kind,
    neuron_importance,
    no_low_rank_form,
    weight_counts,
)
from deepshrink.prune import Ramp, apply_mask, current_weight, magnitude_mask, make_permanent, prunable_layers
from deepshrink.recipes.rules import LayerRules
from deepshrink.share import (
    KMeansInit,
    PRIOR_STARTS,
    MixturePrior,
    ShareMethod,
    centroids_of,
    finalize,
    merge_components,
    prior_penalty,
    round_to_half,
    share_module,
    snap,
)
from deepshrink.storage.tensor_codec import DEFAULT_GAP_BITS
from deepshrink.train.loop import TrainConfig, as_enum

if TYPE_CHECKING:
    from deepshrink.pipeline.context import CompressContext

NUM = (int, float)


@dataclass(frozen=True)
class Layer:
    """A layer as a recipe check sees it: its kind and, unless a stage before creates it (the
    factors of a low-rank stage), its module."""

    kind: str
    module: nn.Module | None = None
    fixed_by: str | None = None
    """The stage that stored this layer's weight in a form of its own (integer levels, hashed
    buckets, DCT coefficients): no later stage may change the weight (see :meth:`Stage.touch`)."""
    changed_by: tuple[str, ...] = ()
    """The kinds of the earlier stages that changed this layer's weight."""


def _train(raw: Any, where: str, default: TrainConfig) -> TrainConfig:
    if raw is None:
        return default
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table of training settings")
    fields_ = set(TrainConfig.__dataclass_fields__)
    unknown = set(raw) - fields_
    if unknown:
        raise ConfigError(f"{where}: unknown settings {sorted(unknown)}; allowed: {sorted(fields_)}")
    try:
        return TrainConfig(**{**default.to_dict(), **raw})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_keys(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """A :class:`ConfigError` naming the keys of ``raw`` outside ``allowed``."""
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


class Stage:
    """Base of every stage class. Subclasses are frozen dataclasses with a ``layers`` field of
    per-layer rules and set the class attributes below."""

    kind: ClassVar[str]
    """The stage's ``kind`` in a recipe."""
    order: ClassVar[int]
    """Position among the kinds: a recipe lists stages by increasing ``order``, each kind at most once."""
    changes_graph: ClassVar[bool] = False
    """Whether :meth:`run` replaces modules (the graph must be traced again and the layer table rebuilt)."""
    settings: ClassVar[Mapping[str, type | tuple[type, ...]]] = {}
    """Per-layer setting → allowed types (checked when rules are parsed)."""
    trainings: ClassVar[tuple[str, ...]] = ()
    """Names of the :class:`TrainConfig` fields of the stage (its retraining runs)."""
    stores_form: ClassVar[bool] = False
    """Whether the stage stores the weights it changes in a form of its own (a typed tensor in
    ``ctx.forms`` that the file's encoding writes as it is): later stages may not change them."""
    discards: ClassVar[frozenset[str]] = frozenset()
    """Kinds of earlier stages whose work on a layer this stage would throw away (hashing a layer
    replaces its pruned zeros and shared values by buckets): such a layer is refused."""
    layers: LayerRules

    # recipes ----------------------------------------------------------------------------------

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> Stage:
        """The stage from its recipe table ``raw`` (``kind`` included); :class:`ConfigError` on bad
        input. The keys are the dataclass fields; an absent one takes the field's default (the one
        place of every stage default): ``layers`` is parsed against :attr:`settings`, a training
        table is laid over the field's default :class:`TrainConfig`, other values are validated by
        the dataclass itself."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        check_keys(raw, {"kind", *names}, where)
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in raw:
                continue
            value = raw[f.name]
            if f.name == "layers":
                value = LayerRules.parse(value, cls.settings, where)
            elif f.name in cls.trainings:
                value = _train(value, f"{where}.{f.name}", f.default_factory())  # type: ignore[misc]
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The recipe table of the stage, every setting written (``parse(to_dict())`` is equal)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if hasattr(v, "to_dict") else (v.value if isinstance(v, Enum) else v)
        return out

    @property
    def distills(self) -> bool:
        """Whether a retraining run of the stage learns from the dense model's soft targets."""
        return any(getattr(self, t).distill > 0 for t in self.trainings)

    # before training --------------------------------------------------------------------------

    def check(self, layers: Mapping[str, Layer], *, has_val: bool) -> dict[str, Layer]:
        """Refuse (:class:`ConfigError`) what the stage cannot do on a model with ``layers`` (the
        layers before the stage, in definition order); return the layers after it."""
        return dict(layers)

    def touch(self, layers: Mapping[str, Layer], names: Any) -> dict[str, Layer]:
        """The layers after this stage changes the weights of ``names``: a :class:`ConfigError`
        when an earlier stage stored one of them in a form of its own (hashing followed by
        k-means sharing of the same layer, for example), naming both stages; with
        :attr:`stores_form`, the changed layers are marked as fixed by this stage."""
        out = dict(layers)
        for name in names:
            layer = layers[name]
            if layer.fixed_by is not None:
                raise ConfigError(
                    f"layer {name!r} is stored by the {layer.fixed_by!r} stage in a form of its own; the {self.kind!r} "
                    f"stage cannot change it afterwards (the two cannot compose on one layer). Leave the layer out "
                    f"of one of the two stages' rules")
            lost = [k for k in layer.changed_by if k in self.discards]
            if lost:
                raise ConfigError(
                    f"layer {name!r} was changed by the {lost[0]!r} stage; the {self.kind!r} stage would throw that "
                    f"work away (its stored form does not keep it). Leave the layer out of one of the two stages' rules")
            out[name] = replace(layer, fixed_by=self.kind if self.stores_form else None,
                                changed_by=(*layer.changed_by, self.kind))
        return out

    # running ----------------------------------------------------------------------------------

    def run(self, model: nn.Module, ctx: CompressContext) -> dict[str, Any]:
        """Apply the stage to ``model`` in place; returns what it did, for the report."""
        raise NotImplementedError(f"stage {self.kind!r} has no run")


STAGES: dict[str, type[Stage]] = {}
"""Every stage class by kind, in registration order."""


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: add a stage class to :data:`STAGES` (a kind or order registered twice is a
    programming error)."""
    for other in STAGES.values():
        if other.kind == cls.kind or other.order == cls.order:
            raise TypeError(f"stage {cls.kind!r}: kind or order {cls.order} already used by stage {other.kind!r}")
    STAGES[cls.kind] = cls
    return cls


def _kinds(layers: Mapping[str, Layer]) -> dict[str, str]:
    return {n: layer.kind for n, layer in layers.items()}


# --- prune -------------------------------------------------------------------------------------

@register_stage
@dataclass(frozen=True)
class PruneStage(Stage):
    """Iterative magnitude pruning: ``steps`` cycles of prune → retrain, with per-layer targets
    ``sparsity`` (fraction pruned) or ``quality`` (threshold = quality × std of the layer),
    approached along ``ramp`` (:class:`~deepshrink.prune.Ramp`)."""

    kind: ClassVar[str] = "prune"
    order: ClassVar[int] = 20
    settings: ClassVar[Mapping[str, Any]] = {"sparsity": NUM, "quality": NUM}
    trainings: ClassVar[tuple[str, ...]] = ("retrain",)

    layers: LayerRules = field(default_factory=LayerRules)
    steps: int = 3
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=1e-4))
    ramp: Ramp = Ramp.LINEAR

    def __post_init__(self) -> None:
        object.__setattr__(self, "ramp", as_enum(Ramp, self.ramp, "prune: ramp"))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 100:
            raise ConfigError(f"prune: steps must be an integer in 1..100, got {self.steps!r}")
        for pattern, s in self.layers.rules:
            if "sparsity" in s and "quality" in s:
                raise ConfigError(f"prune: layers.{pattern} gives both sparsity and quality; choose one")
            if "sparsity" in s and not 0 <= s["sparsity"] < 1:
                raise ConfigError(f"prune: layers.{pattern}.sparsity must be in [0, 1), got {s['sparsity']}")
            if "quality" in s and not 0 <= s["quality"] <= 100:
                raise ConfigError(f"prune: layers.{pattern}.quality must be in [0, 100], got {s['quality']}")

    def targets(self, kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Per-layer ``sparsity`` or ``quality`` of the layers the stage prunes."""
        order = list(kinds)
        out = {}
        for name, kind in kinds.items():
            s = self.layers.resolve(name, kind, order, exclusive=[{"sparsity", "quality"}])
            if "sparsity" in s or "quality" in s:
                out[name] = s
        if not out:
            raise ConfigError("prune stage: no layer matches its rules; nothing to prune")
        return out

    def check(self, layers, *, has_val):
        return self.touch(layers, self.targets(_kinds(layers)))

    def run(self, model, ctx):
        targets = self.targets(ctx.kinds)
        layers = ctx.layers
        std0 = {name: float(current_weight(layers[name]).std()) for name in targets}
        hist, reached = [], []
        for step in range(1, self.steps + 1):
            frac = self.ramp.fraction(step, self.steps)
            zeros = total = 0
            for name, s in targets.items():
                w = current_weight(layers[name])
                if "sparsity" in s:
                    mask = magnitude_mask(w, sparsity=s["sparsity"] * frac)
                else:
                    mask = magnitude_mask(w, threshold=s["quality"] * frac * std0[name])
                apply_mask(layers[name], mask)
                zeros, total = zeros + int((mask == 0).sum()), total + mask.numel()
            reached.append(zeros / total)
            hist.append(ctx.fit(model, self.retrain, desc=f"prune {step}/{self.steps}"))
        make_permanent(model)
        return {"val_accuracy_per_step": hist, "sparsity_per_step": reached,
                "targets": {k: dict(v) for k, v in targets.items()}}


# --- low rank ----------------------------------------------------------------------------------

#: The rank settings of a low-rank rule, alternatives of each other.
RANK_KEYS = frozenset({"rank", "energy", "max_drop"})
MAX_DROP_GRID = tuple(round(0.02 * 1.25 ** i, 4) for i in range(18)) + (1.0,)  # 2 % .. 100 % of the weights


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@register_stage
@dataclass(frozen=True)
class LowRankStage(Stage):
    """Low-rank factorisation, then fine-tuning with the zero pattern of sparse (SLR) factors fixed.

    Per layer: ``method`` (``svd`` or ``slr`` for linear layers, ``spatial``, ``tucker`` or ``cp``
    for 2-D convolutions with ``groups == 1``; the stage's ``method`` is the default); the rank as
    ``rank`` (int = absolute, float = fraction of the layer's weights kept, non-zeros for SLR),
    ``energy`` (share of the squared singular values kept) or ``max_drop`` (the smallest rank whose
    validation score, before fine-tuning and with only that layer factorised, drops by at most this
    many points of the objective's primary metric); or ``skip = true``. SLR also takes
    ``reduced_rank`` (r_s: int, or fraction of the rank), ``unimportant`` (fraction of input and of
    output neurons that keep only r_s components) and ``importance`` (``weight``, ``activation`` or
    ``taylor``; the stage's ``importance`` is the default), scored on ``calibration`` training samples.

    Layers without a low-rank form (grouped and depthwise convolutions, 1-D convolutions,
    embeddings) are skipped when a pattern or special key selects them and refused when a rule
    names them exactly; the report lists the skipped layers and why."""

    kind: ClassVar[str] = "lowrank"
    order: ClassVar[int] = 40
    changes_graph: ClassVar[bool] = True
    settings: ClassVar[Mapping[str, Any]] = {
        "method": str, "rank": NUM, "energy": NUM, "max_drop": NUM, "skip": bool, "reduced_rank": NUM,
        "unimportant": NUM, "importance": str}
    trainings: ClassVar[tuple[str, ...]] = ("finetune",)

    layers: LayerRules = field(default_factory=LayerRules)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=3e-4))
    method: LowRankMethod = LowRankMethod.SVD
    importance: Importance = Importance.WEIGHT
    calibration: int = 2048

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", as_method(self.method))
        object.__setattr__(self, "importance", as_enum(Importance, self.importance, "lowrank: importance"))
        if isinstance(self.calibration, bool) or not isinstance(self.calibration, int) or self.calibration < 1:
            raise ConfigError(f"lowrank: calibration (samples) must be a positive integer, got {self.calibration!r}")
        rules = []
        for pattern, s in self.layers.rules:
            where = f"lowrank: layers.{pattern}"
            given = [k for k in ("rank", "energy", "max_drop") if k in s]
            if len(given) > 1:
                raise ConfigError(f"{where} gives {' and '.join(given)}; choose one")
            r = s.get("rank", 1)
            if isinstance(r, bool) or (isinstance(r, int) and r < 1) or (isinstance(r, float) and not 0 < r <= 1):
                raise ConfigError(f"{where}.rank must be an int ≥ 1 or a fraction in (0, 1], got {r!r}")
            if "energy" in s and not 0 < s["energy"] <= 1:
                raise ConfigError(f"{where}.energy must be in (0, 1], got {s['energy']!r}")
            if "max_drop" in s and not 0 <= s["max_drop"] <= 100:
                raise ConfigError(f"{where}.max_drop (points of the primary metric) must be in [0, 100], "
                                  f"got {s['max_drop']!r}")
            s = dict(s)
            if "method" in s:
                s["method"] = as_method(s["method"], where)
            if "importance" in s:
                s["importance"] = as_enum(Importance, s["importance"], f"{where}.importance")
            rs = s.get("reduced_rank", 0.5)
            if isinstance(rs, int) and rs < 0 or isinstance(rs, float) and not 0 <= rs < 1:
                raise ConfigError(f"{where}.reduced_rank must be an int ≥ 0 or a fraction in [0, 1), got {rs!r}")
            if not 0 <= s.get("unimportant", 0.5) < 1:
                raise ConfigError(f"{where}.unimportant must be a fraction in [0, 1), got {s['unimportant']!r}")
            rules.append((pattern, s))
        object.__setattr__(self, "layers", LayerRules(tuple(rules)))

    def plans(self, layers: Mapping[str, nn.Module], kinds: Mapping[str, str],
              ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Settings (``method`` and ``importance`` filled in) of the layers the stage factorises,
        and the layers its rules select that have no low-rank form, with the reason."""
        order = list(layers)
        plans: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        for name, m in layers.items():
            # a more specific rule that gives a rank overrides a broader skip (and a skip a broader rank)
            s = self.layers.resolve(name, kinds[name], order, exclusive=[set(RANK_KEYS) | {"skip"}])
            if s.get("skip") or not RANK_KEYS & set(s):
                continue
            if low_rank_kind(m) is None:
                if self.layers.names(name):
                    raise ConfigError(f"{no_low_rank_form(name, m)}; remove the rule {name!r}")
                skipped[name] = no_low_rank_form(name, m)
                continue
            method = s.get("method", self.method)
            check_method(method, m, f"lowrank: layer {name!r}")
            plans[name] = {**s, "method": method, "importance": s.get("importance", self.importance)}
        if not plans:
            raise ConfigError("lowrank stage: no layer matches its rules; nothing to factorise"
                              + (f" (skipped: {'; '.join(skipped.values())})" if skipped else ""))
        return plans, skipped

    def check(self, layers, *, has_val):
        missing = [n for n, layer in layers.items() if layer.module is None]
        if missing:  # only a stage before could create layers, and low rank comes first among those
            raise ConfigError(f"lowrank: layers {missing} do not exist before the stage")
        plans, _ = self.plans({n: layer.module for n, layer in layers.items()}, _kinds(layers))
        if not has_val and any("max_drop" in p for p in plans.values()):
            raise ConfigError("max_drop chooses ranks by the validation score, and there is no validation "
                              "split (val_size=0); give a rank or energy, or load the data with a validation split")
        after: dict[str, Layer] = {}
        for n, layer in layers.items():  # each factorised layer becomes its factors, in place
            if n in plans:
                after.update({f"{n}.{c}": Layer(layer.kind) for c in METHODS[plans[n]["method"]].factors})
            else:
                after[n] = layer
        return after

    def _search_fraction(self, model: nn.Module, name: str, build, ctx: CompressContext, base: float,
                         max_drop: float) -> float:
        """The smallest weight fraction on :data:`MAX_DROP_GRID` whose factorisation of layer
        ``name`` alone keeps the validation score within ``max_drop`` points of ``base`` (binary
        search; the score is taken as monotone in the fraction)."""
        original = model.get_submodule(name)
        lo, hi = 0, len(MAX_DROP_GRID) - 1
        try:
            while lo < hi:
                mid = (lo + hi) // 2
                _set_module(model, name, build(MAX_DROP_GRID[mid]))
                if 100 * (base - ctx.evaluate(model, "val", limit=ctx.search_samples)) <= max_drop:
                    hi = mid
                else:
                    lo = mid + 1
        finally:
            _set_module(model, name, original)
        return MAX_DROP_GRID[lo]

    def run(self, model, ctx):
        layers = ctx.layers
        plans, skipped = self.plans(layers, ctx.kinds)
        scores: dict[str, NeuronScores] = {}
        slr = {n: p for n, p in plans.items() if p["method"] is LowRankMethod.SLR}
        for strategy in {p["importance"] for p in slr.values()}:
            chosen = {n: layers[n] for n, p in slr.items() if p["importance"] == strategy}
            batches, loss = ctx.calibration(self.calibration)
            scores.update(neuron_importance(model, chosen, strategy, batches, loss))
        base = ctx.evaluate(model, "val", limit=ctx.search_samples) \
            if any("max_drop" in p for p in plans.values()) else float("nan")
        built, report = {}, {}
        for name, p in plans.items():
            layer = layers[name]

            def build(rank, layer=layer, p=p, name=name):
                return factorize(layer, p["method"], rank=rank, energy=p.get("energy"), scores=scores.get(name),
                                 reduced_rank=p.get("reduced_rank", 0.5), unimportant=p.get("unimportant", 0.5))

            rank = self._search_fraction(model, name, build, ctx, base, p["max_drop"]) if "max_drop" in p \
                else p.get("rank", 1.0)
            built[name] = build(rank)
            before, (total, nonzero) = layer.weight.numel(), weight_counts(built[name])
            report[name] = {"method": p["method"].value, "rank": rank, "weights_before": before,
                            "weights_after": total, "nonzero_after": nonzero,
                            "shapes": [list(q.weight.shape) for q in prunable_layers(built[name]).values()]}
            if p["method"] is LowRankMethod.SLR:
                report[name]["importance"] = p["importance"].value
        for name, module in built.items():
            _set_module(model, name, module)
        before = ctx.evaluate(model, "val")
        after = ctx.fit(model, self.finetune, desc="lowrank: fine-tune factors")
        make_permanent(model)  # SLR's fixed zero pattern becomes plain zeros
        return {"layers": report, "skipped": skipped, "val_accuracy_before_finetune": before,
                "val_accuracy_after_finetune": after}


# --- share -------------------------------------------------------------------------------------

#: The per-layer key that makes a share stage share a layer, per method.
SHARE_KEYS = {ShareMethod.KMEANS: "bits", ShareMethod.SOFT: "soft"}


@register_stage
@dataclass(frozen=True)
class ShareStage(Stage):
    """Weight sharing, by one of two methods.

    ``kmeans`` (Han et al. 2016, the default): each layer with ``bits`` gets its own codebook of
    2**bits - 1 centroids plus zero by 1-D k-means, then the centroids are fine-tuned
    (``finetune``).

    ``soft`` (soft weight-sharing, Ullrich et al. 2017; :mod:`deepshrink.share.soft`): the layers
    with ``soft = true`` are retrained (``train``) under one learned Gaussian mixture prior of
    ``components`` components over all their weights together, the zero component's proportion
    fixed at ``zero_mix``; ``tau`` weighs the prior's negative log-likelihood against the data
    loss summed over the training set, as in the paper (the penalty is divided by the number of
    training samples). The precisions have Gamma(shape, rate) hyper-priors (``zero_gamma_*`` for
    the zero component, ``gamma_*`` for the others). Afterwards components closer than
    ``merge_kl`` (symmetric KL divergence) merge and each weight snaps to the mean of its most
    responsible component, zero exactly for the zero component: at most ``components`` values
    in the whole network. A ``finetune`` with epochs > 0 then fine-tunes each layer's snapped
    values as k-means centroids. ``prior_start`` places the mixture at the start: ``even`` (the
    paper) or ``kmeans`` (the weights' own clusters; :func:`deepshrink.share.soft._kmeans_start`).
    Weights that are exactly zero when the stage starts (a prune stage's) stay zero: after
    pruning, the prior clusters the survivors.

    With ``float16`` the shared values and all other parameters (biases) are rounded to float16
    afterwards, halving their stored bytes."""

    kind: ClassVar[str] = "share"
    order: ClassVar[int] = 50
    settings: ClassVar[Mapping[str, Any]] = {"bits": int, "soft": bool}
    trainings: ClassVar[tuple[str, ...]] = ("finetune", "train")

    layers: LayerRules = field(default_factory=LayerRules)
    method: ShareMethod = ShareMethod.KMEANS
    init: KMeansInit = KMeansInit.LINEAR
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=1e-4))
    float16: bool = False
    # soft weight-sharing (method = "soft"); defaults from the paper
    components: int = 16
    tau: float = 5e-3
    zero_mix: float = 0.999
    zero_gamma_shape: float = 5000.0
    zero_gamma_rate: float = 2.0
    gamma_shape: float = 250.0
    gamma_rate: float = 0.1
    merge_kl: float = 1e-2
    prior_start: str = "kmeans"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, lr=5e-4, keep_best=False))

    def __post_init__(self) -> None:
        if not isinstance(self.float16, bool):
            raise ConfigError(f"share: float16 must be true or false, got {self.float16!r}")
        object.__setattr__(self, "init", as_enum(KMeansInit, self.init, "share: init"))
        object.__setattr__(self, "method", as_enum(ShareMethod, self.method, "share: method"))
        c = self.components
        if isinstance(c, bool) or not isinstance(c, int) or not 2 <= c <= 256:
            raise ConfigError(f"share: components (mixture components, the zero one included) must be an integer "
                              f"in 2..256, got {c!r}")
        positive = ("tau", "zero_gamma_rate", "gamma_rate")
        at_least_one = ("zero_gamma_shape", "gamma_shape")  # shape >= 1: a Gamma density with a mode
        for name in (*positive, *at_least_one, "zero_mix", "merge_kl"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, NUM) or not math.isfinite(v):
                raise ConfigError(f"share: {name} must be a finite number, got {v!r}")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"share: {name} must be > 0, got {getattr(self, name)!r}")
        for name in at_least_one:
            if not getattr(self, name) >= 1:
                raise ConfigError(f"share: {name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 < self.zero_mix < 1:
            raise ConfigError(f"share: zero_mix (the zero component's mixing proportion) must be in (0, 1), "
                              f"got {self.zero_mix!r}")
        if self.method is ShareMethod.SOFT and self.train.keep_best:
            raise ConfigError("share: train.keep_best must be false with method 'soft': the weights of the "
                              "best validation epoch are the least clustered ones (the prior tightens them "
                              "epoch after epoch), and the prior trained with them is not restored with them")
        if self.prior_start not in PRIOR_STARTS:
            raise ConfigError(f"share: prior_start must be one of {list(PRIOR_STARTS)}, got {self.prior_start!r}")
        if not self.merge_kl >= 0:
            raise ConfigError(f"share: merge_kl must be >= 0, got {self.merge_kl!r}")
        own = SHARE_KEYS[self.method]
        for pattern, s in self.layers.rules:
            for method, key in SHARE_KEYS.items():
                if key in s and key != own:
                    raise ConfigError(f"share: layers.{pattern}.{key} is a setting of method {method.value!r}, and "
                                      f"the stage's method is {self.method.value!r}; its layers take {own!r}")
            if "bits" in s and not 1 <= s["bits"] <= 16:
                raise ConfigError(f"share: layers.{pattern}.bits must be in 1..16, got {s['bits']}")

    def shared(self, kinds: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Settings of the layers the stage shares: those whose rules give the method's key
        (:data:`SHARE_KEYS`: ``bits`` for k-means, ``soft = true`` for soft weight-sharing)."""
        order, key = list(kinds), SHARE_KEYS[self.method]
        out = {}
        for name, kind in kinds.items():
            s = self.layers.resolve(name, kind, order)
            if s.get(key, False) is not False:
                out[name] = s
        if not out:
            raise ConfigError(f"share stage: no layer matches its rules; nothing to share (method "
                              f"{self.method.value!r} shares the layers whose rules give {key!r})")
        return out

    def bits(self, kinds: Mapping[str, str]) -> dict[str, int]:
        """Bits per layer of the layers the stage shares by k-means."""
        return {name: s["bits"] for name, s in self.shared(kinds).items()}

    def check(self, layers, *, has_val):
        return self.touch(layers, self.shared(_kinds(layers)))

    def run(self, model, ctx):
        report = self._soft(model, ctx) if self.method is ShareMethod.SOFT else self._kmeans(model, ctx)
        if self.float16:
            round_to_half(model)
        return report

    def _kmeans(self, model, ctx):
        layers = ctx.layers
        ks = {}
        for name, bits in self.bits(ctx.kinds).items():
            ks[name] = {"bits": bits, "clusters": share_module(layers[name], bits, init=self.init)}
        before = ctx.evaluate(model, "val")
        after = self._finetune(model, ctx, ks)
        return {"layers": ks, "val_accuracy_before_finetune": before, "val_accuracy_after_finetune": after}

    def _finetune(self, model, ctx, shared):
        """Fine-tune the centroids of the ``shared`` layers and every parameter of the other layers."""
        layers = ctx.layers
        centroids = {id(centroids_of(layers[n])) for n in shared}
        frozen = {id(m.weight) for n, m in layers.items() if n not in shared}
        params = [p for p in model.parameters() if id(p) in centroids or id(p) not in frozen]
        after = ctx.fit(model, self.finetune, params=params, desc="share: fine-tune centroids")
        finalize(model)
        return after

    def _soft(self, model, ctx):
        modules = {n: ctx.layers[n] for n in self.shared(ctx.kinds)}
        prior = MixturePrior(torch.cat([m.weight.detach().reshape(-1) for m in modules.values()]), self.components,
                             zero_mix=self.zero_mix, zero_gamma=(self.zero_gamma_shape, self.zero_gamma_rate),
                             gamma=(self.gamma_shape, self.gamma_rate), start=self.prior_start)
        # weights a prune stage removed (exact zeros) stay removed: the prior clusters the survivors
        for m in modules.values():
            w = m.weight.detach()
            if (w == 0).any():
                apply_mask(m, w != 0)
        penalty = prior_penalty(prior, modules, self.tau, len(ctx.splits["train"]))
        trained = ctx.fit(model, self.train, params=[*model.parameters(), *prior.parameters()],
                          desc="share: soft weight-sharing", penalty=penalty)
        make_permanent(model)
        mixture = prior.mixture()
        merged = merge_components(mixture, self.merge_kl)
        tune = self.finetune.epochs > 0
        layers = snap(modules, merged, tune=tune)
        before = ctx.evaluate(model, "val")
        after = self._finetune(model, ctx, layers) if tune else before
        return {"layers": layers, "components": len(mixture), "components_after_merge": len(merged),
                "means": [float(m) for m in merged.means], "mix": [float(p) for p in merged.mix],
                "val_accuracy_after_training": trained, "val_accuracy_after_snap": before,
                "val_accuracy_after_finetune": after}


# --- code --------------------------------------------------------------------------------------

def default_gap_bits(kind: str | None) -> int | None:
    """The gap width of a layer kind's weights when no rule gives one: the kind's entry in
    :data:`deepshrink.storage.tensor_codec.DEFAULT_GAP_BITS` (the paper's widths), or None (the
    width is chosen per tensor) for a kind without one."""
    return DEFAULT_GAP_BITS.get(kind) if kind is not None else None


def default_gap_rules() -> LayerRules:
    """The code stage's rules when a recipe gives none: each kind's default gap width
    (:data:`deepshrink.storage.tensor_codec.DEFAULT_GAP_BITS`); kinds without one choose per tensor."""
    return LayerRules(tuple((f"_{kind}", {"gap_bits": g}) for kind, g in DEFAULT_GAP_BITS.items()))


@register_stage
@dataclass(frozen=True)
class CodeStage(Stage):
    """Entropy coding of the sparse layout: ``coder`` for every stream, ``gap_bits`` per layer
    (an int in 1..16, or ``"auto"``: the width giving the smallest tensor). The stage changes no
    weight; the pipeline encodes with its coder from this stage on (earlier stages' sizes are
    measured with fixed-length codes)."""

    kind: ClassVar[str] = "code"
    order: ClassVar[int] = 100
    settings: ClassVar[Mapping[str, Any]] = {"gap_bits": (int, str)}

    layers: LayerRules = field(default_factory=default_gap_rules)
    coder: Coder = Coder.HUFFMAN

    def __post_init__(self) -> None:
        object.__setattr__(self, "coder", as_enum(Coder, self.coder, "code: coder"))
        for pattern, s in self.layers.rules:
            g = s.get("gap_bits", "auto")  # absent: the kind's default, valid
            if not (g == "auto" or (isinstance(g, int) and not isinstance(g, bool) and 1 <= g <= 16)):
                raise ConfigError(f"code: layers.{pattern}.gap_bits must be 1..16 or \"auto\", got {g!r}")

    def gap_bits(self, name: str, kind: str, order: list[str]) -> int | None:
        """The gap width of layer ``name`` (None: chosen per tensor)."""
        s = self.layers.resolve(name, kind, order)
        if "gap_bits" not in s:
            return default_gap_bits(kind)
        return None if s["gap_bits"] == "auto" else s["gap_bits"]

    def run(self, model, ctx):
        return {"coder": self.coder.value}



# --- the stages of the other techniques --------------------------------------------------------
# Each registers itself from its own package (imported here, after the base classes, so that
# STAGES is complete wherever it is read): distillation into a student and dense-sparse-dense,
# structured pruning, uniform / binary / ternary quantisation, DCT transform coding and hashing.
import deepshrink.distill.stage  # noqa: E402,F401
import deepshrink.quant.stage  # noqa: E402,F401
import deepshrink.structured.stage  # noqa: E402,F401
import deepshrink.transform.stage  # noqa: E402,F401
