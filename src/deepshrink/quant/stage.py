"""Stage ``quantize``: uniform int2..int8, binary or ternary weights, post-training or trained.

Each selected layer's weight becomes a :class:`~deepshrink.quant.encoding.QuantTensor` (put in
``ctx.forms``, the file stores it with the ``quant`` encoding; the module's weight is set to its
exact dequantised value), except with ``ttq`` for ternary layers, whose two learned scales make
a plain three-valued weight that the codebook encoding stores. Biases stay float.

With ``train.epochs = 0`` the weights are rounded once (post-training quantisation, the scale of
integer grids chosen by ``calibration``). With epochs > 0 the network is trained with fake
quantisation first (quantisation-aware training: the forward pass sees the quantised weights,
the straight-through estimator updates a full-precision shadow copy, Courbariaux et al. 2015;
Jacob et al. 2018), and the shadow weights are rounded at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from deepshrink.errors import ConfigError
from deepshrink.quant.encoding import LEVELS
from deepshrink.quant.uniform import (
    GRANULARITIES,
    Calibration,
    FakeQuant,
    QuantSpec,
    Rule,
    TrainedTernary,
    attach,
    detach_parametrization,
    quant_form,
    shadow,
)
from deepshrink.recipes.rules import LayerRules
from deepshrink.recipes.stages import Stage, _kinds, register_stage
from deepshrink.train.loop import TrainConfig, as_enum

SPEC_KEYS = ("bits", "levels", "granularity", "group_size", "symmetric")


def _spec(settings: Mapping[str, Any], where: str) -> QuantSpec:
    try:
        return QuantSpec(**{k: settings[k] for k in SPEC_KEYS if k in settings})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@register_stage
@dataclass(frozen=True)
class QuantizeStage(Stage):
    """Uniform quantisation of the weights of the layers its rules select.

    Per layer: ``bits`` (int: 2..8; binary: 1; ternary: 2; default: 8, 1, 2), ``levels``
    (``"int"``, ``"binary"``, ``"ternary"``), ``granularity`` (``"channel"``: a scale per output
    row, ``"tensor"``, or ``"group"`` of ``group_size`` elements of a row), ``symmetric`` (int:
    ``true`` fixed zero point, ``false`` a zero point per group) and ``skip``. ``bits`` and
    ``levels`` go together: a rule that gives one of them resets the other, as given by a broader
    rule, to its default (``_default = { levels = "binary" }`` with ``_first = { bits = 8 }``
    makes the first layer int8). Stage settings:
    ``calibration`` of integer grids (``"minmax"``, ``"mse"``, ``"percentile"`` with
    ``percentile``), ``train`` (epochs 0: post-training; > 0: quantisation-aware training),
    ``ttq`` (trained ternary quantisation for ternary layers, Zhu et al. 2017) and ``float16``
    (round every parameter the stage does not quantise, the biases and the skipped layers, to
    float16 afterwards, halving their stored bytes: at 8 bits a weight, the float32 biases,
    scales and header of a small network otherwise keep the file just under 4× smaller).

    A pruned binary layer is refused (binary levels have no zero); pruned zeros of int and
    ternary layers stay zero, and stay fixed during training."""

    kind: ClassVar[str] = "quantize"
    order: ClassVar[int] = 60
    stores_form: ClassVar[bool] = True
    settings: ClassVar[Mapping[str, Any]] = {
        "bits": int, "levels": str, "granularity": str, "group_size": int, "symmetric": bool, "skip": bool}
    trainings: ClassVar[tuple[str, ...]] = ("train",)

    layers: LayerRules = field(default_factory=LayerRules)
    calibration: Calibration = Calibration.MSE
    percentile: float = 99.99
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0, lr=1e-4))
    ttq: bool = False
    float16: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibration", as_enum(Calibration, self.calibration, "quantize: calibration"))
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 50 < p <= 100:
            raise ConfigError(f"quantize: percentile must be a number in (50, 100], got {p!r}")
        for name in ("ttq", "float16"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"quantize: {name} must be true or false, got {getattr(self, name)!r}")
        for pattern, s in self.layers.rules:
            where = f"quantize: layers.{pattern}"
            if "levels" in s and s["levels"] not in LEVELS:
                raise ConfigError(f"{where}.levels must be one of {list(LEVELS)}, got {s['levels']!r}")
            if "granularity" in s and s["granularity"] not in GRANULARITIES:
                raise ConfigError(f"{where}.granularity must be one of {list(GRANULARITIES)}, got {s['granularity']!r}")
            if "bits" in s and not 1 <= s["bits"] <= 8:
                raise ConfigError(f"{where}.bits must be in 1..8 (int: 2..8, binary: 1, ternary: 2), got {s['bits']}")
            if "group_size" in s and s["group_size"] < 1:
                raise ConfigError(f"{where}.group_size must be a positive integer, got {s['group_size']}")

    @property
    def rule(self) -> Rule:
        return Rule(self.calibration, float(self.percentile))

    def specs(self, kinds: Mapping[str, str]) -> dict[str, QuantSpec]:
        """The resolved settings of every layer the stage quantises."""
        order = list(kinds)
        out = {}
        for name, kind in kinds.items():
            s = self.layers.resolve(name, kind, order, exclusive=[{"levels", "bits"}])
            if not s or s.get("skip"):
                continue
            if s.get("granularity", "channel") != "group":
                s = {k: v for k, v in s.items() if k != "group_size"}  # a broader rule's group size
            out[name] = _spec(s, f"quantize: layer {name!r}")
        if not out:
            raise ConfigError("quantize stage: no layer matches its rules; nothing to quantise")
        return out

    def check(self, layers, *, has_val):
        specs = self.specs(_kinds(layers))
        for name, spec in specs.items():
            module = layers[name].module
            if module is not None:
                try:
                    spec.group(tuple(module.weight.shape))
                except ConfigError as exc:
                    raise ConfigError(f"quantize: layer {name!r}: {exc}") from None
        return self.touch(layers, specs)

    def run(self, model, ctx):
        specs = self.specs(ctx.kinds)
        rule = self.rule
        layers = ctx.layers
        masks: dict[str, torch.Tensor | None] = {}
        for name, spec in specs.items():
            w = layers[name].weight.detach()
            spec.group(tuple(w.shape))  # layers a low-rank stage created are checked here
            zeros = int((w == 0).sum())
            if zeros and spec.levels == "binary":
                raise ConfigError(
                    f"quantize: layer {name!r} has {zeros} pruned (zero) weights, and binary levels (±scale) have "
                    "no zero: quantise it as ternary (its zero level keeps them) or do not prune it")
            masks[name] = (w != 0).to(w.dtype) if zeros else None
        ttq = {n for n, s in specs.items() if self.ttq and s.levels == "ternary"}
        report: dict[str, Any] = {"layers": {n: {"bits": s.bits, "levels": s.levels, "granularity": s.granularity,
                                                 **({"group_size": s.group_size} if s.group_size else {}),
                                                 "symmetric": s.symmetric, "ttq": n in ttq}
                                             for n, s in specs.items()}}
        if self.train.epochs > 0:
            for name, spec in specs.items():
                module = layers[name]
                attach(module, TrainedTernary(module.weight, masks[name]) if name in ttq
                       else FakeQuant(spec, rule, masks[name]))
            report["val_accuracy_before_training"] = ctx.evaluate(model, "val")
            report["val_accuracy_after_training"] = ctx.fit(model, self.train, desc="quantize: train")
        for name, spec in specs.items():
            module = layers[name]
            trained = self.train.epochs > 0
            w = shadow(module) if trained else module.weight.detach()
            before = w * (1 if masks[name] is None else masks[name])
            if name in ttq:
                param = module.parametrizations.weight[0] if trained else TrainedTernary(w, masks[name])
                value = param.final(w)
                scales = param.scales()
                report["layers"][name].update(positive_scale=scales[0], negative_scale=scales[1])
            else:
                form = quant_form(w, spec, rule, masks[name])
                value = torch.from_numpy(form.to_dense())
                ctx.forms[f"{name}.weight"] = form
            if trained:
                detach_parametrization(module, value)
            else:
                with torch.no_grad():
                    module.weight.copy_(value)
            err = float(((value - before) ** 2).sum() / (before ** 2).sum().clamp(min=1e-30))
            report["layers"][name]["relative_squared_error"] = round(err, 6)
        if self.float16:
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    half = p.to(torch.float16)
                    if pname not in ctx.forms and torch.isfinite(half).all():
                        p.copy_(half.to(p.dtype))
        report["val_accuracy_after"] = ctx.evaluate(model, "val")
        return report

