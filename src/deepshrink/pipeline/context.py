"""What a compression run hands every stage: :class:`CompressContext`.

Before, stages received a ``(train, val, teacher)`` tuple and the pipeline kept the layer table
and graph in local variables next to them; every new need (an objective, a second input, teacher
outputs on the validation split) would have widened that tuple at every call. The context holds
it all once: the data splits, the objective, the dense model's outputs on each split (computed
once, batched, without gradients), the trainer (``fit``/``evaluate`` bound to the objective and the
teacher), progress on/off, the layer table and the graph.

The data a run needs is the :class:`DataSource` protocol, not :class:`~deepshrink.data.Dataset`:
any source of :class:`~deepshrink.data.Split` s (labelled images, unlabeled crops, sentences)
compresses the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deepshrink.data.sources import DataSource
from deepshrink.data.split import Split
from deepshrink.errors import ConfigError, DataError
from deepshrink.graph import Graph, trace
from deepshrink.prune import layer_kind, prunable_layers
from deepshrink.storage.tensors import CompressedTensor
from deepshrink.train import History, Objective, TrainConfig, evaluate, evaluate_metrics, loop, outputs
from deepshrink.train.loop import as_split

SPLITS = ("train", "val", "test")
#: Validation samples a ``max_drop`` rank search scores each candidate on (a search evaluates many).
SEARCH_SAMPLES = 2000
#: Samples per calibration batch of SLR's neuron importance.
CALIBRATION_BATCH = 256


def load_splits(data: DataSource, objective: Objective) -> dict[str, Split]:
    """The training, validation and test splits of ``data``, each checked against ``objective``
    (labels where it needs them); a :class:`DataError` when training or test samples are missing."""
    splits = {}
    for name in SPLITS:
        split = as_split(data.split(name), f"data.split({name!r})")
        objective.check_data(split, name)
        splits[name] = split
    if len(splits["train"]) == 0 or len(splits["test"]) == 0:
        raise DataError(f"compress needs training and test samples; the splits have {data.split_sizes()}")
    return splits


def layer_table(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``(name → module, name → kind)`` of every layer of ``model``, in definition order."""
    layers = prunable_layers(model)
    return layers, {n: layer_kind(m) for n, m in layers.items()}


