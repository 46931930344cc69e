"""ARD (Goldblum et al., "Adversarially Robust Distillation", https://arxiv.org/abs/1905.09747;
code goldblum/AdversariallyRobustDistillation), docs/methods.md#ard.

L = alpha * tau^2 * KL(p(T(x) / tau) || p(S(x') / tau)) + (1 - alpha) * CE(S(x), y),
alpha = 1, tau = 30; one teacher, on clean x. x' = CE-PGD on the student: uniform start, 10 steps
of eps/4 (2/255 at 8/255). With alpha = 1 the clean student forward is skipped.

Profiles: "paper" (default) attacks with the student in eval mode and reduces KL as batchmean
(sum over classes, mean over the batch). "official" reproduces the reference code: the attack runs
with the student in train mode (BN batch statistics), and `nn.KLDivLoss()`'s default reduction
'mean' averages over all B*K elements (batchmean / K).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from trainers.configs import check
from trainers.methods.base import (MethodContext, MethodDef, StepInfo, Stateless, attack_eps,
                                   kl_per_example, register)
from trainers.methods.pgd_at import craft_ce_pgd


@dataclass(frozen=True, kw_only=True)
class ArdConfig:
    profile: str = "paper"
    alpha: float = 1.0
    """Weight of the distillation term; the clean CE gets 1 - alpha."""
    temperature: float = 30.0
    kl_reduction: Literal["batchmean", "elementwise_mean"] = "batchmean"
    """batchmean: true per-sample KL averaged over B; elementwise_mean: over B*K (official code)."""
    attack_mode: Literal["eval", "train"] = "eval"
    """Student mode while crafting x' (train: as the official code)."""
    steps: int = 10
    step_size: float | None = None
    """None: eps / 4."""
    eps: float | None = None
    """Attack radius; None: the threat model's eps."""

    def __post_init__(self) -> None:
        check(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


def ard_loss(teacher_nat: torch.Tensor, student_adv: torch.Tensor, student_nat: torch.Tensor | None,
             y: torch.Tensor, *, alpha: float, temperature: float,
             kl_reduction: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """alpha * KD + (1 - alpha) * CE(S(x), y), KD = tau^2 * KL(p(T(x) / tau) || p(S(x') / tau))
    reduced as batchmean or over B*K elements; returns (loss, KD, CE). With alpha = 1 the CE is
    not computed (None) and student_nat may be None."""
    kd = kl_per_example(teacher_nat, student_adv, temperature).mean() * temperature ** 2
    if kl_reduction == "elementwise_mean":
        kd = kd / teacher_nat.shape[1]
    if alpha == 1:
        return kd, kd, None
    ce = F.cross_entropy(student_nat.float(), y)
    return alpha * kd + (1 - alpha) * ce, kd, ce


class Ard(Stateless):
    def __init__(self, cfg: ArdConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor:
        c = self.cfg
        return craft_ce_pgd(self.ctx, x, y, eps=attack_eps(c.eps, self.ctx.eps), steps=c.steps,
                            step_size=c.step_size, random_start="uniform", attack_mode=c.attack_mode)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.cfg
        student_adv = self.ctx.forward(x_adv)
        student_nat = None if c.alpha == 1 else self.ctx.forward(x)
        loss, kd, ce = ard_loss(self.ctx.teachers.logits_of(0, x), student_adv, student_nat, y, alpha=c.alpha,
                                temperature=c.temperature, kl_reduction=c.kl_reduction)
        metrics = {"kd": kd.detach(), "train_adv_acc": (student_adv.argmax(1) == y).float().mean()}
        if ce is not None:
            metrics.update(ce=ce.detach(), train_acc=(student_nat.argmax(1) == y).float().mean())
        return loss, metrics


register(MethodDef("ard", ArdConfig, Ard, teachers=(1, 1),
                   profiles={"paper": {},
                             "official": {"attack_mode": "train", "kl_reduction": "elementwise_mean"}}))
