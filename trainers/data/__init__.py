"""Datasets by name (train / val / test tensors + DatasetInfo) and the device-resident loader."""
from __future__ import annotations

import inspect
from typing import Any

from trainers.data import cifar, digits, synthetic, tinyimagenet  # noqa: F401  (registration)
from trainers.data.base import DATASETS, Dataset, DatasetError, DatasetInfo, Split, as_float
from trainers.data.loader import DeviceLoader, random_crop_flip


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a registered dataset; None-valued kwargs are dropped so the dataset's defaults win.
    An argument the dataset does not take (a `root` for the embedded digits) is a DatasetError."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    takes = inspect.signature(DATASETS.get(name)).parameters
    unknown = sorted(set(given) - set(takes))
    if unknown:
        accepted = ", ".join(takes) or "none"
        raise DatasetError(f"data: dataset {name!r} takes no {', '.join(unknown)} (its options: {accepted})"
                           + ("; it is embedded, nothing is read from disk" if "root" in unknown else ""))
    return DATASETS.build(name, **given)


__all__ = ["DATASETS", "Dataset", "DatasetError", "DatasetInfo", "DeviceLoader", "Split",
           "as_float", "load_dataset", "random_crop_flip"]
