"""Tiny ImageNet (200 classes, 64x64) from its standard `tiny-imagenet-200/` folder.

The labels of the official test set are not public, so the official validation set (10,000 images,
`val/val_annotations.txt`) is our test split and our validation split is carved from train.
Class i is the i-th line of `wnids.txt`. Decoding the 110,000 JPEGs takes minutes, so the decoded
uint8 arrays are cached once as `decoded_uint8.npz` in the dataset folder (skipped when the folder is
read-only); delete that file after changing the images.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from trainers.data.base import DATASETS, Dataset, DatasetError, DatasetInfo, Split, carve_validation
from trainers.data.cifar import dataset_dir

FOLDER = "tiny-imagenet-200"
CACHE = "decoded_uint8.npz"
SIZE = 64
LAYOUT = (f"expected <root>/{FOLDER}/{{wnids.txt,train/<wnid>/images/*.JPEG,val/val_annotations.txt,"
          f"val/images/*.JPEG}} (http://cs231n.stanford.edu/tiny-imagenet-200.zip)")


def _fail(problem: str) -> DatasetError:
    return DatasetError(f"tinyimagenet: {problem}; {LAYOUT}")


def _read_wnids(folder: Path) -> list[str]:
    path = folder / "wnids.txt"
    if not path.is_file():
        raise _fail(f"missing {path}")
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise _fail(f"{path} must list distinct class ids, one per line")
    return wnids


def _train_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        found = sorted(images.glob("*.JPEG")) if images.is_dir() else []
        if not found:
            raise _fail(f"missing {images}/*.JPEG")
        files += found
        labels += [label] * len(found)
    return files, labels


def _test_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    path = folder / "val" / "val_annotations.txt"
    if not path.is_file():
        raise _fail(f"missing {path}")
    index = {wnid: i for i, wnid in enumerate(wnids)}
    files, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise _fail(f"{path}:{number} is not '<file>\\t<wnid from wnids.txt>\\t...'")
        files.append(folder / "val" / "images" / fields[0])
        labels.append(index[fields[1]])
    return files, labels


def _decode(files: list[Path]) -> np.ndarray:
    """[N, 3, 64, 64] uint8, filled in place so peak memory is one copy of the split."""
    out = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
    for i, path in enumerate(files):
        if not path.is_file():
            raise _fail(f"missing {path}")
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise _fail(f"{path} is not a readable image ({err})") from err
        if pixels.shape != (SIZE, SIZE, 3):
            raise _fail(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, not {SIZE}x{SIZE}")
        out[i] = pixels.transpose(2, 0, 1)
    return out


def _decode_all(folder: Path, wnids: list[str]) -> dict[str, np.ndarray]:
    train_files, train_y = _train_files(folder, wnids)
    test_files, test_y = _test_files(folder, wnids)
    return {"wnids": np.array(wnids), "train_x": _decode(train_files),
            "train_y": np.array(train_y, dtype=np.int64), "test_x": _decode(test_files),
            "test_y": np.array(test_y, dtype=np.int64)}


def _read_cache(path: Path, wnids: list[str]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there is no cache or it was made for other classes."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("wnids", "train_x", "train_y", "test_x", "test_y")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise DatasetError(f"tinyimagenet: unreadable cache {path} ({err}); delete it to "
                           f"decode the images again") from err
    return arrays if arrays["wnids"].tolist() == wnids else None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file, then rename); a read-only or full disk just means no cache."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


@DATASETS.register
def tinyimagenet(*, root: str, val_size: int = 2000, split_seed: int = 0) -> Dataset:
    folder = dataset_dir(root, FOLDER, "wnids.txt")
    wnids = _read_wnids(folder)
    cache = folder / CACHE
    arrays = _read_cache(cache, wnids)
    if arrays is None:
        arrays = _decode_all(folder, wnids)
        _write_cache(cache, arrays)
    train = Split(torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"]))
    train, val = carve_validation(train, val_size, split_seed)
    test = Split(torch.from_numpy(arrays["test_x"]), torch.from_numpy(arrays["test_y"]))
    info = DatasetInfo(name="tinyimagenet", num_classes=len(wnids), channels=3, image_size=SIZE,
                       mean=(0.4802, 0.4481, 0.3975), std=(0.2770, 0.2691, 0.2821), eps=8 / 255,
                       crop_padding=4, flip=True)
    return Dataset(info, train, val, test, meta={"path": str(folder), "wnids": wnids})
