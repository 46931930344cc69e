"""PGD adversarial training (Madry et al., https://arxiv.org/abs/1706.06083),
docs/methods.md#pgd-at.

L = CE(f(x'), y), x' = CE-PGD on the model: uniform start, 10 steps of eps/4 (2/255 at 8/255).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from attacks import pgd
from trainers.configs import check
from trainers.methods.base import MethodContext, MethodDef, StepInfo, Stateless, attack_eps, register
from trainers.modes import eval_mode


@dataclass(frozen=True, kw_only=True)
class PgdAtConfig:
    profile: str = "paper"
    steps: int = 10
    step_size: float | None = None
    """None: eps / 4."""
    eps: float | None = None
    """Attack radius; None: the threat model's eps."""
    random_start: Literal["none", "uniform", "normal"] = "uniform"
    attack_mode: Literal["eval", "train"] = "eval"
    """Model mode while crafting x' (train: BN batch statistics, as some reference codes do)."""

    def __post_init__(self) -> None:
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


def craft_ce_pgd(ctx: MethodContext, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                 steps: int, step_size: float | None, random_start: str,
                 attack_mode: str = "eval") -> torch.Tensor:
    """Final iterate of CE-PGD on the student, in the requested mode (shared by AT and KD methods)."""
    kwargs = dict(eps=eps, steps=steps, step_size=step_size, random_start=random_start, keep_best=False)
    if attack_mode == "train":
        return pgd(ctx.student, x, y, require_eval=False, **kwargs)
    with eval_mode(ctx.student):
        return pgd(ctx.student, x, y, **kwargs)


class PgdAt(Stateless):
    def __init__(self, cfg: PgdAtConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor:
        c = self.cfg
        return craft_ce_pgd(self.ctx, x, y, eps=attack_eps(c.eps, self.ctx.eps), steps=c.steps,
                            step_size=c.step_size, random_start=c.random_start, attack_mode=c.attack_mode)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.ctx.forward(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        return loss, {"ce_adv": loss.detach(), "train_adv_acc": (logits.argmax(1) == y).float().mean()}


register(MethodDef("pgd_at", PgdAtConfig, PgdAt))
