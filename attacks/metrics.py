"""Accuracy with counts, per-point worst case, W-Robust, transferability, repeated trials.

Everything starts from boolean per-example masks, so counts (not only ratios) are always kept and
a worst case over attacks is per point (AND of the masks), never an average of accuracies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import torch
from scipy.stats import mannwhitneyu


@dataclass(frozen=True)
class Count:
    correct: int
    total: int

    @property
    def rate(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def __add__(self, other: "Count") -> "Count":
        return Count(self.correct + other.correct, self.total + other.total)


def count(mask: torch.Tensor) -> Count:
    return Count(int(mask.sum()), int(mask.numel()))


def worst_case(masks: Iterable[torch.Tensor]) -> torch.Tensor:
    """Per point: robust only if robust under every attack."""
    masks = list(masks)
    if not masks:
        raise ValueError("worst_case needs at least one mask")
    out = masks[0].clone()
    for m in masks[1:]:
        out &= m
    return out


def w_robust(clean: Count, robust: Count) -> float:
    """W-Robust = (clean accuracy + robust accuracy) / 2 (MTARD, DARHT)."""
    return (clean.rate + robust.rate) / 2


@dataclass(frozen=True)
class Transfer:
    fooled_both: int
    fooled_student: int

    @property
    def rate(self) -> float:
        return self.fooled_both / self.fooled_student if self.fooled_student else float("nan")


def transfer_rates(student_correct_adv: torch.Tensor, teachers_correct_adv: Mapping[str, torch.Tensor],
                   eligible: torch.Tensor) -> dict[str, Transfer]:
    """DARHT section 4.1: among `eligible` points (all teachers correct on clean inputs), with
    adversarial examples crafted on the student, per teacher #(fool student and teacher) /
    #(fool student)."""
    fooled_student = eligible & ~student_correct_adv
    n = int(fooled_student.sum())
    return {name: Transfer(int((fooled_student & ~ok).sum()), n) for name, ok in teachers_correct_adv.items()}


def trial_indices(n: int, trials: int, size: int, seed: int) -> list[torch.Tensor]:
    """`trials` random subsets of `size` distinct points each (DARHT: 30 x 1,000)."""
    if not 0 < size <= n:
        raise ValueError(f"trial size must be in [1, {n}], got {size}")
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen)[:size] for _ in range(trials)]


def w_robust_per_trial(clean: torch.Tensor, robust: torch.Tensor, subsets: list[torch.Tensor]) -> np.ndarray:
    """W-Robust of each subset."""
    return np.array([w_robust(count(clean[s]), count(robust[s])) for s in subsets])


def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test of two samples of per-trial scores: (U, p-value)."""
    result = mannwhitneyu(np.asarray(a), np.asarray(b), alternative="two-sided")
    return float(result.statistic), float(result.pvalue)
