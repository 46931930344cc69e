"""CIFAR-10 and CIFAR-100 from their python releases (https://www.cs.toronto.edu/~kriz/cifar.html).

The release files are pickles written by Python 2. They are data, never code: they are read with an
unpickler that can only rebuild numpy arrays, so a tampered file raises instead of running anything.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.data.base import DATASETS, Dataset, DatasetError, DatasetInfo, Split, carve_validation

SOURCE = "the python version from https://www.cs.toronto.edu/~kriz/cifar.html"
EPS = 8 / 255
# The globals a pickled numpy array refers to (numpy 1.x and 2.x module names; `_frombuffer` for
# protocol 5), plus `_codecs.encode`, which Python 3 uses to pickle bytes at protocol 2.
SAFE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


@dataclass(frozen=True)
class CifarRelease:
    """Where one CIFAR release keeps its splits and what its images look like on average."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes
    layout: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR10 = CifarRelease(
    name="cifar10", folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_file="test_batch",
    label_key=b"labels", layout="{data_batch_1..5,test_batch}", num_classes=10,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
CIFAR100 = CifarRelease(
    name="cifar100", folder="cifar-100-python", train_files=("train",), test_file="test",
    label_key=b"fine_labels", layout="{train,test}", num_classes=100,
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy arrays need and refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset file")
        return super().find_class(module, name)


def dataset_dir(root: str | Path, folder: str, marker: str) -> Path:
    """`root/folder`, or `root` itself when it already is that folder (it holds `marker`)."""
    root = Path(root).expanduser()
    if root.name == folder or (not (root / folder).is_dir() and (root / marker).is_file()):
        return root
    return root / folder


def _read_batch(path: Path, release: CifarRelease) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 3072] uint8, labels [N] int64) from one release file, validated."""
    try:
        with path.open("rb") as f:
            # Python 2 str -> bytes, so the keys are b"data" and the raw pixels stay bytes.
            batch = NumpyOnlyUnpickler(f, encoding="bytes").load()
    except Exception as err:  # any parse failure, including a refused global
        raise DatasetError(f"{release.name}: {path} is not a valid CIFAR pickle: {err}") from err
    if not isinstance(batch, dict) or b"data" not in batch or release.label_key not in batch:
        raise DatasetError(f"{release.name}: {path} is not a valid CIFAR pickle: expected a dict "
                           f"with keys b'data' and {release.label_key!r}")
    data, labels = batch[b"data"], np.asarray(batch[release.label_key])
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3072 and labels.shape == (len(data),) and labels.dtype.kind in "iu"
            and (len(labels) == 0 or 0 <= labels.min() <= labels.max() < release.num_classes)):
        raise DatasetError(f"{release.name}: {path} is not a valid CIFAR pickle: expected b'data' "
                           f"uint8 [N, 3072] and {release.label_key!r} N ints in "
                           f"[0, {release.num_classes})")
    return data, labels.astype(np.int64)


def _read_split(folder: Path, files: tuple[str, ...], release: CifarRelease) -> Split:
    batches = [_read_batch(folder / name, release) for name in files]
    x = np.concatenate([data for data, _ in batches]).reshape(-1, 3, 32, 32)
    y = np.concatenate([labels for _, labels in batches])
    return Split(torch.from_numpy(x), torch.from_numpy(y))


def _load(release: CifarRelease, root: str, val_size: int, split_seed: int) -> Dataset:
    folder = dataset_dir(root, release.folder, release.train_files[0])
    for name in (*release.train_files, release.test_file):
        if not (folder / name).is_file():
            raise DatasetError(f"{release.name}: missing {folder / name}; expected "
                               f"<root>/{release.folder}/{release.layout} ({SOURCE})")
    train, val = carve_validation(_read_split(folder, release.train_files, release), val_size,
                                  split_seed)
    test = _read_split(folder, (release.test_file,), release)
    info = DatasetInfo(name=release.name, num_classes=release.num_classes, channels=3, image_size=32,
                       mean=release.mean, std=release.std, eps=EPS, crop_padding=4, flip=True)
    return Dataset(info, train, val, test, meta={"path": str(folder)})


@DATASETS.register
def cifar10(*, root: str, val_size: int = 1000, split_seed: int = 0) -> Dataset:
    return _load(CIFAR10, root, val_size, split_seed)


@DATASETS.register
def cifar100(*, root: str, val_size: int = 2000, split_seed: int = 0) -> Dataset:
    return _load(CIFAR100, root, val_size, split_seed)
