"""CIFAR-style ResNets.

- ResNet-18/34 with a 3x3 stem and no max-pool (He et al., "Deep Residual Learning for Image
  Recognition", arXiv:1512.03385; the CIFAR variant used by RSLAD, MTARD and DARHT students).
- PreAct ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", arXiv:1603.05027).
- CIFAR ResNet-56 (6n+2, basic blocks, widths 16/32/64) and ResNet-164 (9n+2, pre-activation
  bottleneck blocks), the thin CIFAR ResNets of both papers; 1x1 projection shortcuts.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from trainers.models.base import DataCfg, ImageClassifier
from trainers.models.registry import MODELS


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes, stride, post_bn=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = _projection(in_planes, planes, stride, post_bn=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        shortcut = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.shortcut = _projection(in_planes, out_planes, stride, post_bn=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        shortcut = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut


def _projection(in_planes: int, out_planes: int, stride: int, post_bn: bool) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    conv = nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_planes)) if post_bn else conv


class ResNet(ImageClassifier):
    """3x3 stem, len(widths) stages of residual blocks (first stage stride 1), global average pool.

    Post-activation blocks get BN+ReLU after the stem; pre-activation ones get a final BN+ReLU
    before pooling instead.
    """

    def __init__(self, block: type[nn.Module], num_blocks: Sequence[int], widths: Sequence[int],
                 *, num_classes: int, data_cfg: DataCfg) -> None:
        super().__init__(data_cfg, num_classes)
        preact = block is not BasicBlock
        self.stem = nn.Conv2d(data_cfg.input_size[0], widths[0], 3, 1, 1, bias=False)
        self.stem_act = nn.Identity() if preact else nn.Sequential(nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, in_planes = [], widths[0]
        for i, (n, width) in enumerate(zip(num_blocks, widths)):
            for j in range(n):
                layers.append(block(in_planes, width, 2 if (i > 0 and j == 0) else 1))
                in_planes = width * block.expansion
        self.layers = nn.Sequential(*layers)
        self.final_act = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU()) if preact else nn.Identity()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = in_planes
        self._init_head()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(x))
        return self.pool(self.final_act(self.layers(x)))


@MODELS.register
def resnet18(*, num_classes: int, data_cfg: DataCfg) -> ResNet:
    """CIFAR ResNet-18 (11.2 M parameters with 10 classes)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], num_classes=num_classes,
                  data_cfg=data_cfg)


@MODELS.register
def resnet34(*, num_classes: int, data_cfg: DataCfg) -> ResNet:
    """CIFAR ResNet-34 (21.3 M parameters with 10 classes)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], [64, 128, 256, 512], num_classes=num_classes,
                  data_cfg=data_cfg)


@MODELS.register
def preact_resnet18(*, num_classes: int, data_cfg: DataCfg) -> ResNet:
    """Pre-activation ResNet-18 (11.2 M parameters with 10 classes)."""
    return ResNet(PreActBlock, [2, 2, 2, 2], [64, 128, 256, 512], num_classes=num_classes,
                  data_cfg=data_cfg)


@MODELS.register
def resnet56(*, num_classes: int, data_cfg: DataCfg) -> ResNet:
    """Thin CIFAR ResNet-56: 3 stages x 9 basic blocks, widths 16/32/64 (0.86 M parameters)."""
    return ResNet(BasicBlock, [9, 9, 9], [16, 32, 64], num_classes=num_classes, data_cfg=data_cfg)


@MODELS.register
def resnet164(*, num_classes: int, data_cfg: DataCfg) -> ResNet:
    """Thin CIFAR ResNet-164: 3 stages x 18 pre-activation bottlenecks (1.7 M parameters)."""
    return ResNet(PreActBottleneck, [18, 18, 18], [16, 32, 64], num_classes=num_classes,
                  data_cfg=data_cfg)
