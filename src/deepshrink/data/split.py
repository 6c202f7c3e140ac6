"""What training, evaluation and compression read from a data set: :class:`Split`.

A split is the model's inputs (one tensor per graph input, in the order of the model's
``forward`` arguments) and an optional target: int64 class labels for a classifier, or nothing
when the model is judged against its own dense outputs (a pretrained ImageNet network on crops
without labels, a sentence encoder). Every data source (:class:`~deepshrink.data.Dataset` for
labelled images, the image-crop and sentence sources of the zoo) hands out splits of this one
type, so the pipeline never asks which kind of data it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from deepshrink.errors import DataError


@dataclass(frozen=True)
class Split:
    """``inputs``: tensors with the same first (sample) dimension, passed as ``model(*inputs)``;
    ``target``: per-sample int64 labels, or ``None`` for data without labels."""

    inputs: tuple[torch.Tensor, ...]
    target: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, tuple) or not self.inputs:
            raise DataError("Split.inputs must be a non-empty tuple of tensors")
        n = len(self.inputs[0])
        for i, x in enumerate(self.inputs):
            if not isinstance(x, torch.Tensor) or x.ndim < 1 or len(x) != n:
                raise DataError(f"Split.inputs[{i}] must be a tensor with {n} samples in its first dimension")
        if self.target is not None and (not isinstance(self.target, torch.Tensor) or len(self.target) != n):
            raise DataError(f"Split.target must be None or a tensor with {n} samples in its first dimension")

    def __len__(self) -> int:
        return len(self.inputs[0])

    def take(self, index: torch.Tensor | slice | Sequence[int]) -> Split:
        """The samples at ``index`` (a slice, or integer positions), in every input and the target."""
        return Split(tuple(x[index] for x in self.inputs), None if self.target is None else self.target[index])

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor | None = None) -> Split:
        """A one-input split, e.g. from the ``(inputs, labels)`` pair of ``Dataset.tensors``."""
        return cls((x,), y)
