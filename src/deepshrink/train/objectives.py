"""Objectives: what training minimises and what evaluation reports.

A classifier trained on labels is one case. A pretrained ImageNet network compressed on image
crops without labels, or a sentence encoder whose outputs are embeddings, has no labels to score
against: there the dense model itself is the reference, and compression is judged by how faithfully
the compressed model reproduces it. One small class per objective holds both halves (the training
loss and the evaluation metrics), so every stage retrains and every report measures the same way
whatever the model's task; stages never ask which kind of model they have.

Every objective names a ``primary`` metric, higher is better: the number that ``keep_best`` epoch
selection and ``max_drop`` rank searches compare. Teacher outputs (the dense model's outputs) are
computed once per split by :func:`outputs` and handed in; objectives never run the teacher.

Registered objectives (:data:`OBJECTIVES`):

* ``classify``: cross-entropy on int64 labels, plus, with ``TrainConfig.distill > 0``, Hinton's
  soft-target term from the teacher's logits at ``temperature``; metric ``accuracy``.
* ``match-logits``: no labels; ``T² · KL(teacher_T ‖ student_T)`` at ``TrainConfig.temperature``
  (the whole loss is distillation, so ``TrainConfig.distill`` is not read);
  metrics ``top1_agreement`` (primary), ``top5_overlap`` and ``mean_kl`` (at temperature 1).
* ``match-embeddings``: no labels; ``1 − cosine`` to the teacher's embeddings (``distill`` and
  ``temperature`` are not read); metrics
  ``mean_cosine`` (primary) and ``top10_overlap``, the overlap of each sample's 10 nearest
  neighbours (by cosine, within the split) under the student and under the teacher.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.data.split import Split
from deepshrink.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from deepshrink.train.loop import TrainConfig

#: Samples per forward pass when computing outputs for evaluation or as teacher targets, at most.
EVAL_BATCH = 1000
#: Input values per forward pass, at most: what keeps evaluation of large inputs bounded in memory
#: (a network's activations grow with its input: 1,000 crops of 160 px through MobileNetV2 at once
#: took 5 GB, 54 at a time (2**22 / (3·160·160)) take a few hundred MB). 28×28 images and token ids
#: stay at :data:`EVAL_BATCH`.
EVAL_INPUT_VALUES = 1 << 22


def eval_batch(split: Split, batch_size: int = EVAL_BATCH) -> int:
    """Samples per forward pass for ``split``: ``batch_size``, fewer for large samples."""
    per_sample = max(1, sum(x[0].numel() for x in split.inputs)) if len(split) else 1
    return max(1, min(batch_size, EVAL_INPUT_VALUES // per_sample))


class Objective:
    """One objective. Subclasses set the class attributes and implement :meth:`loss` and
    :meth:`metrics`; :func:`register_objective` adds an instance to :data:`OBJECTIVES`."""

    name: ClassVar[str]
    primary: ClassVar[str]
    """The metric (a key of :meth:`metrics`) that epoch selection and rank searches maximise."""
    needs_labels: ClassVar[bool] = False
    """Whether the data must carry a target (``Split.target``)."""
    needs_teacher: ClassVar[bool] = True
    """Whether training and evaluation always compare with the teacher's outputs. ``classify``
    needs them only to distill (``TrainConfig.distill > 0``)."""
    class_scores: ClassVar[bool] = True
    """Whether the model's output is one score per class (a vector of embeddings is not): a file
    compressed with the objective records its name in ``meta["objective"]``, and
    :func:`deepshrink.models.num_classes` and the ONNX export's argmax check read this."""

    def wants_teacher(self, config: TrainConfig | None = None) -> bool:
        """Whether training with ``config`` (or evaluation, when None) reads teacher outputs."""
        return self.needs_teacher

    def loss(self, outputs: torch.Tensor, target: torch.Tensor | None, teacher: torch.Tensor | None,
             config: TrainConfig) -> torch.Tensor:
        """The mean loss over a batch: ``outputs`` of the student, the batch's ``target`` (labels
        or None) and ``teacher`` outputs (None when :meth:`wants_teacher` is false)."""
        raise NotImplementedError(f"objective {self.name!r} defines no loss")

    def metrics(self, outputs: torch.Tensor, target: torch.Tensor | None,
                teacher: torch.Tensor | None) -> dict[str, float]:
        """Every metric of the objective over a whole split (not batch by batch: neighbour
        overlap compares samples with each other)."""
        raise NotImplementedError(f"objective {self.name!r} defines no metrics")

    def per_sample(self, outputs: torch.Tensor, target: torch.Tensor | None,
                   teacher: torch.Tensor | None) -> torch.Tensor | None:
        """The primary metric of each sample, whose mean is the primary metric (float64), or None
        when the primary metric is not a mean over samples. Two models' per-sample scores on the
        same samples are paired: the standard error of their difference is what tells a real drop
        from the noise of a finite split."""
        return None

    def check_data(self, split: Split, where: str) -> None:
        """A :class:`DataError` when ``split`` cannot be scored by this objective."""
        if self.needs_labels and split.target is None and len(split):
            raise DataError(
                f"objective {self.name!r} needs labels, and the {where} split has none; for data without labels "
                f"judge the compressed model against the dense one: {[n for n, o in OBJECTIVES.items() if not o.needs_labels]}"
            )

    def __repr__(self) -> str:
        return f"<objective {self.name}>"