@dataclass
class CompressContext:
    """Everything the stages of one run share. Create it with :meth:`create`."""

    splits: dict[str, Split]
    objective: Objective
    teacher: dict[str, torch.Tensor | None]
    """The dense model's outputs per split (None where nothing reads them)."""
    graph: Graph
    layers: dict[str, nn.Module] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    progress: bool | None = None
    search_samples: int = SEARCH_SAMPLES
    model: nn.Module | None = None
    """The model the stages change; a stage that replaces it (distillation into a student)
    calls :meth:`replace`."""
    forms: dict[str, CompressedTensor] = field(default_factory=dict)
    """Typed tensors that stages stored for parameters (by parameter name, e.g. ``fc1.weight``):
    the file stores each as it is (:class:`~deepshrink.storage.TensorCoding`'s ``form``), and
    :meth:`fit` leaves those parameters alone."""

    @classmethod
    def create(cls, model: nn.Module, data: DataSource, objective: Objective, *, graph: Graph | None = None,
               teach_train: bool = False, progress: bool | None = None,
               splits: dict[str, Split] | None = None) -> CompressContext:
        """The context of a run on ``model`` (the dense model, the teacher): its splits of ``data``
        checked against ``objective`` (``splits``: those :func:`load_splits` already read), and
        the teacher's outputs on the splits that need them (every split for objectives that
        compare with the teacher; the training split for distillation when ``teach_train``)."""
        splits = load_splits(data, objective) if splits is None else splits
        teacher: dict[str, torch.Tensor | None] = dict.fromkeys(SPLITS)
        for name, split in splits.items():
            if objective.wants_teacher() or (teach_train and name == "train"):
                teacher[name] = outputs(model, split)
        ctx = cls(splits, objective, teacher, graph or trace(model), progress=progress, model=model)
        ctx.layers, ctx.kinds = layer_table(model)
        return ctx

    @property
    def order(self) -> list[str]:
        """Layer names in definition order (what ``_first``/``_last`` rules read)."""
        return list(self.layers)

    @property
    def has_val(self) -> bool:
        return len(self.splits["val"]) > 0

    def refresh(self, model: nn.Module) -> None:
        """Trace ``model`` again (with the same inputs) and rebuild the layer table: after a stage
        that changes the graph."""
        self.graph = trace(model, inputs=self.graph.inputs)
        self.layers, self.kinds = layer_table(model)

    def replace(self, model: nn.Module) -> None:
        """Make ``model`` the run's model from now on (a student instead of the teacher): the
        stages after this one change it, and the file stores it. Stored forms are dropped."""
        self.model = model
        self.forms.clear()
        self.refresh(model)

    # the trainer ------------------------------------------------------------------------------

    def fit(self, model: nn.Module, config: TrainConfig, *, desc: str,
            params: list[nn.Parameter] | None = None,
            penalty: Callable[[], torch.Tensor] | None = None) -> float | None:
        """Retrain ``model`` (or only ``params``) on the training split with the run's objective,
        plus ``penalty()`` per step when given (a prior's negative log-likelihood); returns the
        best validation score (None without a validation split). Parameters whose typed form a
        stage stored (:attr:`forms`) are never trained."""
        fixed = {id(p) for n, p in model.named_parameters() if n in self.forms}
        chosen = [p for p in (params if params is not None else model.parameters()) if id(p) not in fixed]
        h: History = loop.fit(model, self.splits["train"], self.splits["val"], config, params=chosen, desc=desc,
                         progress=self.progress, objective=self.objective,
                         teacher=self.teacher["train"] if self.objective.wants_teacher(config) else None,
                         val_teacher=self.teacher["val"], penalty=penalty)
        best = h.best_val_accuracy
        return None if h.best_epoch < 0 or best != best else best

    def evaluate(self, model: nn.Module, split: str = "val", *, limit: int | None = None) -> float | None:
        """The objective's primary metric on ``split`` (its first ``limit`` samples), None when empty."""
        data, teacher = self._part(split, limit)
        return evaluate(model, data, self.objective, teacher) if len(data) else None

    def per_sample(self, model: nn.Module, split: str = "val") -> torch.Tensor | None:
        """The objective's primary metric per sample of ``split`` (see
        :meth:`~deepshrink.train.Objective.per_sample`), None when it has none or the split is empty."""
        data, teacher = self._part(split, None)
        if not len(data):
            return None
        return self.objective.per_sample(outputs(model, data), data.target, teacher)

    def metrics(self, model: nn.Module, split: str = "test") -> dict[str, float]:
        """Every metric of the objective on ``split``."""
        data, teacher = self._part(split, None)
        return evaluate_metrics(model, data, self.objective, teacher)

    def _part(self, split: str, limit: int | None) -> tuple[Split, torch.Tensor | None]:
        if split not in self.splits:
            raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
        data, teacher = self.splits[split], self.teacher[split]
        if limit is not None and limit < len(data):
            data, teacher = data.take(slice(0, limit)), None if teacher is None else teacher[:limit]
        return data, teacher

    def calibration(self, samples: int) -> tuple[list[tuple[tuple[torch.Tensor, ...], Any]],
                                                  Callable[[torch.Tensor, Any], torch.Tensor]]:
        """The first ``samples`` training samples in batches of ``(inputs, target)`` and the loss a
        gradient-based importance differentiates: the objective's loss against the labels, or
        against the teacher's outputs for objectives that compare with them (summed over the batch)."""
        train, teacher = self._part("train", samples)
        batches = []
        for i in range(0, len(train), CALIBRATION_BATCH):
            part = train.take(slice(i, i + CALIBRATION_BATCH))
            ref = part.target if not self.objective.wants_teacher() else teacher[i : i + CALIBRATION_BATCH]
            batches.append((part.inputs, ref))
        config = TrainConfig()  # distill 0: the labels' loss for classify; match-*: the default temperature
        obj = self.objective

        def loss(out: torch.Tensor, ref: Any) -> torch.Tensor:
            if obj.wants_teacher():
                return obj.loss(out, None, ref, config) * len(out)
            return obj.loss(out, ref, None, config) * len(out)

        return batches, loss
