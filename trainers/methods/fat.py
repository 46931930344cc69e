"""FAT and FAT-TRADES (Zhang et al., "Attacks Which Do Not Kill Training Make Adversarial Learning
Stronger", https://arxiv.org/abs/2002.11242; code zjfheart/Friendly-Adversarial-Training),
docs/methods.md#fat-and-fat-trades.

x' = early-stopped PGD with per-example budget tau (attacks/early_stop.py): CE loss and uniform
start (FAT) or KL loss and 0.001 N(0, 1) start (FAT-TRADES); 10 steps of 0.007 per 0.031 of eps
(the reference code's step at its eps 0.031), noise omega = 0.001 (trainers/methods/attack.py).
Loss: CE(f(x'), y) (FAT) or the TRADES loss with beta = 6 (FAT-TRADES).
tau = tau + #(milestones m with epoch1 > m), epoch1 the 1-based epoch: FAT 0/1/2 over epochs
1-50 / 51-90 / 91+ (milestones 50, 90); FAT-TRADES 0/1/2/3 at <=30/<=50/<=70/after.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from trainers.config import check
from trainers.methods.attack import AttackConfig, craft
from trainers.methods.base import MethodConfig, MethodContext, MethodDef, StepInfo, Stateless, register
from trainers.methods.trades import OFFICIAL_ATTACK, trades_loss


class FatConfig(MethodConfig):
    name: Literal["fat", "fat_trades"] = "fat"
    tau_milestones: tuple[int, ...] = (50, 90)
    """1-based epochs after which the budget attack.tau grows by one."""
    beta: float = 6.0
    """FAT-TRADES only: weight of the KL term."""
    attack: AttackConfig = AttackConfig.model_validate("fat")
    """Early-stopped PGD; attack.tau is the budget before the first milestone."""

    def check(self) -> None:
        check(self.attack.tau is not None, "attack.tau", "FAT's attack is early-stopped: set a budget >= 0")
        check(list(self.tau_milestones) == sorted(self.tau_milestones), "tau_milestones", "must be increasing")


def tau_at(cfg: FatConfig, epoch: int) -> int:
    """Budget at 0-based `epoch`."""
    return cfg.attack.tau + sum(epoch + 1 > m for m in cfg.tau_milestones)


class Fat(Stateless):
    def __init__(self, cfg: FatConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor:
        return craft(self.cfg.attack, self.ctx.student, x, y, threat_eps=self.ctx.eps, tau=tau_at(self.cfg, info.epoch))

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.ctx.forward(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        return loss, {"ce_adv": loss.detach(), "train_adv_acc": (logits.argmax(1) == y).float().mean(),
                      "tau": torch.tensor(float(tau_at(self.cfg, info.epoch)))}


class FatTrades(Fat):
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: Any,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        clean, adv = self.ctx.forward(x), self.ctx.forward(x_adv)
        loss, ce, kl = trades_loss(clean, adv, y, self.cfg.beta)
        return loss, {"ce": ce.detach(), "kl": kl.detach(), "train_acc": (clean.argmax(1) == y).float().mean(),
                      "train_adv_acc": (adv.argmax(1) == y).float().mean(),
                      "tau": torch.tensor(float(tau_at(self.cfg, info.epoch)))}


FAT_TRADES = {"tau_milestones": (30, 50, 70), "attack": {"loss": "kl", "random_start": "normal"}}
register(MethodDef("fat", FatConfig, Fat, profiles={"paper": {}, "official": {"attack": OFFICIAL_ATTACK}}))
register(MethodDef("fat_trades", FatConfig, FatTrades,
                   profiles={"paper": FAT_TRADES,
                             "official": {**FAT_TRADES, "attack": {**FAT_TRADES["attack"], **OFFICIAL_ATTACK}}}))
