"""Students of a distillation: a from-scratch zoo architecture, or the teacher made narrow.

A narrow student is the teacher's own network with only the fraction ``width`` of the channels
(neurons) of every layer whose outputs can be removed, the layers after it rewired
(:func:`deepshrink.structured.narrow`, which follows the channels through the traced graph):
roughly ``width²`` of the weights of the hidden layers. Its weights start at random, or
(``from_teacher``) as the teacher's channels of largest L1 weight norm (Li et al., "Pruning
Filters for Efficient ConvNets", ICLR 2017), which gives distillation a head start.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deepshrink.errors import ConfigError, ModelError
from deepshrink.models.zoo import ZOO, create
from deepshrink.structured import narrow

NARROW = "narrow"
"""The student name of the teacher's network made narrow (``width``)."""

__all__ = ["NARROW", "build_student", "check_student_name", "num_outputs", "param_count", "scratch_architectures"]


def scratch_architectures() -> list[str]:
    """The zoo architectures trained here from scratch (the ones a student may be)."""
    return sorted(n for n, e in ZOO.items() if e.pretrained is None)


def check_student_name(name: object, where: str) -> None:
    """A :class:`ConfigError` unless ``name`` is a from-scratch zoo architecture or ``"narrow"``."""
    allowed = [*scratch_architectures(), NARROW]
    if not isinstance(name, str) or name not in allowed:
        pretrained = isinstance(name, str) and name in ZOO
        raise ConfigError(f"{where} must be one of {allowed}, got {name!r}"
                          + (" (a pretrained network, not an architecture trained from scratch)" if pretrained else ""))


def num_outputs(layer: nn.Module) -> int:
    """The number of outputs of a network whose last layer is ``layer``."""
    for attr in ("out_features", "out_channels", "embedding_dim"):
        if isinstance(getattr(layer, attr, None), int):
            return getattr(layer, attr)
    return int(layer.weight.shape[0])


def param_count(model: nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def build_student(name: str, outputs: int, *, teacher: nn.Module | None = None, width: float = 0.5,
                  from_teacher: bool = False, inputs: Sequence[torch.Tensor] | None = None) -> nn.Module:
    """The untrained student ``name`` with ``outputs`` outputs: a zoo architecture, or
    (``"narrow"``) ``teacher`` keeping ``width`` of its channels, traced on the example batch
    ``inputs``, at random unless ``from_teacher``."""
    check_student_name(name, "student")
    if name != NARROW:
        try:
            return create(name, num_classes=outputs)
        except ModelError as exc:
            raise ConfigError(f"student {name!r}: {exc}") from None
    if teacher is None or inputs is None:
        raise ConfigError("a narrow student needs the teacher and an example batch of its inputs")
    student = narrow(teacher, 1 - width, tuple(inputs), "l1")
    if not from_teacher:
        for m in student.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return student.eval()
