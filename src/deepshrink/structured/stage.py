"""Stage ``structured``: remove whole neurons and channels, retrain, repeat.

Unstructured pruning leaves a network of the same shape whose zeros only a sparse kernel or a
sparse file format can use; removing whole output channels (Li et al., *Pruning Filters for
Efficient ConvNets*, ICLR 2017; Molchanov et al., ICLR 2017, for the Taylor criterion) gives a
smaller dense network that is faster with any dense kernel, and whose stored graph shows the
smaller layers. The stage runs first among the weight stages (order 10): later stages prune,
share and code the narrower network.

Per layer: ``fraction`` (of its output channels removed, rounded; never all) or ``skip``. A
group of channels that several layers produce together (the projections of the residual blocks
of MobileNetV2) follows the rule of its first producing layer. Stage settings: ``importance``
(``l1``, ``l2``, ``taylor`` on ``calibration`` training samples), ``steps`` (prune part of the
channels, retrain, repeat: the removed count ramps up linearly), ``multiple`` (the kept count
is a multiple of it, e.g. 8 for SIMD lanes) and ``retrain``.

Layers whose channels cannot be removed (the classifier's classes; a channel space a layer norm,
an attention, a reshape or a transpose mixes) are skipped when a pattern or special key selects
them and refused when a rule names them exactly, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from deepshrink.errors import ConfigError
from deepshrink.recipes.rules import LayerRules
from deepshrink.recipes.stages import NUM, Stage, _kinds, register_stage
from deepshrink.structured.groups import ChannelGroup, channel_groups
from deepshrink.structured.rewire import ChannelImportance, channel_importance, kept_count, select, shrink
from deepshrink.train.loop import TrainConfig, as_enum

#: Training samples whose inputs trace the network (the shapes are all the analysis needs).
EXAMPLE_SAMPLES = 2


@register_stage
@dataclass(frozen=True)
class StructuredStage(Stage):
    """Structured (channel) pruning with rewiring: ``steps`` cycles of remove → retrain."""

    kind: ClassVar[str] = "structured"
    order: ClassVar[int] = 10
    changes_graph: ClassVar[bool] = True
    settings: ClassVar[Mapping[str, Any]] = {"fraction": NUM, "skip": bool}
    trainings: ClassVar[tuple[str, ...]] = ("retrain",)

    layers: LayerRules = field(default_factory=LayerRules)
    steps: int = 2
    importance: ChannelImportance = ChannelImportance.L1
    multiple: int = 1
    calibration: int = 1024
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, lr=1e-3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "importance", as_enum(ChannelImportance, self.importance, "structured: importance"))
        for key, value, hi in (("steps", self.steps, 100), ("multiple", self.multiple, 4096),
                               ("calibration", self.calibration, 1 << 20)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise ConfigError(f"structured: {key} must be an integer in 1..{hi}, got {value!r}")
        for pattern, s in self.layers.rules:
            if "fraction" in s and "skip" in s:
                raise ConfigError(f"structured: layers.{pattern} gives both fraction and skip; choose one")
            if "fraction" in s and not 0 <= s["fraction"] < 1:
                raise ConfigError(f"structured: layers.{pattern}.fraction (of the output channels removed) must be "
                                  f"in [0, 1), got {s['fraction']!r}")

    def fractions(self, kinds: Mapping[str, str]) -> dict[str, float]:
        """The fraction of output channels removed per layer the rules select (skips left out)."""
        order = list(kinds)
        out = {}
        for name, kind in kinds.items():
            s = self.layers.resolve(name, kind, order, exclusive=[{"fraction", "skip"}])
            if not s.get("skip") and s.get("fraction", 0) > 0:
                out[name] = float(s["fraction"])
        if not out:
            raise ConfigError("structured stage: no layer matches its rules with a fraction > 0; nothing to prune")
        return out

    def plan(self, groups: list[ChannelGroup], kinds: Mapping[str, str]) -> tuple[dict[str, float], dict[str, str]]:
        """The fraction removed per prunable group (by its first layer), and the selected layers
        whose channels must stay, with the reason. A :class:`ConfigError` when a rule names such a
        layer exactly, or names a layer that shares its channels with an earlier one."""
        fractions = self.fractions(kinds)
        chosen: dict[str, float] = {}
        skipped: dict[str, str] = {}
        for g in groups:
            for layer in g.layers[1:]:
                if self.layers.names(layer):
                    raise ConfigError(f"structured: layer {layer!r} makes the same channels as {g.name!r} (their "
                                      f"outputs are added); the group follows the rule of its first layer {g.name!r}")
            if g.name not in fractions:
                continue
            if not g.prunable:
                if self.layers.names(g.name):
                    raise ConfigError(f"structured: the output channels of layer {g.name!r} cannot be removed: "
                                      f"{g.reason}; remove the rule {g.name!r}")
                skipped[g.name] = g.reason or ""
                continue
            chosen[g.name] = fractions[g.name]
        if not chosen:
            raise ConfigError("structured stage: none of the layers its rules select has removable output channels"
                              + "".join(f"; {n}: {r}" for n, r in skipped.items()))
        return chosen, skipped

    def check(self, layers, *, has_val):
        return self.touch(layers, self.fractions(_kinds(layers)))

    def run(self, model, ctx):
        inputs = ctx.splits["train"].take(slice(0, EXAMPLE_SAMPLES)).inputs
        groups = channel_groups(model, inputs)
        chosen, skipped = self.plan(groups, ctx.kinds)
        sizes = {g.name: g.size for g in groups if g.name in chosen}
        batches = loss = None
        if self.importance is ChannelImportance.TAYLOR:
            batches, loss = ctx.calibration(self.calibration)
        hist = []
        for step in range(1, self.steps + 1):
            groups = [g for g in channel_groups(model, inputs) if g.name in chosen]
            scores = channel_importance(model, groups, self.importance, batches, loss)
            keep = {}
            for g in groups:
                frac = chosen[g.name] * step / self.steps
                target = kept_count(sizes[g.name], frac, self.multiple if step == self.steps else 1)
                keep[g.name] = select(scores[g.name], min(g.size, target))
            shrink(model, keep, inputs, groups)
            hist.append(ctx.fit(model, self.retrain, desc=f"structured {step}/{self.steps}"))
        after = {g.name: g.size for g in channel_groups(model, inputs) if g.name in chosen}
        return {"val_accuracy_per_step": hist, "skipped": skipped,
                "channels": {n: {"before": sizes[n], "after": after[n], "fraction": chosen[n]} for n in chosen}}
