"""The model zoo: the networks of Han et al. (2016) on 28×28 grey-scale images."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

from deepshrink.errors import ModelError


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


ZOO: dict[str, Callable[..., nn.Module]] = {
    "lenet-300-100": lenet_300_100,
    "lenet-5": lenet_5,
}


def create(name: str, num_classes: int = 10) -> nn.Module:
    """Build a zoo model by name."""
    try:
        factory = ZOO[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}: expected one of {sorted(ZOO)} or 'package.module:factory'"
        ) from None
    return factory(num_classes=num_classes)
