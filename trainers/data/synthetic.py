"""Synthetic images for tests: deterministic under a seed, learnable, any size and class count.

Each class has a fixed random template; an image is its class template plus Gaussian noise,
clipped to [0, 1] and stored as uint8, so the readers' dtype path is exercised too.
"""
from __future__ import annotations

import torch

from trainers.data.base import DATASETS, Dataset, DatasetInfo, Split


@DATASETS.register
def synthetic(*, num_classes: int = 10, image_size: int = 8, channels: int = 3, train_size: int = 512,
              val_size: int = 128, test_size: int = 256, noise: float = 0.15, seed: int = 0,
              eps: float = 8 / 255) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, image_size, image_size, generator=gen)

    def make(n: int) -> Split:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=gen)]
        x = templates[y] + noise * torch.randn(n, channels, image_size, image_size, generator=gen)
        return Split(x.clamp(0, 1).mul(255).round().to(torch.uint8), y)

    train, val, test = make(train_size), make(val_size), make(test_size)
    info = DatasetInfo(name="synthetic", num_classes=num_classes, channels=channels,
                       image_size=image_size, mean=(0.5,) * channels, std=(0.25,) * channels,
                       eps=eps, crop_padding=0, flip=False)
    return Dataset(info, train, val, test)
