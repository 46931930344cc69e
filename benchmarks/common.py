"""Timing helpers shared by the benchmarks: warm-up, device sync, median of repeats, and a table
that prints every figure next to the baseline measured in the same run."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """rows: (name, seconds, extra). The ratio is baseline time / row time (> 1: faster than baseline)."""
    base = dict((name, sec) for name, sec, _ in rows)[baseline]
    print(f"\n{title}\n{'':<40}{'seconds':>10}  {'vs baseline':>11}  notes (baseline: {baseline})")
    for name, sec, extra in rows:
        print(f"{name:<40}{sec:>10.4f}  {base / sec:>10.2f}x  {extra}")
