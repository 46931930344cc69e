"""CIFAR and Tiny ImageNet readers, on small fixture folders written in the real on-disk formats."""
from __future__ import annotations

import io
import os
import pickle
import shutil
import struct
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.data import DatasetError, load_dataset

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str and bytes as Python 2 `str` (BINSTRING) and numpy 1.x module names, byte for byte
    the way the real CIFAR files were written by Python 2's cPickle at protocol 2."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_str8(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        head = (pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256
                else pickle.BINSTRING + struct.pack("<i", len(data)))
        self.write(head + data)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8


def py2_dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_cifar(root: Path, name: str = "cifar10", protocol: int | str = 4) -> dict[str, dict]:
    """Two random images per file; returns what was written, by file name."""
    folder, files, key = (("cifar-10-batches-py", CIFAR10_FILES, "labels") if name == "cifar10"
                          else ("cifar-100-python", ["train", "test"], "fine_labels"))
    (root / folder).mkdir(parents=True)
    written = {}
    for i, file in enumerate(files):
        rng = np.random.default_rng(i)
        batch = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), key: [i % 10, 7]}
        if protocol == "py2":
            (root / folder / file).write_bytes(py2_dumps(batch))
        else:
            with open(root / folder / file, "wb") as f:
                pickle.dump({k.encode(): v for k, v in batch.items()}, f, protocol=protocol)
        written[file] = batch
    return written


def rows(x: torch.Tensor, y: torch.Tensor) -> Counter:
    return Counter((img.numpy().tobytes(), int(label)) for img, label in zip(x, y))


@pytest.mark.parametrize("protocol", [2, 4, 5, "py2"])
def test_cifar10_round_trips_pixels_and_labels(tmp_path: Path, protocol: int | str) -> None:
    written = write_cifar(tmp_path, protocol=protocol)
    ds = load_dataset("cifar10", root=str(tmp_path), val_size=2)
    test = written["test_batch"]
    assert ds.test.x.shape == (2, 3, 32, 32) and ds.test.x.dtype == torch.uint8
    assert ds.test.y.tolist() == [5, 7] and ds.test.y.dtype == torch.int64
    assert ds.test.x[1, 2, 5, 7] == test["data"][1, 2 * 1024 + 5 * 32 + 7]  # channel-first as stored
    assert torch.equal(ds.test.x, torch.from_numpy(test["data"]).reshape(2, 3, 32, 32))
    assert len(ds.train) == 8 and len(ds.val) == 2
    train_written = [written[f] for f in CIFAR10_FILES[:5]]
    expected = rows(torch.from_numpy(np.concatenate([b["data"] for b in train_written]))
                    .reshape(-1, 3, 32, 32), torch.tensor(sum((b["labels"] for b in train_written), [])))
    assert rows(ds.train.x, ds.train.y) + rows(ds.val.x, ds.val.y) == expected
    info = ds.info
    assert (info.num_classes, info.channels, info.image_size) == (10, 3, 32)
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2471, 0.2435, 0.2616)
    assert info.eps == 8 / 255 and info.crop_padding == 4 and info.flip


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    written = write_cifar(tmp_path, "cifar100")
    ds = load_dataset("cifar100", root=str(tmp_path), val_size=1)
    assert len(ds.train) == 1 and len(ds.val) == 1 and ds.test.y.tolist() == [1, 7]
    assert torch.equal(ds.test.x, torch.from_numpy(written["test"]["data"]).reshape(2, 3, 32, 32))
    assert ds.info.num_classes == 100 and ds.info.mean == (0.5071, 0.4865, 0.4409)
    assert ds.info.std == (0.2673, 0.2564, 0.2762) and ds.info.eps == 8 / 255


def test_cifar_root_may_be_the_dataset_folder(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    parent = load_dataset("cifar10", root=str(tmp_path), val_size=2)
    itself = load_dataset("cifar10", root=str(tmp_path / "cifar-10-batches-py"), val_size=2)
    assert torch.equal(parent.train.x, itself.train.x) and torch.equal(parent.test.x, itself.test.x)


def test_cifar_missing_file_names_path_and_layout(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    missing = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    missing.unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    message = str(err.value)
    assert str(missing) in message and "{data_batch_1..5,test_batch}" in message
    assert "cs.toronto.edu/~kriz/cifar.html" in message and "\n" not in message
    with pytest.raises(DatasetError, match="cifar-100-python/train"):
        load_dataset("cifar100", root=str(tmp_path / "nowhere"))


class RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable, tuple[str]]:
        return os.system, (self.command,)


@pytest.mark.parametrize("payload", [
    lambda marker: RunsShell(f"touch {marker}"),
    lambda marker: {b"data": RunsShell(f"touch {marker}"), b"labels": [0, 1]},
])
def test_cifar_refuses_code_in_pickles(tmp_path: Path, payload: Callable[[Path], Any]) -> None:
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    target = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    target.write_bytes(pickle.dumps(payload(marker)))
    with pytest.raises(DatasetError, match=f"{target}.*not allowed"):
        load_dataset("cifar10", root=str(tmp_path), val_size=2)
    assert not marker.exists()


@pytest.mark.parametrize("content", [
    {b"images": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]},  # wrong key
    {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]},  # wrong shape
    {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},  # wrong dtype
    {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},  # label count
    {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},  # label range
    [1, 2, 3],  # not a dict
    None,  # not a pickle at all
])
def test_cifar_rejects_malformed_files(tmp_path: Path, content: Any) -> None:
    write_cifar(tmp_path)
    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(b"garbage" if content is None else pickle.dumps(content))
    with pytest.raises(DatasetError, match=f"{target} is not a valid CIFAR pickle"):
        load_dataset("cifar10", root=str(tmp_path), val_size=2)


