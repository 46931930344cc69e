"""TRADES (Zhang et al., https://arxiv.org/abs/1901.08573; code yaodongyu/TRADES),
docs/methods.md#trades.

L = CE(f(x), y) + beta * batchmean KL(p(f(x)) || p(f(x'))), beta = 6, gradient through both
terms; x' maximizes the summed KL against the model's own clean prediction (model in eval mode):
start x + 0.001 N(0, 1), 10 steps of 0.007 per 0.031 of eps (the reference code's step at its eps
0.031). Paper profile: eps from the threat model; official profile: the reference code's eps 0.031
and step 0.007.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attacks import kl_pgd
from attacks.pgd import ZHANG_STEP_PER_EPS
from trainers.configs import check
from trainers.methods.base import (MethodContext, MethodDef, StepInfo, Stateless, attack_eps,
                                   kl_per_example, register)
from trainers.modes import eval_mode


@dataclass(frozen=True, kw_only=True)
class TradesConfig:
    profile: str = "paper"
    beta: float = 6.0
    steps: int = 10
    step_size: float | None = None
    """None: the reference code's 0.007 at eps 0.031, scaled with eps (0.00708 at 8/255)."""
    eps: float | None = None
    """Attack radius; None: the threat model's eps."""

    def __post_init__(self) -> None:
        check(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor,
                beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CE(z, y) + beta * mean_b KL(softmax(z_b) || softmax(z'_b)); returns (loss, ce, kl).

    Neither term is detached: the gradient flows through the clean logits in both."""
    ce = F.cross_entropy(logits_clean.float(), y)
    kl = kl_per_example(logits_clean, logits_adv).mean()
    return ce + beta * kl, ce, kl


def craft_trades(ctx: MethodContext, x: torch.Tensor, *, eps: float, steps: int,
                 step_size: float | None) -> torch.Tensor:
    """TRADES's KL-PGD on the student in eval mode; step_size None: ZHANG_STEP_PER_EPS * eps."""
    step = ZHANG_STEP_PER_EPS * eps if step_size is None else step_size
    with eval_mode(ctx.student):
        with torch.no_grad():
            target = torch.softmax(ctx.student(x).float(), dim=1)
        return kl_pgd(ctx.student, x, target_probs=target, eps=eps, steps=steps, step_size=step)


class Trades(Stateless):
    def __init__(self, cfg: TradesConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor:
        c = self.cfg
        return craft_trades(self.ctx, x, eps=attack_eps(c.eps, self.ctx.eps), steps=c.steps,
                            step_size=c.step_size)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Two forwards, as the reference code does: batch-norm statistics are per input batch.
        clean, adv = self.ctx.forward(x), self.ctx.forward(x_adv)
        loss, ce, kl = trades_loss(clean, adv, y, self.cfg.beta)
        return loss, {"ce": ce.detach(), "kl": kl.detach(),
                      "train_acc": (clean.argmax(1) == y).float().mean(),
                      "train_adv_acc": (adv.argmax(1) == y).float().mean()}


register(MethodDef("trades", TradesConfig, Trades,
                   profiles={"paper": {}, "official": {"eps": 0.031, "step_size": 0.007}}))
