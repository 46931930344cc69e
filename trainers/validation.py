"""Cheap per-epoch evaluation (clean + PGD) on a split, sharded over ranks with exact counts.

This is for model selection and progress; the reported numbers come from the evaluation pool
(orchestrator.evaluate) with the full attack suite.
"""
from __future__ import annotations

import torch
from torch import nn

from attacks import AttackSpec
from attacks.scoring import clean_correct, robust_correct
from trainers.data import Split, as_float
from trainers.distributed import DistInfo, all_reduce_sum
from trainers.modes import eval_mode


def evaluate_clean_pgd(model: nn.Module, split: Split, *, eps: float, pgd_steps: int, batch_size: int,
                       device: torch.device, dist: DistInfo = DistInfo(), max_examples: int | None = None,
                       seed: int = 0) -> dict[str, float]:
    """{clean, pgd, w_robust} accuracies (and counts) of `model` on `split`.

    PGD: `pgd_steps` steps of eps/4 from x + 0.001 N(0, 1), the DARHT paper's evaluation setting.
    Ranks evaluate disjoint strided shards and the counts are summed, so every rank returns the
    same numbers.
    """
    n = len(split) if max_examples is None else min(max_examples, len(split))
    index = torch.arange(dist.rank, n, dist.world_size)
    x = as_float(split.x[index]).to(device)
    y = split.y[index].to(device)
    spec = AttackSpec("pgd", {"eps": eps, "steps": pgd_steps})
    with eval_mode(model):
        clean = clean_correct(model, x, y, batch_size)
        robust = robust_correct(model, x, y, spec, seed=seed + dist.rank, batch_size=batch_size, clean=clean)
    counts = all_reduce_sum(torch.tensor([clean.sum().item(), robust.sum().item(), len(y)],
                                         dtype=torch.float64, device=device))
    c, r, total = counts.tolist()
    clean_acc, pgd_acc = c / total, r / total
    return {"clean": clean_acc, "pgd": pgd_acc, "w_robust": (clean_acc + pgd_acc) / 2,
            "n": int(total), "clean_correct": int(c), "pgd_correct": int(r)}
