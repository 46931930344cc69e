"""Learning-rate schedules as pure functions of (epoch, step) (docs/design.md#one-training-loop)."""
from __future__ import annotations

import math

from trainers.train_config import ScheduleConfig


def lr_at(cfg: ScheduleConfig, base_lr: float, *, epoch: int, step: int, steps_per_epoch: int,
          epochs: int) -> float:
    """The lr for step `step` (0-based, within the epoch) of 0-based `epoch`.

    Warm-up: linear, reaching base_lr when `warmup_epochs` are complete (the current step counts
    as done, so the first step is not wasted at lr 0). multistep: base_lr * gamma^#(milestones
    <= epoch). cosine: from base_lr (after warm-up) to 0 at the end of training.
    """
    t = epoch + (step / steps_per_epoch if cfg.per_step else 0.0)
    done = t + (1.0 / steps_per_epoch if cfg.per_step else 1.0)
    if cfg.warmup_epochs and done < cfg.warmup_epochs:
        return base_lr * done / cfg.warmup_epochs
    if cfg.kind == "multistep":
        return base_lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.kind == "cosine":
        span = max(epochs - cfg.warmup_epochs, 1e-12)
        return base_lr * 0.5 * (1 + math.cos(math.pi * min(max(t - cfg.warmup_epochs, 0.0) / span, 1.0)))
    return base_lr
