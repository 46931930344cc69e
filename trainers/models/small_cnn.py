"""A small CNN for the embedded 8x8 digits (and other small images): two 3x3 conv blocks with
batch norm, a 2x2 max-pool after each, average pooling to 2x2, a hidden linear layer."""
from __future__ import annotations

import torch
from torch import nn

from trainers.models.base import DataCfg, ImageClassifier
from trainers.models.registry import MODELS


class SmallCNN(ImageClassifier):
    def __init__(self, *, num_classes: int, data_cfg: DataCfg, width: int = 32, hidden: int = 128) -> None:
        super().__init__(data_cfg, num_classes)
        c = data_cfg.input_size[0]
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(8 * width, hidden), nn.ReLU())
        self.num_features = hidden
        self._init_head()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@MODELS.register
def small_cnn(*, num_classes: int, data_cfg: DataCfg, width: int = 32, hidden: int = 128) -> SmallCNN:
    """Two conv blocks (width, 2*width channels) and a hidden layer; ~53 k parameters at width 32 on 10 classes."""
    return SmallCNN(num_classes=num_classes, data_cfg=data_cfg, width=width, hidden=hidden)
