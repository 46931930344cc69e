"""TRADES (Zhang et al., https://arxiv.org/abs/1901.08573; code yaodongyu/TRADES),
docs/methods.md#trades.

L = CE(f(x), y) + beta * batchmean KL(p(f(x)) || p(f(x'))), beta = 6, gradient through both
terms; x' maximizes the summed KL against the model's own clean prediction (model in eval mode):
start x + 0.001 N(0, 1), 10 steps of 0.007 per 0.031 of eps (the reference code's step at its eps
0.031). Paper profile: eps from the threat model; official profile: the reference code's eps 0.031
and step 0.007.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from trainers.config import check
from trainers.methods.attack import AttackConfig, craft
from trainers.methods.base import MethodConfig, MethodContext, MethodDef, StepInfo, Stateless, kl_per_example, register


class TradesConfig(MethodConfig):
    name: Literal["trades"] = "trades"
    beta: float = 6.0
    attack: AttackConfig = AttackConfig.model_validate("trades")
    """KL-PGD against the model's own clean prediction; step 0.007 per 0.031 of eps."""

    def check(self) -> None:
        check(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
                beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CE(z, y) + beta * mean_b KL(softmax(z_b) || softmax(z'_b)); returns (loss, ce, kl).

    Neither term is detached: the gradient flows through the clean logits in both."""
    ce = F.cross_entropy(logits_clean.float(), y)
    kl = kl_per_example(logits_clean, logits_adv).mean()
    return ce + beta * kl, ce, kl


class Trades(Stateless):
    def __init__(self, cfg: TradesConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor:
        return craft(self.cfg.attack, self.ctx.student, x, y, threat_eps=self.ctx.eps)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Two forwards, as the reference code does: batch-norm statistics are per input batch.
        clean, adv = self.ctx.forward(x), self.ctx.forward(x_adv)
        loss, ce, kl = trades_loss(clean, adv, y, self.cfg.beta)
        return loss, {"ce": ce.detach(), "kl": kl.detach(),
                      "train_acc": (clean.argmax(1) == y).float().mean(),
                      "train_adv_acc": (adv.argmax(1) == y).float().mean()}


OFFICIAL_ATTACK = {"eps": 0.031, "step_size": 0.007}
register(MethodDef("trades", TradesConfig, Trades,
                   profiles={"paper": {}, "official": {"attack": OFFICIAL_ATTACK}}))
