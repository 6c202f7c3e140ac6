"""Knowledge distillation into a smaller student network, and dense-sparse-dense retraining.

The stage classes live in :mod:`deepshrink.distill.stage` (imported by the stage registry);
:func:`train_student` trains a student outside a recipe, by the stage's own code, for the
comparison of a distilled student with the same student trained on the labels alone
(``TrainConfig(distill=0)``: the same epochs, the same learning rate, the same seed).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from torch import nn

from deepshrink.data.sources import DataSource
from deepshrink.distill.students import NARROW, build_student, scratch_architectures
from deepshrink.train.loop import TrainConfig
from deepshrink.train.objectives import Objective, get_objective

__all__ = ["NARROW", "build_student", "scratch_architectures", "train_student"]


def train_student(teacher: nn.Module, data: DataSource, *, student: str = "lenet-300-100", width: float = 0.5,
                  init: str = "random", train: TrainConfig | None = None, seed: int | None = None,
                  objective: str | Objective = "classify", progress: bool | None = None,
                  report: dict[str, Any] | None = None) -> nn.Module:
    """Train the student ``student`` of ``teacher`` on ``data`` as the ``distill`` stage does
    (:meth:`deepshrink.distill.stage.DistillStage.train_student`) and return it (eval mode, the
    best validation epoch). ``train`` defaults to the stage's (``distill = 0.7``, ``T = 4``, 20
    epochs); ``distill = 0`` trains on the labels alone. ``seed`` (when given) replaces
    ``train.seed``, which seeds the student's initialisation and the batch order. ``report``,
    when given, receives what the stage reports (validation scores, parameter counts). The teacher
    is not modified; settings are checked like a recipe's (:class:`ConfigError`)."""
    from deepshrink.distill.stage import DistillStage
    from deepshrink.pipeline.context import CompressContext

    stage = DistillStage(student=student, width=width, init=init)
    if train is not None:
        stage = replace(stage, train=train)
    if seed is not None:
        stage = replace(stage, train=replace(stage.train, seed=seed))
    teacher = copy.deepcopy(teacher).eval()
    ctx = CompressContext.create(teacher, data, get_objective(objective), teach_train=stage.distills,
                                 progress=progress)
    model, detail = stage.train_student(teacher, ctx)
    if report is not None:
        report.update(detail)
    return model
