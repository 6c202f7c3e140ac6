"""Stages ``distill`` (a smaller student trained from the teacher's soft targets) and ``dsd``
(dense-sparse-dense retraining after pruning).

``distill`` comes first in a recipe (order 0): it replaces the model by a student
(:meth:`CompressContext.replace`), and every later stage compresses the student; the file stores
the student and its ratio is measured against the teacher's dense bytes. The student is trained
by :meth:`DistillStage.train_student`, which :func:`deepshrink.distill.train_student` also calls
(the same student trained directly on the labels is that call with ``distill = 0``).

``dsd`` stands after ``prune`` (order 30): the pruned weights, exactly zero after the prune
stage's retraining, are released and the whole network is retrained dense at a lower learning
rate (Han et al., "DSD: Dense-Sparse-Dense Training for Deep Neural Networks", ICLR 2017).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from deepshrink.distill.students import NARROW, build_student, check_student_name, num_outputs, param_count
from deepshrink.errors import ConfigError
from deepshrink.prune import apply_mask, current_weight, layer_kind, make_permanent, prunable_layers
from deepshrink.recipes.rules import LayerRules
from deepshrink.recipes.stages import Layer, Stage, register_stage
from deepshrink.train.loop import TrainConfig, as_enum
from deepshrink.train.objectives import outputs

if TYPE_CHECKING:
    from deepshrink.pipeline.context import CompressContext

#: Training samples a student is run on before training, to refuse a student that cannot take the
#: data's inputs or does not give the teacher's outputs.
PROBE = 4


class StudentInit(StrEnum):
    """How a student's weights start: at random (the zoo's initialisation), or (a narrow student
    only) from the teacher's most important channels."""

    RANDOM = "random"
    TEACHER = "teacher"


def _default_train() -> TrainConfig:
    # a = 0.5, T = 2 beat a = 0.8, T = 4 on the validation split of Fashion-MNIST at every learning
    # rate tried, for LeNet-5 -> LeNet-300-100 and LeNet-300-100 -> its half width
    # (python -m deepshrink.distill.compare); the built-in recipes also give the tuned lr
    return TrainConfig(epochs=20, lr=1e-3, distill=0.5, temperature=2.0)


@register_stage
@dataclass(frozen=True)
class DistillStage(Stage):
    """Knowledge distillation (Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural
    Network", 2015): the model is replaced by a smaller ``student`` trained on the loss
    ``(1 - a)·CE + a·T²·KL(teacher_T ‖ student_T)`` with ``a = train.distill`` and
    ``T = train.temperature`` (the teacher's outputs on the training split are computed once).

    ``student`` is a from-scratch architecture of the zoo (``lenet-300-100``, ``lenet-5``),
    built with the teacher's number of outputs, or ``"narrow"``: the teacher's own architecture
    with the fraction ``width`` of its channels and neurons kept in every layer but the last
    (:func:`deepshrink.structured.narrow`). ``init = "teacher"`` starts a narrow student from the
    teacher's channels of largest L1 weight norm and their weights instead of at random (Li et
    al. 2017's criterion). The stage has no per-layer rules: it replaces the whole network."""

    kind: ClassVar[str] = "distill"
    order: ClassVar[int] = 0
    changes_graph: ClassVar[bool] = True
    trainings: ClassVar[tuple[str, ...]] = ("train",)

    layers: LayerRules = field(default_factory=LayerRules)
    student: str = "lenet-300-100"
    width: float = 0.5
    init: StudentInit = StudentInit.RANDOM
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        if self.layers.rules:
            raise ConfigError("distill: the stage replaces the whole network and takes no per-layer rules "
                              "('layers'); remove them")
        check_student_name(self.student, "distill: student")
        w = self.width
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < 1:
            raise ConfigError(f"distill: width (fraction of the teacher's channels a narrow student keeps) must "
                              f"be in (0, 1), got {w!r}")
        object.__setattr__(self, "init", as_enum(StudentInit, self.init, "distill: init"))
        if self.init is StudentInit.TEACHER and self.student != NARROW:
            raise ConfigError(f"distill: init = 'teacher' needs student = {NARROW!r} (a zoo architecture "
                              f"{self.student!r} has no channels in common with the teacher); use init = 'random'")

    def build(self, teacher: nn.Module | None, outputs_: int,
              inputs: tuple[torch.Tensor, ...] | None = None) -> nn.Module:
        """The untrained student of ``teacher`` (``outputs_`` outputs; ``inputs``, an example batch,
        for a narrow student), seeded by ``train.seed``."""
        with torch.random.fork_rng():
            torch.manual_seed(self.train.seed)
            return build_student(self.student, outputs_, teacher=teacher, width=self.width,
                                 from_teacher=self.init is StudentInit.TEACHER, inputs=inputs)

    def check(self, layers, *, has_val):
        if not layers:
            raise ConfigError("distill: the teacher has no layer")
        if self.student == NARROW:  # the teacher's layers, narrower: the same names and kinds
            return {n: Layer(layer.kind, layer.module) for n, layer in layers.items()}
        last = next(reversed(layers.values()))
        if last.module is None:
            raise ConfigError("distill: the teacher's last layer does not exist before the stage")
        student = self.build(None, num_outputs(last.module))
        return {n: Layer(layer_kind(m), m) for n, m in prunable_layers(student).items()}

    def train_student(self, teacher: nn.Module, ctx: CompressContext) -> tuple[nn.Module, dict[str, Any]]:
        """Build the student of ``teacher``, check that it runs on the data and gives the teacher's
        outputs (:class:`ConfigError` before any training otherwise), and train it with
        ``ctx``'s objective and the teacher's outputs; returns the student (in eval mode, the best
        validation epoch) and what the training did, for the report."""
        probe = ctx.splits["train"].take(slice(0, PROBE))
        want = outputs(teacher, probe)
        student = self.build(teacher, want.shape[1] if want.ndim > 1 else 1, probe.inputs)
        what = f"student {self.student!r}" + (f" (width {self.width})" if self.student == NARROW else "")
        shape = ", ".join("×".join(map(str, x.shape[1:])) for x in probe.inputs)
        try:
            got = outputs(student, probe)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ConfigError(f"distill: {what} cannot take the data's inputs (per sample {shape}): "
                              f"{str(exc).splitlines()[0]}") from None
        if got.shape != want.shape:
            raise ConfigError(f"distill: {what} gives outputs of shape {tuple(got.shape[1:])} per sample on the "
                              f"data's inputs, the teacher {tuple(want.shape[1:])}")
        before = ctx.evaluate(student, "val")
        best = ctx.fit(student, self.train, desc=f"distill: train {self.student}")
        params = {"teacher": param_count(teacher), "student": param_count(student)}
        return student.eval(), {
            "student": self.student, "width": self.width if self.student == NARROW else None,
            "init": self.init.value, "parameters": params, "distill": self.train.distill,
            "temperature": self.train.temperature, "epochs": self.train.epochs,
            "teacher_val_accuracy": ctx.evaluate(teacher, "val"), "val_accuracy_before": before,
            "val_accuracy_after": best}

    def run(self, model, ctx):
        student, detail = self.train_student(model, ctx)
        ctx.replace(student)
        return detail


