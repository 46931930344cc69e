"""PGD adversarial training (Madry et al., https://arxiv.org/abs/1706.06083),
docs/methods.md#pgd-at.

L = CE(f(x'), y), x' = CE-PGD on the model: uniform start, 10 steps of eps/4 (2/255 at 8/255).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from trainers.methods.attack import AttackConfig, craft
from trainers.methods.base import MethodConfig, MethodContext, MethodDef, StepInfo, Stateless, register


class PgdAtConfig(MethodConfig):
    name: Literal["pgd_at"] = "pgd_at"
    attack: AttackConfig = AttackConfig.model_validate("pgd")


class PgdAt(Stateless):
    def __init__(self, cfg: PgdAtConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor:
        return craft(self.cfg.attack, self.ctx.student, x, y, threat_eps=self.ctx.eps)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.ctx.forward(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        return loss, {"ce_adv": loss.detach(), "train_adv_acc": (logits.argmax(1) == y).float().mean()}


register(MethodDef("pgd_at", PgdAtConfig, PgdAt))
