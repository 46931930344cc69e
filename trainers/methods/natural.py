"""Natural (standard) training: CE on clean inputs. The clean teachers of MTARD / DARHT."""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from trainers.methods.base import MethodConfig, MethodContext, MethodDef, StepInfo, Stateless, register


class NaturalConfig(MethodConfig):
    name: Literal["natural"] = "natural"


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
