"""CW-inf: PGD on the Carlini-Wagner margin loss (Carlini & Wagner, "Towards Evaluating the
Robustness of Neural Networks", https://arxiv.org/abs/1608.04644), in the L-inf form used by FAT
and DARHT: maximize -clamp(z_y - max_{j != y} z_j + kappa, min=0). Inputs/outputs in [0, 1].

Defaults: kappa 50, 30 steps of eps/4, uniform random start (the FAT / DARHT convention).
"""
from __future__ import annotations

import torch
from torch import nn

from attacks.pgd import RandomStart, pgd


def cw_inf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
           step_size: float | None = None, steps: int = 30, kappa: float = 50.0,
           random_start: RandomStart = "uniform", start_scale: float = 0.001, restarts: int = 1,
           generator: torch.Generator | None = None, require_eval: bool = True) -> torch.Tensor:
    """Strongest iterate per example of PGD on the CW margin loss."""
    return pgd(model, x, y, eps=eps, step_size=step_size, steps=steps, random_start=random_start,
               start_scale=start_scale, restarts=restarts, loss="cw", kappa=kappa, keep_best=True,
               generator=generator, require_eval=require_eval)
