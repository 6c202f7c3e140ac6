"""Students of a distillation: a from-scratch zoo architecture, or the teacher made narrow.

A narrow student is the teacher's own architecture with the fraction ``width`` of the outputs
(neurons, channels) of every layer but the last, the layers after it taking only the inputs that
remain: fewer weights in every layer, roughly ``width²`` of them in the hidden layers. Its
weights start at random, or (``from_teacher``) from the teacher's outputs of largest L1 weight
norm (the criterion of Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017), which
gives distillation a head start.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from deepshrink.errors import ConfigError, ModelError
from deepshrink.models.zoo import ZOO, create
from deepshrink.prune import current_weight, layer_kind, prunable_layers

NARROW = "narrow"
"""The student name of the teacher's architecture made narrow (``width``)."""


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


def build_student(name: str, outputs: int, *, teacher: nn.Module | None = None, width: float = 0.5,
                  from_teacher: bool = False) -> nn.Module:
    """The untrained student ``name`` with ``outputs`` outputs: a zoo architecture, or
    (``"narrow"``) :func:`narrow` of ``teacher``."""
    check_student_name(name, "student")
    if name == NARROW:
        if teacher is None:
            raise ConfigError("a narrow student needs the teacher")
        return narrow(teacher, width, from_teacher=from_teacher)
    try:
        return create(name, num_classes=outputs)
    except ModelError as exc:
        raise ConfigError(f"student {name!r}: {exc}") from None


def _kept(count: int, width: float) -> int:
    return max(1, min(count, round(width * count)))


def _rebuilt(m: nn.Module, name: str, inputs: int, outputs: int) -> nn.Module:
    """A fresh (randomly initialised) layer like ``m`` with ``inputs`` inputs and ``outputs`` outputs."""
    if type(m) is nn.Linear:
        return nn.Linear(inputs, outputs, bias=m.bias is not None)
    if type(m) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and m.groups == 1:
        return type(m)(inputs, outputs, m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                       bias=m.bias is not None, padding_mode=m.padding_mode)
    raise ConfigError(f"narrow: layer {name!r} is a {type(m).__name__}{' with groups' if getattr(m, 'groups', 1) > 1 else ''}; "
                      "a narrow student is built for chains of linear and (ungrouped) convolution layers")


def narrow(teacher: nn.Module, width: float, *, from_teacher: bool = False) -> nn.Module:
    """``teacher``'s architecture keeping ``round(width · n)`` of the ``n`` outputs of every layer
    but the last; the next layer keeps the matching inputs (for a linear layer after a flattened
    convolution, the channel's every position). The layers are taken as a chain in definition
    order, as in the LeNets and other plain feed-forward networks; batch norms must have been
    folded (``ds.compress`` folds them). Random initialisation, or with ``from_teacher`` the
    teacher's outputs of largest L1 norm (in their original order) and their weights."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width < 1:
        raise ConfigError(f"narrow: width must be in (0, 1), got {width!r}")
    norms = [n for n, m in teacher.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    if norms:
        raise ConfigError(f"narrow: the teacher has normalisation layers {norms[:3]}; fold them into their layers "
                          "first (deepshrink.graph.fold_batchnorm_modules; ds.compress does)")
    student = copy.deepcopy(teacher)
    layers = prunable_layers(student)
    if not layers:
        raise ConfigError("narrow: the teacher has no layer")
    names = list(layers)
    prev: torch.Tensor | None = None  # the previous layer's kept outputs
    prev_count = 0
    for i, name in enumerate(names):
        m = layers[name]
        w = current_weight(m)
        if layer_kind(m) not in ("linear", "conv") or w.ndim < 2:
            _rebuilt(m, name, 0, 0)  # raises, naming the layer
        inputs = torch.arange(w.shape[1])
        if prev is not None:
            if w.shape[1] % prev_count:
                raise ConfigError(f"narrow: layer {name!r} takes {w.shape[1]} inputs, not a multiple of the "
                                  f"{prev_count} outputs of the layer before it; the network is not a chain")
            per = w.shape[1] // prev_count  # the positions of a flattened channel
            inputs = (prev[:, None] * per + torch.arange(per)).flatten()
        if i == len(names) - 1:
            outputs = torch.arange(w.shape[0])
        elif from_teacher:
            score = w.abs().flatten(1).sum(1)
            outputs = torch.sort(torch.topk(score, _kept(w.shape[0], width)).indices).values
        else:
            outputs = torch.arange(_kept(w.shape[0], width))
        new = _rebuilt(m, name, len(inputs), len(outputs))
        if from_teacher:
            with torch.no_grad():
                new.weight.copy_(w[outputs][:, inputs])
                if m.bias is not None:
                    new.bias.copy_(m.bias.detach()[outputs])
        parent, _, child = name.rpartition(".")
        setattr(student.get_submodule(parent) if parent else student, child, new)
        prev, prev_count = outputs, w.shape[0]
    return student


def param_count(model: nn.Module) -> int:
    """The number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["NARROW", "build_student", "check_student_name", "narrow", "num_outputs", "param_count",
           "scratch_architectures"]
