"""B-MTARD (Zhao et al., "Mitigating Accuracy-Robustness Trade-off via Balanced Multi-Teacher
Adversarial Distillation", https://arxiv.org/abs/2306.16170; code zhaoshiji123/MTARD-extension)
and MTARD (ECCV 2022; code zhaoshiji123/MTARD), docs/methods.md#b-mtard-and-mtard.

Teachers (in this order): index 0 = robust teacher T_adv, index 1 = clean teacher T_nat.
One iteration: x' = CE-PGD on the student (eval mode, start x + 0.001 N(0, 1), 10 steps of eps/4);
  L_adv = kd_scale * mean_b KL(p(T_adv(x') / tau_adv) || p(S(x'))),
  L_nat = kd_scale * mean_b KL(p(T_nat(x) / tau_nat) || p(S(x))),
student at T = 1 (train mode, two forwards), no tau^2, no hard labels. From this step's detached
values (averaged over ranks when distributed, so every rank holds the same balance state) NLB
updates (w_adv, w_nat) and EBB the temperatures; the loss is w_adv L_adv + w_nat L_nat with the
updated weights, while the new temperatures act from the next step. Both balance rates are
multiplied by the lr scale (the papers decay them x0.1 with the lr).

Names: "b_mtard" (EBB + NLB) and "mtard" (NLB only, tau = 1 fixed) are two registered methods
sharing this class, each with a single profile "paper": the name says which paper, and no
paper-vs-code difference is implemented for either (both codes use beta = 1, the papers' value, and
reduce KL as mean over B*K x10 on CIFAR-100, i.e. kd_scale 0.1;
docs/methods.md#kl-scale-and-kd_scale).
"""
from __future__ import annotations

from typing import Any, Literal

import torch

from trainers.config import check
from trainers.distributed import all_reduce_sum, dist_info
from trainers.methods.attack import AttackConfig, craft
from trainers.methods.base import MethodConfig, MethodContext, MethodDef, StepInfo, kl_per_example, register


