"""Natural (standard) training: CE on clean inputs. The clean teachers of MTARD / DARHT."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trainers.methods.base import MethodContext, MethodDef, StepInfo, Stateless, register


@dataclass(frozen=True, kw_only=True)
class NaturalConfig:
    profile: str = "paper"


class Natural(Stateless):
    def __init__(self, cfg: NaturalConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> None:
        return None

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: Any,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.ctx.forward(x)
        loss = F.cross_entropy(logits.float(), y)
        return loss, {"ce": loss.detach(), "train_acc": (logits.argmax(1) == y).float().mean()}


register(MethodDef("natural", NaturalConfig, Natural))
