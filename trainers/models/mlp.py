"""A multilayer perceptron on the flattened image: `depth` hidden linear layers with ReLU.

A third architecture family next to the CNNs and ViTs, small enough to adversarially train on the
embedded 8x8 digits in seconds (where a tiny ViT does not become robust).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from trainers.models.base import DataCfg, ImageClassifier
from trainers.models.registry import MODELS


class MLP(ImageClassifier):
    def __init__(self, *, num_classes: int, data_cfg: DataCfg, hidden: int = 256, depth: int = 2) -> None:
        super().__init__(data_cfg, num_classes)
        if depth < 1 or hidden < 1:
            raise ValueError(f"depth and hidden must be >= 1, got {depth} and {hidden}")
        width = math.prod(data_cfg.input_size)
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.num_features = hidden
        self._init_head()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@MODELS.register
def mlp(*, num_classes: int, data_cfg: DataCfg, hidden: int = 256, depth: int = 2) -> MLP:
    """`depth` hidden layers of `hidden` units on C*H*W inputs; 85 k parameters on 8x8 digits."""
    return MLP(num_classes=num_classes, data_cfg=data_cfg, hidden=hidden, depth=depth)
