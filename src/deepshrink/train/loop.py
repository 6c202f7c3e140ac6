"""Training and evaluation loops: seeded, with progress bars, keeping the best validation epoch.

Pruning masks are applied after each optimizer step (:func:`deepshrink.prune.masked_training`)
rather than by a hook at every forward, and Adam runs as torch's fused kernel: both make a
retraining epoch cheaper without changing what is learned beyond float rounding.
"""

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

from deepshrink.data.dataset import MAX_SEED
from deepshrink.errors import ConfigError
from deepshrink.prune import masked_training

Split = tuple[torch.Tensor, torch.Tensor]

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
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
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
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
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


def _fusable(params: list[nn.Parameter]) -> bool:
    """Whether torch's fused Adam kernel takes these parameters (floating point, one device)."""
    return bool(params) and all(p.is_floating_point() for p in params) and len({p.device for p in params}) == 1


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

    Epoch selection: with ``keep_best`` the weights of the epoch with the best validation accuracy
    are restored at the end (validation data comes from the training set, never the test set).
    With an empty ``val`` split (``val_size=0``) there is nothing to select on: the last epoch is
    kept, ``History.best_epoch`` is the last epoch and the validation accuracies are NaN.

    Pruning masks (:mod:`torch.nn.utils.prune`) are re-applied after every optimizer step and are
    attached again on return; parametrizations (shared weights) stay active throughout.

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
    has_val = len(val[0]) > 0
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                                                      fused=_fusable(params))
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
    with masked_training(model) as reapply_masks:
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
                reapply_masks()
                if sched is not None:
                    sched.step()
                running += loss.item() * len(idx)
                count += len(idx)
                bar.update(1)
            acc = evaluate(model, val) if has_val else float("nan")
            hist.train_loss.append(running / max(count, 1))
            hist.val_accuracy.append(acc)
            bar.set_postfix(epoch=epoch + 1, loss=f"{hist.train_loss[-1]:.4f}", val_acc=f"{acc:.4f}")
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
