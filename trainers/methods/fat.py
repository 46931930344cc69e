"""FAT and FAT-TRADES (Zhang et al., "Attacks Which Do Not Kill Training Make Adversarial Learning
Stronger", https://arxiv.org/abs/2002.11242; code zjfheart/Friendly-Adversarial-Training),
docs/methods.md#fat-and-fat-trades.

x' = early-stopped PGD with per-example budget tau (attacks/early_stop.py): CE loss and uniform
start (FAT) or KL loss and 0.001 N(0, 1) start (FAT-TRADES); 10 steps of 0.007 per 0.031 of eps
(the reference code's step at its eps 0.031), noise omega = 0.001.
Loss: CE(f(x'), y) (FAT) or the TRADES loss with beta = 6 (FAT-TRADES).
tau = tau + #(milestones m with epoch1 > m), epoch1 the 1-based epoch: FAT 0/1/2 over epochs
1-50 / 51-90 / 91+ (milestones 50, 90); FAT-TRADES 0/1/2/3 at <=30/<=50/<=70/after.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from attacks import early_stopped_pgd
from trainers.configs import check
from trainers.methods.base import MethodContext, MethodDef, StepInfo, Stateless, attack_eps, register
from trainers.methods.trades import trades_loss
from trainers.modes import eval_mode


@dataclass(frozen=True, kw_only=True)
class FatConfig:
    profile: str = "paper"
    tau: int = 0
    """Budget before the first milestone (a fixed budget when tau_milestones is empty)."""
    tau_milestones: tuple[int, ...] = (50, 90)
    """1-based epochs after which tau grows by one."""
    steps: int = 10
    step_size: float | None = None
    """None: the reference code's 0.007 at eps 0.031, scaled with eps (0.00708 at 8/255)."""
    eps: float | None = None
    omega: float = 0.001
    beta: float = 6.0
    """FAT-TRADES only: weight of the KL term."""

    def __post_init__(self) -> None:
        check(self.tau >= 0, "tau", f"must be >= 0, got {self.tau}")
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(list(self.tau_milestones) == sorted(self.tau_milestones), "tau_milestones", "must be increasing")


def tau_at(cfg: FatConfig, epoch: int) -> int:
    """Budget at 0-based `epoch`."""
    return cfg.tau + sum(epoch + 1 > m for m in cfg.tau_milestones)


def craft_fat(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor, *, tau: int, eps: float,
              steps: int, step_size: float | None, omega: float, loss: str) -> torch.Tensor:
    with eval_mode(ctx.student):
        return early_stopped_pgd(ctx.student, x, y, tau=tau, eps=eps, steps=steps,
                                 step_size=step_size, omega=omega, loss=loss)


class Fat(Stateless):
    loss_kind = "ce"

    def __init__(self, cfg: FatConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor:
        c = self.cfg
        return craft_fat(self.ctx, x, y, tau=tau_at(c, info.epoch), eps=attack_eps(c.eps, self.ctx.eps),
                         steps=c.steps, step_size=c.step_size, omega=c.omega, loss=self.loss_kind)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.ctx.forward(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        return loss, {"ce_adv": loss.detach(), "train_adv_acc": (logits.argmax(1) == y).float().mean(),
                      "tau": torch.tensor(float(tau_at(self.cfg, info.epoch)))}


class FatTrades(Fat):
    loss_kind = "kl"

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: Any,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        clean, adv = self.ctx.forward(x), self.ctx.forward(x_adv)
        loss, ce, kl = trades_loss(clean, adv, y, self.cfg.beta)
        return loss, {"ce": ce.detach(), "kl": kl.detach(), "train_acc": (clean.argmax(1) == y).float().mean(),
                      "train_adv_acc": (adv.argmax(1) == y).float().mean(),
                      "tau": torch.tensor(float(tau_at(self.cfg, info.epoch)))}


OFFICIAL = {"eps": 0.031, "step_size": 0.007}
register(MethodDef("fat", FatConfig, Fat, profiles={"paper": {}, "official": OFFICIAL}))
register(MethodDef("fat_trades", FatConfig, FatTrades,
                   profiles={"paper": {"tau_milestones": (30, 50, 70)},
                             "official": {**OFFICIAL, "tau_milestones": (30, 50, 70)}}))
