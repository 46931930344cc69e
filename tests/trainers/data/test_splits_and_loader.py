"""Digits splits, stratified holdout, the synthetic set, DeviceLoader and the batched augmentation."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from trainers.data import Dataset, DeviceLoader, Split, load_dataset, random_crop_flip
from trainers.data.base import stratified_holdout


def rows(split: Split) -> Counter:
    return Counter((x.numpy().tobytes(), int(y)) for x, y in zip(split.x, split.y))


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_digits_splits_partition_the_dataset(digits: Dataset) -> None:
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1200, 200, 397)
    assert digits.train.x.shape[1:] == (1, 8, 8) and digits.train.x.dtype == torch.float32
    assert 0 <= digits.train.x.min() and digits.train.x.max() <= 1
    bunch = load_digits()
    full = Split(torch.from_numpy(bunch.images).float().div(16).unsqueeze(1),
                 torch.from_numpy(bunch.target))
    assert rows(digits.train) + rows(digits.val) + rows(digits.test) == rows(full)


def test_digits_test_split_is_fixed_and_val_size_configurable(digits: Dataset) -> None:
    other = load_dataset("digits", split_seed=1, val_size=300)
    assert torch.equal(other.test.x, digits.test.x) and torch.equal(other.test.y, digits.test.y)
    assert (len(other.train), len(other.val)) == (1100, 300)
    assert rows(other.val) != rows(digits.val)


def test_digits_val_is_stratified(digits: Dataset) -> None:
    pool = torch.cat([digits.train.y, digits.val.y])
    expected = torch.bincount(pool).double() * len(digits.val) / len(pool)
    assert (torch.bincount(digits.val.y, minlength=10).double() - expected).abs().max() <= 1


def test_stratified_holdout_is_exact_seeded_and_disjoint() -> None:
    y = torch.randint(0, 7, (503,), generator=torch.Generator().manual_seed(0))
    keep, held = stratified_holdout(y, 61, seed=3)
    assert len(held) == 61 and len(keep) == 503 - 61
    assert sorted(torch.cat([keep, held]).tolist()) == list(range(503))
    again_keep, again_held = stratified_holdout(y, 61, seed=3)
    assert torch.equal(keep, again_keep) and torch.equal(held, again_held)
    assert set(stratified_holdout(y, 61, seed=4)[1].tolist()) != set(held.tolist())
    expected = torch.bincount(y).double() * 61 / 503
    assert (torch.bincount(y[held], minlength=7).double() - expected).abs().max() <= 1
    with pytest.raises(ValueError):
        stratified_holdout(y, 503, seed=0)


def test_synthetic_is_deterministic_under_seed() -> None:
    a, b = load_dataset("synthetic", seed=5), load_dataset("synthetic", seed=5)
    c = load_dataset("synthetic", seed=6)
    for name in ("train", "val", "test"):
        assert torch.equal(a.split(name).x, b.split(name).x)
        assert torch.equal(a.split(name).y, b.split(name).y)
    assert not torch.equal(a.train.x, c.train.x)
    assert a.train.x.dtype == torch.uint8 and a.train.x.shape == (512, 3, 8, 8)


def split_of(n: int) -> Split:
    x = torch.arange(n * 3 * 4 * 4).remainder(256).to(torch.uint8).reshape(n, 3, 4, 4)
    return Split(x, torch.arange(n))


def test_loader_batches_are_float_in_unit_range() -> None:
    loader = DeviceLoader(split_of(10), batch_size=4, crop_padding=1, flip=True, shuffle=True)
    out = list(loader)
    assert [len(y) for _, y in out] == [4, 4, 2] and len(loader) == 3
    for x, _ in out:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 4, 4) and 0 <= x.min() and x.max() <= 1
    assert sorted(torch.cat([y for _, y in out]).tolist()) == list(range(10))
    x, y = next(iter(DeviceLoader(split_of(10), batch_size=4)))  # no shuffle, no augmentation
    assert torch.equal(x, split_of(10).x[:4].float() / 255) and y.tolist() == [0, 1, 2, 3]


def test_loader_is_deterministic_per_seed_and_epoch() -> None:
    def run(seed: int, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = DeviceLoader(split_of(32), batch_size=8, shuffle=True, crop_padding=1, flip=True,
                              seed=seed)
        loader.set_epoch(epoch)
        return list(loader)

    def same(a: list, b: list) -> bool:
        return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))

    assert same(run(0, 3), run(0, 3))
    assert not same(run(0, 3), run(0, 4)) and not same(run(0, 3), run(1, 3))


def labels_seen(loader: DeviceLoader) -> list[int]:
    return torch.cat([y for _, y in loader]).tolist()


@pytest.mark.parametrize("n, world_size", [(11, 2), (12, 2), (1, 3)])
def test_even_shards_give_ranks_equal_batches_covering_all(n: int, world_size: int) -> None:
    loaders = [DeviceLoader(split_of(n), batch_size=2, shuffle=True, rank=r, world_size=world_size)
               for r in range(world_size)]
    seen = [labels_seen(loader) for loader in loaders]
    assert {len(loader) for loader in loaders} == {len(list(loader)) for loader in loaders}
    assert len({len(loader) for loader in loaders}) == 1
    assert all(len(s) == loaders[0].num_examples for s in seen)
    assert set().union(*seen) == set(range(n))


def test_uneven_shards_are_disjoint_and_exact() -> None:
    loaders = [DeviceLoader(split_of(11), batch_size=4, rank=r, world_size=3, even_shards=False)
               for r in range(3)]
    seen = [labels_seen(loader) for loader in loaders]
    assert [len(s) for s in seen] == [loader.num_examples for loader in loaders] == [4, 4, 3]
    assert sorted(sum(seen, [])) == list(range(11))


def test_drop_last_drops_the_partial_batch() -> None:
    loader = DeviceLoader(split_of(10), batch_size=4, shuffle=True, drop_last=True)
    assert len(loader) == 2 and [len(y) for _, y in loader] == [4, 4]


def matching_windows(out: torch.Tensor, x: torch.Tensor, padding: int) -> set[tuple[int, int, bool]]:
    """All (dy, dx, flipped) such that `out` is that window of the zero-padded `x`."""
    padded = F.pad(x, (padding,) * 4)
    h, w = x.shape[-2:]
    found = set()
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            window = padded[:, dy:dy + h, dx:dx + w]
            for flipped in (False, True):
                if torch.equal(out, window.flip(-1) if flipped else window):
                    found.add((dy, dx, flipped))
    return found


@pytest.mark.parametrize("flip", [True, False])
def test_random_crop_flip_outputs_shifted_windows(flip: bool) -> None:
    x = torch.rand(64, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    out = random_crop_flip(x, 2, flip, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    matches = [matching_windows(o, xi, 2) for o, xi in zip(out, x)]
    assert all(len(m) == 1 for m in matches)  # random pixels: exactly one window fits
    offsets = {(dy, dx) for m in matches for dy, dx, _ in m}
    flips = {f for m in matches for _, _, f in m}
    assert len(offsets) > 10  # the offsets really vary
    assert flips == ({False, True} if flip else {False})


def test_random_crop_flip_without_padding() -> None:
    x = torch.rand(32, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(random_crop_flip(x, 0, False, torch.Generator()), x)
    out = random_crop_flip(x, 0, True, torch.Generator().manual_seed(2))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert torch.all(flipped ^ kept) and flipped.any() and kept.any()
