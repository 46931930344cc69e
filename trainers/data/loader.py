"""A device-resident batch iterator: the whole split lives on the device (uint8 when it can), is
shuffled per epoch, sharded by (rank, world_size), and augmented in batch on the device with
random crop (zero padding) + horizontal flip. No per-image Python work in the hot loop.

Deterministic: the permutation and augmentation of epoch e depend only on (seed, e), so a run
resumed at epoch e sees exactly the batches an uninterrupted run sees.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F

from trainers.data.base import Split, as_float


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Batched random crop of the zero-padded images back to their size, then random h-flip."""
    b, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=gen)
        ox = torch.randint(0, 2 * padding + 1, (b,), device=x.device, generator=gen)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B,1,H,1]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B,1,1,W]
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = torch.rand(b, device=x.device, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x


class DeviceLoader:
    """Iterate (x in [0, 1] float32, y) mini-batches of one split, on `device`.

    With `even_shards` (training) every rank gets the same number of batches: the epoch
    permutation is padded (by repeating its start) to a multiple of world_size, as torch's
    DistributedSampler does, then strided by rank. Without it (evaluation) the shards are disjoint
    and cover each example exactly once, so summed counts are exact.
    """

    def __init__(self, split: Split, *, batch_size: int, device: torch.device | str = "cpu",
                 shuffle: bool = False, crop_padding: int = 0, flip: bool = False,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, seed: int = 0,
                 channels_last: bool = False, even_shards: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.device = torch.device(device)
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.crop_padding, self.flip = crop_padding, flip
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.channels_last, self.even_shards = channels_last, even_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_examples(self) -> int:
        """Examples this rank sees per epoch (before drop_last)."""
        n = len(self.y)
        if self.even_shards:
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self.num_examples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _generator(self) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        return gen

    def _indices(self, gen: torch.Generator) -> torch.Tensor:
        n = len(self.y)
        order = (torch.randperm(n, device=self.device, generator=gen) if self.shuffle
                 else torch.arange(n, device=self.device))
        total = math.ceil(n / self.world_size) * self.world_size
        if self.even_shards and total > n:  # repeat the start; more than once if n < world_size
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = self._generator()
        index = self._indices(gen)
        augment = self.crop_padding > 0 or self.flip
        for i in range(len(self)):
            idx = index[i * self.batch_size:(i + 1) * self.batch_size]
            x = as_float(self.x[idx])
            if augment:
                x = random_crop_flip(x, self.crop_padding, self.flip, gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.y[idx]