# --- dense-sparse-dense ------------------------------------------------------------------------

@register_stage
@dataclass(frozen=True)
class DSDStage(Stage):
    """Dense-sparse-dense (Han et al., ICLR 2017), the final dense phase: after a ``prune`` stage
    (the sparse phase: pruning with retraining under the mask), the pruned weights are released
    (they restart at zero and are trained again) and the network is retrained dense with
    ``retrain`` at a lower learning rate (the paper: a tenth of the sparse phase's). The pruned
    network acts as a regulariser that moves the dense network to a better optimum; the result is
    a dense network, which may be stored as it is or compressed again
    (``ds.compress(result.model, data, recipe)``).

    Per layer ``release`` (true where no rule says otherwise): a layer with ``release = false``
    keeps its zeros (retrained under its mask, like the prune stage's retraining).

    Without a prune stage before it the stage only retrains (nothing is zero): a recipe check
    sees the layers, not the earlier stages, so this is not refused, but the report says so
    (``detail["warning"]``) and lists the released zeros per layer."""

    kind: ClassVar[str] = "dsd"
    order: ClassVar[int] = 30
    settings: ClassVar[Mapping[str, Any]] = {"release": bool}
    trainings: ClassVar[tuple[str, ...]] = ("retrain",)

    layers: LayerRules = field(default_factory=LayerRules)
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=1e-4))

    def released(self, kinds: Mapping[str, str]) -> list[str]:
        """The layers whose pruned weights the stage releases."""
        order = list(kinds)
        names = [n for n, k in kinds.items() if self.layers.resolve(n, k, order).get("release", True)]
        if not names:
            raise ConfigError("dsd stage: no layer is released (release = true); nothing to retrain dense")
        return names

    def check(self, layers, *, has_val):
        return self.touch(layers, self.released({n: layer.kind for n, layer in layers.items()}))

    def run(self, model, ctx):
        layers = ctx.layers
        released = self.released(ctx.kinds)
        zero = {n: current_weight(m) == 0 for n, m in layers.items()}
        for n, m in layers.items():  # the layers kept sparse retrain under their mask
            if n not in released and bool(zero[n].any()):
                apply_mask(m, ~zero[n])
        before = ctx.evaluate(model, "val")
        after = ctx.fit(model, self.retrain, desc="dsd: dense retrain")
        make_permanent(model)
        report: dict[str, Any] = {
            "released": {n: int(zero[n].sum()) for n in released},
            "regrown": {n: int((zero[n] & (current_weight(layers[n]) != 0)).sum()) for n in released},
            "val_accuracy_before": before, "val_accuracy_after": after}
        if not any(report["released"].values()):
            report["warning"] = ("no released layer had a zero weight: dsd follows a prune stage (the sparse phase "
                                 "of dense-sparse-dense); alone it only retrains the network")
        return report
