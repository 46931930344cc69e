"""Datasets as tensors: train / validation / test splits plus what a model needs to know.

Images are uint8 [N, C, H, W] (0..255) or float32 in [0, 1] (the embedded digits, which have 17
grey levels that uint8/255 cannot hold exactly); `as_float` turns either into [0, 1] floats.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from trainers.errors import UserError
from trainers.registry import Registry


class DatasetError(UserError):
    """A dataset that is missing, incomplete or malformed on disk; the message names the file."""


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a dataset that models, attacks and augmentation read."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float
    """Default L-inf radius of the threat model on [0, 1] pixels (8/255 on CIFAR, 0.2 on digits)."""
    crop_padding: int
    """Training augmentation: random crop with this much zero padding (0 = none)."""
    flip: bool
    """Training augmentation: random horizontal flip (off for digits, where it changes the class)."""


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ValueError(f"split needs x [N, C, H, W] and y [N], got {tuple(self.x.shape)} and "
                             f"{tuple(self.y.shape)}")
        if self.x.dtype not in (torch.uint8, torch.float32):
            raise ValueError(f"split images must be uint8 or float32, got {self.x.dtype}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor | slice) -> "Split":
        return Split(self.x[index], self.y[index])


@dataclass
class Dataset:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    meta: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or float [0, 1] images -> float32 [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def stratified_holdout(y: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (keep, holdout) with `size` holdout examples, each class represented in
    proportion to its frequency (up to rounding), chosen at random under `seed`."""
    n = len(y)
    if not 0 <= size < n:
        raise ValueError(f"holdout size must be in [0, {n}), got {size}")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    order = perm[torch.argsort(y[perm], stable=True)]  # grouped by class, random within a class
    labels = y[order]
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(n) - starts[labels]
    quantile = (rank_in_class.double() + 0.5) / counts[labels].double()
    pick = order[torch.argsort(quantile, stable=True)[:size]]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[pick] = True
    return torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten()


def carve_validation(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """Hold out a seeded, stratified validation split from the training split."""
    if not 0 < val_size < len(train):
        raise DatasetError(f"data.val_size: must be between 1 and {len(train) - 1} (the training split has "
                           f"{len(train)} examples), got {val_size}")
    keep, held = stratified_holdout(train.y, val_size, seed)
    return train.subset(keep), train.subset(held)


DatasetFactory = Callable[..., Dataset]
DATASETS: Registry = Registry("dataset")