class MtardConfig(MethodConfig):
    name: Literal["b_mtard", "mtard"] = "b_mtard"
    kd_scale: float = 0.1
    balance_temperatures: bool = True
    """Entropy-Based Balance (B-MTARD); False keeps tau = 1 (ECCV MTARD)."""
    beta: float = 1.0
    eta_w: float = 0.025
    eta_tau: float = 0.001
    tau_min: float = 1.0
    tau_max: float = 10.0
    attack: AttackConfig = AttackConfig.model_validate("ce_pgd")
    """CE-PGD on the student from x + 0.001 N(0, 1), 10 steps of eps/4."""

    def check(self) -> None:
        check(self.kd_scale > 0, "kd_scale", f"must be > 0, got {self.kd_scale}")
        check(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        check(0 <= self.eta_w <= 1, "eta_w", f"must be in [0, 1] (keeps w on the simplex), got {self.eta_w}")
        check(self.eta_tau >= 0, "eta_tau", f"must be >= 0, got {self.eta_tau}")
        check(0 < self.tau_min <= 1, "tau_min", f"must be in (0, 1] (tau starts at 1), got {self.tau_min}")
        check(self.tau_max >= 1, "tau_max", f"must be >= 1 (tau starts at 1), got {self.tau_max}")


def mtard_kd_terms(student_adv: torch.Tensor, student_nat: torch.Tensor, teacher_adv: torch.Tensor,
                   teacher_nat: torch.Tensor, tau: torch.Tensor, kd_scale: float) -> torch.Tensor:
    """[L_adv, L_nat]: kd_scale * batchmean KL(p(T_i / tau_i) || p(S_i)), tau = [tau_adv, tau_nat]."""
    return kd_scale * torch.stack([kl_per_example(teacher_adv / tau[0], student_adv).mean(),
                                   kl_per_example(teacher_nat / tau[1], student_nat).mean()])


def mean_entropy(logits: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Batch mean of H(q) = -sum_k q_k log q_k, q = softmax(logits / tau)."""
    log_q = torch.log_softmax(logits.float() / tau, dim=1)
    return -(log_q.exp() * log_q).sum(1).mean()


class EntropyBalance:
    """EBB: tau_i <- clamp(tau_i - eta * sign(e_i / e_other - 1), tau_min, tau_max), where
    e_i = -H_i <= 0 is teacher i's mean negative entropy. For e_i < 0 the sign equals
    sign(H_i - H_other), computed as such (no 0/0 when a tempered teacher is one-hot in fp32):
    the higher-entropy teacher is cooled, the lower-entropy one heated. State: tau = [adv, nat]."""

    def __init__(self, tau_min: float, tau_max: float) -> None:
        self.tau_min, self.tau_max = tau_min, tau_max
        self.tau = torch.ones(2)

    def to(self, device: torch.device) -> "EntropyBalance":
        self.tau = self.tau.to(device)
        return self

    def update(self, entropies: torch.Tensor, eta: float) -> torch.Tensor:
        """entropies = [H_adv, H_nat] (detached, same device as tau); returns the new tau."""
        step = eta * torch.sign(entropies - entropies.flip(0))  # [sign(H_adv - H_nat), sign(H_nat - H_adv)]
        self.tau = (self.tau - step).clamp(self.tau_min, self.tau_max)
        return self.tau

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = torch.tensor(state["tau"], dtype=torch.float32, device=self.tau.device)


class LossBalance:
    """NLB: r_i = L_i(t) / L_i(0) with L(0) the first batch's losses (kept for good),
    s_i = r_i^beta / sum_j r_j^beta, w_i <- w_i - eta * (w_i - s_i). State: w = [adv, nat], L(0)."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.weights = torch.full((2,), 0.5)
        self.loss0: torch.Tensor | None = None

    def to(self, device: torch.device) -> "LossBalance":
        self.weights = self.weights.to(device)
        self.loss0 = None if self.loss0 is None else self.loss0.to(device)
        return self

    def update(self, losses: torch.Tensor, eta: float) -> torch.Tensor:
        """losses = [L_adv, L_nat] (detached, same device as the weights); returns the new weights."""
        if self.loss0 is None:
            self.loss0 = losses.clone()
        r = (losses / self.loss0) ** self.beta
        self.weights = self.weights - eta * (self.weights - r / r.sum())
        return self.weights

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(),
                "loss0": None if self.loss0 is None else self.loss0.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.weights.device
        self.weights = torch.tensor(state["weights"], dtype=torch.float32, device=device)
        loss0 = state["loss0"]
        self.loss0 = None if loss0 is None else torch.tensor(loss0, dtype=torch.float32, device=device)


class Mtard:
    def __init__(self, cfg: MtardConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.ebb = EntropyBalance(cfg.tau_min, cfg.tau_max)
        self.nlb = LossBalance(cfg.beta)

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor:
        return craft(self.cfg.attack, self.ctx.student, x, y, threat_eps=self.ctx.eps)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.ebb.to(x.device)  # no-ops after the first step
        self.nlb.to(x.device)
        student_adv, student_nat = self.ctx.forward(x_adv), self.ctx.forward(x)
        teacher_adv = self.ctx.teachers.logits_of(0, x_adv)
        teacher_nat = self.ctx.teachers.logits_of(1, x)
        tau = self.ebb.tau
        losses = mtard_kd_terms(student_adv, student_nat, teacher_adv, teacher_nat, tau, self.cfg.kd_scale)
        entropies = torch.stack([mean_entropy(teacher_adv, tau[0]), mean_entropy(teacher_nat, tau[1])])
        # Averaged over ranks (the identity on one process): every rank keeps the same balance state.
        stats = all_reduce_sum(torch.cat([losses.detach(), entropies])) / dist_info().world_size
        if self.cfg.balance_temperatures:
            self.ebb.update(stats[2:], self.cfg.eta_tau * info.lr_scale)
        w = self.nlb.update(stats[:2], self.cfg.eta_w * info.lr_scale)
        loss = (w * losses).sum()
        return loss, {"tau_adv": tau[0], "tau_nat": tau[1], "w_adv": w[0], "w_nat": w[1],
                      "entropy_adv": stats[2], "entropy_nat": stats[3],
                      "loss_adv": stats[0], "loss_nat": stats[1],
                      "train_acc": (student_nat.argmax(1) == y).float().mean(),
                      "train_adv_acc": (student_adv.argmax(1) == y).float().mean()}

    def state_dict(self) -> dict[str, Any]:
        return {"ebb": self.ebb.state_dict(), "nlb": self.nlb.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ebb.load_state_dict(state["ebb"])
        self.nlb.load_state_dict(state["nlb"])


ROLES = ("robust_teacher", "clean_teacher")
register(MethodDef("b_mtard", MtardConfig, Mtard, teacher_roles=ROLES))
register(MethodDef("mtard", MtardConfig, Mtard, profiles={"paper": {"balance_temperatures": False}},
                   teacher_roles=ROLES))