WNIDS = ["n03", "n01", "n02"]  # deliberately not sorted: the file's order is the class order
VAL = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n03"), ("val_2.JPEG", "n01"), ("val_3.JPEG", "n02")]


def color(label: int, k: int) -> tuple[int, int, int]:
    return (40 + 60 * label, 20 * k + 10, 200 - 50 * label)


def write_tiny(root: Path) -> Path:
    """Three classes, two solid-color training images each, four validation images."""
    folder = root / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for label, wnid in enumerate(WNIDS):
        (folder / "train" / wnid / "images").mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (64, 64), color(label, k)).save(
                folder / "train" / wnid / "images" / f"{wnid}_{k}.JPEG")
    lines = []
    for k, (file, wnid) in enumerate(VAL):
        Image.new("RGB", (64, 64), color(WNIDS.index(wnid), k)).save(folder / "val" / "images" / file)
        lines.append(f"{file}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def assert_solid(x: torch.Tensor, rgb: tuple[int, int, int]) -> None:
    """JPEG is lossy, but a solid color survives within a few levels."""
    assert (x.int() - torch.tensor(rgb)[:, None, None]).abs().max() <= 3


def test_tinyimagenet_reads_classes_in_wnids_order(tmp_path: Path) -> None:
    folder = write_tiny(tmp_path)
    ds = load_dataset("tinyimagenet", root=str(tmp_path), val_size=2)
    assert ds.test.x.shape == (4, 3, 64, 64) and ds.test.x.dtype == torch.uint8
    assert ds.test.y.tolist() == [WNIDS.index(wnid) for _, wnid in VAL]
    for k, x in enumerate(ds.test.x):
        assert_solid(x, color(int(ds.test.y[k]), k))
    assert len(ds.train) == 4 and len(ds.val) == 2 and ds.train.x.shape[1:] == (3, 64, 64)
    for x, y in zip(torch.cat([ds.train.x, ds.val.x]), torch.cat([ds.train.y, ds.val.y])):
        k = 0 if (x[1].int() - color(int(y), 0)[1]).abs().max() <= 3 else 1  # green encodes k
        assert_solid(x, color(int(y), k))
    assert sorted(torch.cat([ds.train.y, ds.val.y]).tolist()) == [0, 0, 1, 1, 2, 2]
    assert ds.info.num_classes == 3 and ds.info.mean == (0.4802, 0.4481, 0.3975)
    assert ds.info.eps == 8 / 255 and ds.meta["wnids"] == WNIDS
    itself = load_dataset("tinyimagenet", root=str(folder), val_size=2)
    assert torch.equal(itself.train.x, ds.train.x) and torch.equal(itself.test.x, ds.test.x)


def test_tinyimagenet_cache_is_written_and_reused(tmp_path: Path) -> None:
    folder = write_tiny(tmp_path)
    first = load_dataset("tinyimagenet", root=str(tmp_path), val_size=2)
    assert sorted(p.name for p in folder.iterdir()) == ["decoded_uint8.npz", "train", "val",
                                                         "wnids.txt"]  # no temp file left
    (folder / "train" / "n01" / "images" / "n01_0.JPEG").unlink()
    second = load_dataset("tinyimagenet", root=str(tmp_path), val_size=2)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.x, second.test.x)
    (folder / "wnids.txt").write_text("n01\nn02\nn03\n")  # other class order: decoded again
    third = load_dataset("tinyimagenet", root=str(tmp_path), val_size=2)
    assert len(third.train) + len(third.val) == 5 and third.meta["wnids"] == ["n01", "n02", "n03"]
    assert third.test.y.tolist() == [1, 2, 0, 1]


def test_tinyimagenet_without_writable_folder_skips_cache(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_tiny(tmp_path)

    def read_only(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert len(load_dataset("tinyimagenet", root=str(tmp_path), val_size=2).test) == 4
    assert not (folder / "decoded_uint8.npz").exists()


def _bad_image(path: Path) -> None:
    Image.new("RGB", (32, 32)).save(path)


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "wnids": (lambda f: (f / "wnids.txt").unlink(), "wnids.txt"),
    "class folder": (lambda f: shutil.rmtree(f / "train" / "n02"), "train/n02/images"),
    "annotations": (lambda f: (f / "val" / "val_annotations.txt").unlink(),
                    "val/val_annotations.txt"),
    "val image": (lambda f: (f / "val" / "images" / "val_2.JPEG").unlink(), "val/images/val_2.JPEG"),
    "unknown wnid": (lambda f: (f / "val" / "val_annotations.txt").write_text("a.JPEG\tn99\n"),
                     "val_annotations.txt:1"),
    "wrong size": (lambda f: _bad_image(f / "train" / "n01" / "images" / "n01_1.JPEG"),
                   "n01_1.JPEG is 32x32"),
    "not an image": (lambda f: (f / "val" / "images" / "val_1.JPEG").write_bytes(b"text"),
                     "val_1.JPEG is not a readable image"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_tinyimagenet_refuses_broken_folders(tmp_path: Path, breakage: str) -> None:
    folder = write_tiny(tmp_path)
    breaker, expected = BREAKAGES[breakage]
    breaker(folder)
    with pytest.raises(DatasetError) as err:
        load_dataset("tinyimagenet", root=str(tmp_path), val_size=2)
    assert expected in str(err.value) and "\n" not in str(err.value)
