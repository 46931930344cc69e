"""MobileNetV2 (Sandler et al., arXiv:1801.04381), CIFAR variant: stride-1 stem and a stride-1
second stage, so 32x32 inputs end at 4x4 (as in the RSLAD / ARD student code)."""
from __future__ import annotations

import torch
from torch import nn

from trainers.models.base import DataCfg, ImageClassifier
from trainers.models.registry import MODELS

# (expansion, out_planes, num_blocks, stride) per stage; ImageNet uses stride 2 for the second.
STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = expansion * in_planes
        self.body = nn.Sequential(
            nn.Conv2d(in_planes, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))
        self.residual = stride == 1 and in_planes == out_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


class MobileNetV2(ImageClassifier):
    def __init__(self, *, num_classes: int, data_cfg: DataCfg) -> None:
        super().__init__(data_cfg, num_classes)
        layers: list[nn.Module] = [nn.Conv2d(data_cfg.input_size[0], 32, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(32), nn.ReLU6()]
        in_planes = 32
        for expansion, out_planes, n, stride in STAGES:
            for i in range(n):
                layers.append(InvertedResidual(in_planes, out_planes, expansion, stride if i == 0 else 1))
                in_planes = out_planes
        layers += [nn.Conv2d(in_planes, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.num_features = 1280
        self._init_head()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@MODELS.register
def mobilenet_v2(*, num_classes: int, data_cfg: DataCfg) -> MobileNetV2:
    """CIFAR MobileNetV2 (2.3 M parameters with 10 classes)."""
    return MobileNetV2(num_classes=num_classes, data_cfg=data_cfg)
