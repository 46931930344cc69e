"""Datasets by name (train / val / test tensors + DatasetInfo) and the device-resident loader."""
from __future__ import annotations

from typing import Any

from trainers.data import cifar, digits, synthetic, tinyimagenet  # noqa: F401  (registration)
from trainers.data.base import DATASETS, Dataset, DatasetError, DatasetInfo, Split, as_float
from trainers.data.loader import DeviceLoader, random_crop_flip


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a registered dataset; None-valued kwargs are dropped so the dataset's defaults win."""
    return DATASETS.build(name, **kwargs)


__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetInfo", "DeviceLoader", "Split",
           "as_float", "load_dataset", "random_crop_flip"]
