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

from typing import Literal

import torch
import torch.nn.functional as F

from trainers.config import check
from trainers.methods.attack import AttackConfig, craft
from trainers.methods.base import MethodConfig, MethodContext, MethodDef, StepInfo, Stateless, kl_per_example, register


class ArdConfig(MethodConfig):
    name: Literal["ard"] = "ard"
    alpha: float = 1.0
    """Weight of the distillation term; the clean CE gets 1 - alpha."""
    temperature: float = 30.0
    kl_reduction: Literal["batchmean", "elementwise_mean"] = "batchmean"
    """batchmean: true per-sample KL averaged over B; elementwise_mean: over B*K (official code)."""
    attack: AttackConfig = AttackConfig.model_validate("pgd")
    """CE-PGD on the student; the official code runs it in train mode (attack.mode)."""

    def check(self) -> None:
        check(0 <= self.alpha <= 1, "alpha", f"must be in [0, 1], got {self.alpha}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


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
        return craft(self.cfg.attack, self.ctx.student, x, y, threat_eps=self.ctx.eps)

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


register(MethodDef("ard", ArdConfig, Ard, teacher_roles=("teacher",),
                   profiles={"paper": {},
                             "official": {"attack": {"mode": "train"}, "kl_reduction": "elementwise_mean"}}))