OBJECTIVES: dict[str, Objective] = {}
"""Every objective by name, in registration order."""


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Class decorator: add an instance of ``cls`` to :data:`OBJECTIVES` (a name registered twice is
    a programming error)."""
    if cls.name in OBJECTIVES:
        raise TypeError(f"objective {cls.name!r} is already registered")
    OBJECTIVES[cls.name] = cls()
    return cls


def get_objective(objective: str | Objective) -> Objective:
    """The registered objective of that name (an :class:`Objective` is returned as it is)."""
    if isinstance(objective, Objective):
        return objective
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    return OBJECTIVES[objective]


def _one_tensor(out: object) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"the objectives score one output tensor per sample; the model returned a "
                         f"{type(out).__name__}")
    return out


def outputs(model: nn.Module, split: Split, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """``model(*split.inputs)`` over the whole split, in batches, without gradients and in eval
    mode (the model's mode is restored). How teacher outputs are computed, once per split."""
    was = model.training
    model.eval()
    batch_size = eval_batch(split, batch_size)
    try:
        with torch.no_grad():
            return torch.cat([_one_tensor(model(*split.take(slice(i, i + batch_size)).inputs)).detach()
                              for i in range(0, len(split), batch_size)])
    finally:
        model.train(was)


def _soft_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))`` averaged over the samples (Hinton et al.
    2015: the T² keeps the gradient scale independent of T). Logits over the last dimension."""
    s = F.log_softmax(student.reshape(-1, student.shape[-1]) / t, dim=1)
    q = F.log_softmax(teacher.reshape(-1, teacher.shape[-1]) / t, dim=1)
    return t * t * F.kl_div(s, q, reduction="batchmean", log_target=True)


def _require(teacher: torch.Tensor | None, outputs_: torch.Tensor, name: str) -> torch.Tensor:
    if teacher is None:
        raise ConfigError(f"objective {name!r} compares with the dense model's outputs; no teacher outputs were given")
    if teacher.shape != outputs_.shape:
        raise ModelError(f"objective {name!r}: the model's outputs have shape {tuple(outputs_.shape)}, the teacher's "
                         f"{tuple(teacher.shape)}")
    return teacher


@register_objective
class Classify(Objective):
    name = "classify"
    primary = "accuracy"
    needs_labels = True
    needs_teacher = False

    def wants_teacher(self, config=None):
        return config is not None and config.distill > 0

    def loss(self, outputs, target, teacher, config):
        loss = F.cross_entropy(outputs, target)
        if config.distill > 0:
            soft = _soft_kl(outputs, _require(teacher, outputs, self.name), config.temperature)
            loss = (1 - config.distill) * loss + config.distill * soft
        return loss

    def metrics(self, outputs, target, teacher):
        if len(outputs) == 0:
            return {"accuracy": math.nan}
        return {"accuracy": float((outputs.argmax(dim=1) == target).float().mean())}

    def per_sample(self, outputs, target, teacher):
        return (outputs.argmax(dim=1) == target).double()


def _topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """Mean over rows of ``|topk(a) ∩ topk(b)| / k``."""
    ia, ib = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
    hits = (ia.unsqueeze(2) == ib.unsqueeze(1)).any(dim=2).sum(dim=1)
    return float(hits.float().mean() / k)


@register_objective
class MatchLogits(Objective):
    """Fidelity of a classifier to its dense self, without labels (a pretrained ImageNet network
    on unlabeled crops): the student learns the teacher's full output distribution."""

    name = "match-logits"
    primary = "top1_agreement"

    def loss(self, outputs, target, teacher, config):
        return _soft_kl(outputs, _require(teacher, outputs, self.name), config.temperature)

    def metrics(self, outputs, target, teacher):
        if len(outputs) == 0:
            return {"top1_agreement": math.nan, "top5_overlap": math.nan, "mean_kl": math.nan}
        teacher = _require(teacher, outputs, self.name)
        s, t = outputs.reshape(-1, outputs.shape[-1]).double(), teacher.reshape(-1, teacher.shape[-1]).double()
        return {
            "top1_agreement": float((s.argmax(1) == t.argmax(1)).double().mean()),
            "top5_overlap": _topk_overlap(s, t, min(5, s.shape[1])),
            "mean_kl": float(_soft_kl(s, t, 1.0)),
        }

    def per_sample(self, outputs, target, teacher):
        teacher = _require(teacher, outputs, self.name)
        c = outputs.shape[-1]  # one prediction per position of a sequence: the sample's mean over them
        return (outputs.reshape(len(outputs), -1, c).argmax(2) == teacher.reshape(len(teacher), -1, c).argmax(2)
                ).double().mean(1)


