"""Training and evaluation loops: seeded, with progress bars, keeping the best validation epoch.

Pruning masks are applied after each optimizer step (:func:`deepshrink.prune.masked_training`)
rather than by a hook at every forward, and Adam runs as torch's fused kernel: both make a
retraining epoch cheaper without changing what is learned beyond float rounding.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from deepshrink.data.dataset import MAX_SEED
from deepshrink.data.split import Split
from deepshrink.errors import ConfigError, DataError
from deepshrink.prune import masked_training
from deepshrink.train.objectives import EVAL_BATCH, Objective, get_objective, outputs


class Optimizer(StrEnum):
    """Optimizers of :class:`TrainConfig` (values are what recipes write)."""

    ADAM = "adam"
    SGD = "sgd"


class Schedule(StrEnum):
    """Learning-rate schedules of :class:`TrainConfig`: cosine annealing to zero over the run, or constant."""

    COSINE = "cosine"
    CONSTANT = "constant"


def as_enum(enum: type[StrEnum], value: Any, what: str) -> StrEnum:
    """``value`` as a member of ``enum``; a :class:`ConfigError` listing the allowed values otherwise.
    How every recipe and config field with a fixed set of values is checked."""
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(f"{what} must be one of {[m.value for m in enum]}, got {value!r}") from None

#: Bounds of :class:`TrainConfig`: far beyond any useful run, small enough that a typo (1e18)
#: is an error rather than a run that never ends or a batch that cannot be allocated.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 1 << 20


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training or retraining run."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: Optimizer = Optimizer.ADAM
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.COSINE
    seed: int = 0
    keep_best: bool = True
    distill: float = 0.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not _is_int(self.epochs) or not 0 <= self.epochs <= MAX_EPOCHS:
            raise ConfigError(f"epochs must be an integer in 0..{MAX_EPOCHS:,}, got {self.epochs!r}")
        if not (_is_number(self.lr) and 0 < self.lr < 10):
            raise ConfigError(f"lr must be a number in (0, 10), got {self.lr!r}")
        if not _is_int(self.batch_size) or not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(f"batch_size must be an integer in 1..{MAX_BATCH_SIZE:,}, got {self.batch_size!r}")
        object.__setattr__(self, "optimizer", as_enum(Optimizer, self.optimizer, "optimizer"))
        object.__setattr__(self, "schedule", as_enum(Schedule, self.schedule, "schedule"))
        for name in ("weight_decay", "momentum"):
            v = getattr(self, name)
            if not (_is_number(v) and 0 <= v < 1):
                raise ConfigError(f"{name} must be a number in [0, 1), got {v!r}")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer in 0..2**63-1, got {self.seed!r}")
        if not isinstance(self.keep_best, bool):
            raise ConfigError(f"keep_best must be true or false, got {self.keep_best!r}")
        if not (_is_number(self.distill) and 0 <= self.distill <= 1):
            raise ConfigError(f"distill (weight of the teacher's soft targets) must be in [0, 1], got {self.distill!r}")
        if not (_is_number(self.temperature) and 0 < self.temperature <= 100):
            raise ConfigError(f"temperature must be in (0, 100], got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (enums as their strings), as a recipe file writes them."""
        return {f.name: (v.value if isinstance(v, StrEnum) else v)
                for f in fields(self) for v in (getattr(self, f.name),)}


@dataclass
class History:
    """Per-epoch losses and validation scores of a run. ``val_accuracy`` holds the objective's
    primary metric, named by ``metric`` (``"accuracy"`` for ``classify``, the name kept so that
    classifier code reads as before)."""

    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    metric: str = "accuracy"

    @property
    def best_val_accuracy(self) -> float:
        return self.val_accuracy[self.best_epoch] if self.best_epoch >= 0 else float("nan")


def _fusable(params: list[nn.Parameter]) -> bool:
    """Whether torch's fused Adam kernel takes these parameters (floating point, one device)."""
    return bool(params) and all(p.is_floating_point() for p in params) and len({p.device for p in params}) == 1


def as_split(data: Split | tuple[torch.Tensor, torch.Tensor], where: str = "data") -> Split:
    """A :class:`~deepshrink.data.Split`; an ``(inputs, labels)`` pair (what ``Dataset.tensors``
    returns, and what callers wrote before splits existed) is read as a one-input split."""
    if isinstance(data, Split):
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return Split.of(*data)
    raise DataError(f"{where} must be a deepshrink.data.Split (or an (inputs, labels) pair of tensors), "
                    f"got {type(data).__name__}")


