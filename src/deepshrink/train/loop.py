"""Training and evaluation loops: seeded, with progress bars, keeping the best validation epoch."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from deepshrink.errors import ConfigError

Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training or retraining run."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0
    keep_best: bool = True
    distill: float = 0.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"epochs must be an integer ≥ 0, got {self.epochs!r}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 10):
            raise ConfigError(f"lr must be a number in (0, 10), got {self.lr!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if not (0 <= self.weight_decay < 1) or not (0 <= self.momentum < 1):
            raise ConfigError("weight_decay and momentum must be in [0, 1)")
        if not (isinstance(self.distill, (int, float)) and 0 <= self.distill <= 1):
            raise ConfigError(f"distill (weight of the teacher's soft targets) must be in [0, 1], got {self.distill!r}")
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature <= 100):
            raise ConfigError(f"temperature must be in (0, 100], got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class History:
    """Per-epoch losses and validation accuracies of a run."""

    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0

    @property
    def best_val_accuracy(self) -> float:
        return self.val_accuracy[self.best_epoch] if self.best_epoch >= 0 else float("nan")


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on preprocessed inputs and labels."""
    x, y = split
    if len(x) == 0:
        return float("nan")
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(dim=1) == y[i : i + batch_size]).sum())
    model.train(was)
    return correct / len(x)


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    config: TrainConfig,
    *,
    params: Iterable[nn.Parameter] | None = None,
    desc: str = "train",
    progress: bool | None = None,
    teacher_logits: torch.Tensor | None = None,
) -> History:
    """Train ``model`` (or only ``params``) with cross-entropy; returns the history.

    With ``keep_best`` the weights of the epoch with the best validation accuracy are restored at
    the end (validation data comes from the training set, never the test set). Any forward
    pre-hooks or parametrizations on the model (pruning masks, shared weights) stay active.

    With ``config.distill > 0`` and ``teacher_logits`` (the teacher's outputs on ``train``, in
    order) the loss is ``(1 - a)·CE + a·T²·KL(teacher_T ‖ student_T)`` (Hinton et al. 2015).
    """
    if config.distill > 0 and (teacher_logits is None or len(teacher_logits) != len(train[0])):
        raise ConfigError("distill > 0 needs teacher_logits with one row per training sample")
    hist = History()
    if config.epochs == 0:
        hist.val_accuracy.append(evaluate(model, val))
        hist.best_epoch = 0
        return hist
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    x, y = train
    steps_per_epoch = max(1, math.ceil(len(x) / config.batch_size))
    total = steps_per_epoch * config.epochs
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, total) if config.schedule == "cosine" else None
    )
    best_state = None
    best_acc = -1.0
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", disable=(not progress) if progress is not None else None,
               leave=False, dynamic_ncols=True)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        running, count = 0.0, 0
        for i in range(0, len(x), config.batch_size):
            idx = order[i : i + config.batch_size]
            opt.zero_grad(set_to_none=True)
            out = model(x[idx])
            loss = F.cross_entropy(out, y[idx])
            if config.distill > 0:
                t = config.temperature
                soft = F.kl_div(F.log_softmax(out / t, dim=1), F.log_softmax(teacher_logits[idx] / t, dim=1),
                                reduction="batchmean", log_target=True)
                loss = (1 - config.distill) * loss + config.distill * t * t * soft
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            running += loss.item() * len(idx)
            count += len(idx)
            bar.update(1)
        acc = evaluate(model, val)
        hist.train_loss.append(running / max(count, 1))
        hist.val_accuracy.append(acc)
        bar.set_postfix(epoch=epoch + 1, loss=f"{hist.train_loss[-1]:.4f}", val_acc=f"{acc:.4f}")
        if acc > best_acc:
            best_acc = acc
            hist.best_epoch = epoch
            if config.keep_best:
                best_state = copy.deepcopy(model.state_dict())
    bar.close()
    if config.keep_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    hist.seconds = time.perf_counter() - start
    return hist
