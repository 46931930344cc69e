"""RSLAD (Zi et al., "Revisiting Adversarial Robustness Distillation: Robust Soft Labels Make
Student Better", https://arxiv.org/abs/2108.07969; code zibojia/RSLAD), docs/methods.md#rslad.

L = kd_scale * (adv_weight * KL(p(T(x)) || p(S(x'))) + (1 - adv_weight) * KL(p(T(x)) || p(S(x)))),
KL batchmean (summed over classes, averaged over the batch), adv_weight = 5/6, no hard labels;
kd_scale = 0.1 equals the reference code's mean over B*K (x10 on CIFAR-100), docs/methods.md#kl-scale-and-kd_scale.
One robust teacher, on clean x only. x' maximizes the summed KL(p(T(x)) || p(S(x'))) with the
student in eval mode: start x + 0.001 N(0, 1), 10 steps of eps/4 (2/255 at 8/255).
The teacher's clean logits are computed once per step, in inner_max, which hands them to the
loss with x' (as the reference code does).
"""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from trainers.config import check
from trainers.methods.attack import AttackConfig, craft
from trainers.methods.base import MethodConfig, MethodContext, MethodDef, StepInfo, Stateless, kl_per_example, register


class RsladConfig(MethodConfig):
    name: Literal["rslad"] = "rslad"
    kd_scale: float = 0.1
    adv_weight: float = 5 / 6
    """Weight of the adversarial KL term; the clean term gets 1 - adv_weight."""
    attack: AttackConfig = AttackConfig(loss="kl", random_start="normal")
    """KL-PGD against the teacher's clean prediction, 10 steps of eps/4."""

    def check(self) -> None:
        check(self.kd_scale > 0, "kd_scale", f"must be > 0, got {self.kd_scale}")
        check(0 <= self.adv_weight <= 1, "adv_weight", f"must be in [0, 1], got {self.adv_weight}")
        check(self.attack.loss == "kl" and self.attack.tau is None, "attack",
              "RSLAD's attack is KL-PGD to the teacher's prediction (loss kl, no early stopping tau)")


def rslad_loss(student_adv: torch.Tensor, student_nat: torch.Tensor, teacher_nat: torch.Tensor, *,
               adv_weight: float, kd_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kd_scale * (adv_weight * KL_adv + (1 - adv_weight) * KL_nat); returns (loss, KL_adv, KL_nat)."""
    kl_adv = kl_per_example(teacher_nat, student_adv).mean()
    kl_nat = kl_per_example(teacher_nat, student_nat).mean()
    return kd_scale * (adv_weight * kl_adv + (1 - adv_weight) * kl_nat), kl_adv, kl_nat


class RsladStep(NamedTuple):
    x_adv: torch.Tensor
    teacher_nat: torch.Tensor
    """The teacher's logits on the clean batch: the attack's target and the loss's."""


class Rslad(Stateless):
    def __init__(self, cfg: RsladConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> RsladStep:
        teacher = self.ctx.teachers.logits_of(0, x)
        x_adv = craft(self.cfg.attack, self.ctx.student, x, y, threat_eps=self.ctx.eps,
                      target=torch.softmax(teacher, dim=1))
        return RsladStep(x_adv, teacher)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, step: RsladStep,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student_adv, student_nat = self.ctx.forward(step.x_adv), self.ctx.forward(x)
        loss, kl_adv, kl_nat = rslad_loss(student_adv, student_nat, step.teacher_nat, adv_weight=self.cfg.adv_weight,
                                          kd_scale=self.cfg.kd_scale)
        return loss, {"kl_adv": kl_adv.detach(), "kl_nat": kl_nat.detach(),
                      "train_acc": (student_nat.argmax(1) == y).float().mean(),
                      "train_adv_acc": (student_adv.argmax(1) == y).float().mean()}


register(MethodDef("rslad", RsladConfig, Rslad, teacher_roles=("teacher",)))
