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


def interleaved_seconds(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int = 5,
                        warmup: int = 1) -> dict[str, float]:
    """Median wall time of each `fn()`, the repeats interleaved (each round runs every fn once), so
    a change in the load of a shared machine hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory(device: torch.device) -> str:
    """Peak GPU memory allocated since the last `reset_peak(device)`, for a table's notes."""
    if device.type != "cuda":
        return "peak memory n/a (CPU)"
    return f"peak {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def print_table(title: str, rows: list[tuple[str, float, str]], baseline: str) -> None:
    """rows: (name, seconds, extra). The ratio is baseline time / row time (> 1: faster than baseline)."""
    base = dict((name, sec) for name, sec, _ in rows)[baseline]
    print(f"\n{title}\n{'':<40}{'seconds':>10}  {'vs baseline':>11}  notes (baseline: {baseline})")
    for name, sec, extra in rows:
        print(f"{name:<40}{sec:>10.4f}  {base / sec:>10.2f}x  {extra}")
