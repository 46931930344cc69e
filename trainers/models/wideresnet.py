"""Wide Residual Networks (Zagoruyko & Komodakis, arXiv:1605.07146), the TRADES / FAT layout.

WRN-d-k: a 3x3 stem to 16 channels, three stages of n = (d - 4) / 6 pre-activation blocks with
16k, 32k, 64k channels, BN + activation, global average pool. ReLU as in TRADES/FAT, or Swish
(SiLU) as in the WRN-70-16 teachers of Gowal et al. / Rebuffi et al.
"""
from __future__ import annotations

import torch
from torch import nn

from trainers.models.base import DataCfg, ImageClassifier
from trainers.models.registry import MODELS

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU}


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, act: type[nn.Module],
                 drop_rate: float) -> None:
        super().__init__()
        self.bn1, self.act1 = nn.BatchNorm2d(in_planes), act()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2, self.act2 = nn.BatchNorm2d(planes), act()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.equal_in_out = in_planes == planes and stride == 1
        self.shortcut = nn.Identity() if self.equal_in_out else nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        # Projection shortcuts see the pre-activated input, identity shortcuts the raw one.
        shortcut = x if self.equal_in_out else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.drop(self.act2(self.bn2(out))))
        return out + shortcut


class WideResNet(ImageClassifier):
    def __init__(self, depth: int, widen_factor: int, *, num_classes: int, data_cfg: DataCfg,
                 activation: str = "relu", drop_rate: float = 0.0) -> None:
        super().__init__(data_cfg, num_classes)
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"wide_resnet depth must be 6n+4 (e.g. 28, 34, 70), got {depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"wide_resnet activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(data_cfg.input_size[0], widths[0], 3, 1, 1, bias=False)
        blocks, in_planes = [], widths[0]
        for stage, width in enumerate(widths[1:]):
            for i in range(n):
                blocks.append(WideBlock(in_planes, width, 2 if (stage > 0 and i == 0) else 1, act, drop_rate))
                in_planes = width
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(nn.BatchNorm2d(in_planes), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = in_planes
        self._init_head()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.blocks(self.stem(x)))


@MODELS.register
def wide_resnet(*, num_classes: int, data_cfg: DataCfg, depth: int = 34, widen_factor: int = 10,
                activation: str = "relu", drop_rate: float = 0.0) -> WideResNet:
    """Any WRN-depth-width."""
    return WideResNet(depth, widen_factor, num_classes=num_classes, data_cfg=data_cfg,
                      activation=activation, drop_rate=drop_rate)


@MODELS.register
def wrn28_10(*, num_classes: int, data_cfg: DataCfg, activation: str = "relu") -> WideResNet:
    return WideResNet(28, 10, num_classes=num_classes, data_cfg=data_cfg, activation=activation)


@MODELS.register
def wrn34_10(*, num_classes: int, data_cfg: DataCfg, activation: str = "relu") -> WideResNet:
    """WRN-34-10 (46.2 M parameters with 10 classes), the TRADES / FAT / MTARD robust teacher."""
    return WideResNet(34, 10, num_classes=num_classes, data_cfg=data_cfg, activation=activation)


@MODELS.register
def wrn70_16(*, num_classes: int, data_cfg: DataCfg, activation: str = "swish") -> WideResNet:
    """WRN-70-16 (267 M parameters), the CIFAR-100 robust teacher of B-MTARD and DARHT."""
    return WideResNet(70, 16, num_classes=num_classes, data_cfg=data_cfg, activation=activation)