def _neighbours(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Indices of each row's ``k`` nearest other rows by cosine similarity (itself excluded),
    computed ``chunk`` rows at a time so memory stays O(chunk · n)."""
    unit = F.normalize(x.reshape(len(x), -1).double(), dim=1)
    out = []
    for i in range(0, len(unit), chunk):
        sim = unit[i : i + chunk] @ unit.T
        sim[torch.arange(len(sim)), torch.arange(i, i + len(sim))] = -math.inf
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


@register_objective
class MatchEmbeddings(Objective):
    """Fidelity of an encoder to its dense self (a sentence encoder): the student's embeddings
    point where the teacher's do. Cosine, not MSE, because what users do with embeddings
    (retrieval, clustering) reads their directions."""

    name = "match-embeddings"
    primary = "mean_cosine"
    class_scores = False
    neighbours: ClassVar[int] = 10

    def loss(self, outputs, target, teacher, config):
        teacher = _require(teacher, outputs, self.name)
        return 1 - F.cosine_similarity(outputs.reshape(len(outputs), -1), teacher.reshape(len(teacher), -1),
                                       dim=1).mean()

    def metrics(self, outputs, target, teacher):
        key = f"top{self.neighbours}_overlap"
        if len(outputs) == 0:
            return {"mean_cosine": math.nan, key: math.nan}
        teacher = _require(teacher, outputs, self.name)
        s, t = outputs.reshape(len(outputs), -1).double(), teacher.reshape(len(teacher), -1).double()
        k = min(self.neighbours, len(s) - 1)
        overlap = math.nan
        if k >= 1:
            a, b = _neighbours(s, k), _neighbours(t, k)
            overlap = float((a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).sum(dim=1).double().mean() / k)
        return {"mean_cosine": float(F.cosine_similarity(s, t, dim=1).mean()), key: overlap}

    def per_sample(self, outputs, target, teacher):
        teacher = _require(teacher, outputs, self.name)
        return F.cosine_similarity(outputs.reshape(len(outputs), -1).double(),
                                   teacher.reshape(len(teacher), -1).double(), dim=1)