def evaluate_metrics(model: nn.Module, split: Split | tuple[torch.Tensor, torch.Tensor],
                     objective: str | Objective = "classify", teacher: torch.Tensor | None = None,
                     batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Every metric of ``objective`` for ``model`` on ``split`` (NaN on an empty split);
    ``teacher`` holds the dense model's outputs on the same split when the objective compares with them."""
    split, obj = as_split(split, "the evaluation split"), get_objective(objective)
    obj.check_data(split, "evaluation")
    if len(split) == 0:
        return obj.metrics(torch.zeros(0), split.target, teacher)
    return obj.metrics(outputs(model, split, batch_size), split.target, teacher)


def evaluate(model: nn.Module, split: Split | tuple[torch.Tensor, torch.Tensor],
             objective: str | Objective = "classify", teacher: torch.Tensor | None = None,
             batch_size: int = EVAL_BATCH) -> float:
    """The objective's primary metric (top-1 accuracy for ``classify``) of ``model`` on ``split``."""
    return evaluate_metrics(model, split, objective, teacher, batch_size)[get_objective(objective).primary]


def fit(
    model: nn.Module,
    train: Split | tuple[torch.Tensor, torch.Tensor],
    val: Split | tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    *,
    params: Iterable[nn.Parameter] | None = None,
    desc: str = "train",
    progress: bool | None = None,
    objective: str | Objective = "classify",
    teacher: torch.Tensor | None = None,
    val_teacher: torch.Tensor | None = None,
    penalty: Callable[[], torch.Tensor] | None = None,
) -> History:
    """Train ``model`` (or only ``params``) to minimise ``objective``'s loss; returns the history.
    Batches are ``model(*inputs)`` of :class:`~deepshrink.data.Split` s.

    Epoch selection: with ``keep_best`` the weights of the epoch with the best validation accuracy
    are restored at the end (validation data comes from the training set, never the test set).
    With an empty ``val`` split (``val_size=0``) there is nothing to select on: the last epoch is
    kept, ``History.best_epoch`` is the last epoch and the validation accuracies are NaN.

    Pruning masks (:mod:`torch.nn.utils.prune`) are re-applied after every optimizer step and are
    attached again on return; parametrizations (shared weights) stay active throughout.

    ``teacher`` holds the teacher's (the dense model's) outputs on ``train``, in order, and
    ``val_teacher`` on ``val``: ``classify`` reads them to distill (``config.distill > 0``: the loss
    is ``(1 - a)·CE + a·T²·KL(teacher_T ‖ student_T)``, Hinton et al. 2015); the ``match-*``
    objectives always (see :mod:`deepshrink.train.objectives`). Epochs are selected on the
    objective's primary metric.

    ``penalty``, when given, is called at every step and added to the batch's loss (a prior on
    the weights, such as soft weight-sharing's mixture; it should be scaled per training sample).
    """
    obj = get_objective(objective)
    train, val = as_split(train, "the training split"), as_split(val, "the validation split")
    obj.check_data(train, "training")
    if obj.wants_teacher(config) and (teacher is None or len(teacher) != len(train)):
        raise ConfigError(f"objective {obj.name!r}{' with distill > 0' if obj.name == 'classify' else ''} needs "
                          "the teacher's outputs with one row per training sample")
    if obj.wants_teacher() and len(val) and (val_teacher is None or len(val_teacher) != len(val)):
        raise ConfigError(f"objective {obj.name!r} needs the teacher's outputs on the validation split too")
    hist = History(metric=obj.primary)

    def score() -> float:
        return evaluate(model, val, obj, val_teacher)

    if config.epochs == 0:
        hist.val_accuracy.append(score())
        hist.best_epoch = 0
        return hist
    has_val = len(val) > 0
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if config.optimizer is Optimizer.ADAM:
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                                      fused=_fusable(params))
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    n = len(train)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total = steps_per_epoch * config.epochs
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, total) if config.schedule is Schedule.COSINE else None
    )
    best_state = None
    best_acc = -1.0
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", disable=(not progress) if progress is not None else None,
               leave=False, dynamic_ncols=True)
    with masked_training(model) as reapply_masks:
        for epoch in range(config.epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            running, count = 0.0, 0
            for i in range(0, n, config.batch_size):
                idx = order[i : i + config.batch_size]
                batch = train.take(idx)
                opt.zero_grad(set_to_none=True)
                loss = obj.loss(model(*batch.inputs), batch.target, None if teacher is None else teacher[idx], config)
                if penalty is not None:
                    loss = loss + penalty()
                loss.backward()
                opt.step()
                reapply_masks()
                if sched is not None:
                    sched.step()
                running += loss.item() * len(idx)
                count += len(idx)
                bar.update(1)
            acc = score() if has_val else float("nan")
            hist.train_loss.append(running / max(count, 1))
            hist.val_accuracy.append(acc)
            bar.set_postfix({"epoch": epoch + 1, "loss": f"{hist.train_loss[-1]:.4f}", f"val_{obj.primary}": f"{acc:.4f}"})
            if not has_val:
                hist.best_epoch = epoch
            elif acc > best_acc:
                best_acc = acc
                hist.best_epoch = epoch
                if config.keep_best:
                    best_state = copy.deepcopy(model.state_dict())
        bar.close()
        if best_state is not None and hist.best_epoch < config.epochs - 1:
            model.load_state_dict(best_state)
    model.eval()
    hist.seconds = time.perf_counter() - start
    return hist
