"""DARHT: Distilling Adversarial Robustness using Heterogeneous Teachers (Deng et al.;
code bayesomicslab/DARHT), docs/methods.md#darht.

L = ce_weight * CE(S(x), y) + kd_weight * kd_scale * mean_b sum_j w_jb KL_jb, where KL_jb compares
the student-teacher feature map slot S^(Tj)(x_b) with teacher j's logits T_j(x_b), and w_jb comes
from the teachers' own CE on the batch. Every paper-vs-code difference is an option
(docs/methods.md#darht-loss-and-profiles); profile "paper" (default) and "official" set them all.
The student is a DarhtStudent (trainers/models/darht_student.py) whose MC-dropout average feeds
the loss.

Each example is adversarial with probability adv_prob (paper), or the whole batch is (official);
only the examples chosen to be adversarial are attacked (attacks are per-example, the student is
in eval mode), which halves the attack cost without changing the method.
"""
from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

from trainers.config import check
from trainers.methods.attack import AttackConfig, craft
from trainers.methods.base import MethodConfig, MethodContext, MethodDef, StepInfo, Stateless, register


def darht_loss(student_logits: torch.Tensor, feature_map: torch.Tensor, teacher_logits: torch.Tensor,
               labels: torch.Tensor, *, kl_direction: str = "student_teacher",
               weighting: str = "softmax", weight_granularity: str = "sample",
               ce_weight: float = 1.0, kd_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DARHT loss. Shapes: student_logits [B, K], feature_map [B, J, K], teacher_logits [J, B, K].

    KL_jb = KL(p(S^(Tj)(x_b)) || p(T_j(x_b)))  (kl_direction="student_teacher", paper)
          or KL(p(T_j(x_b)) || p(S^(Tj)(x_b)))  ("teacher_student", official code).
    c_jb = CE(T_j(x_b), y_b); per sample w_jb = softmax_j(-c_jb) ("softmax", paper) or
    exp(-c_jb) ("exp"); per batch the same of -mean_b c_jb (official: "exp" + "batch").
    Returns (ce_weight * CE + kd_weight * KD, parts) with KD = mean_b sum_j w_jb KL_jb and parts
    = {ce, kd, weights [B, J], kl [B, J]} (weights and kl detached, for logging).
    """
    b, j, k = feature_map.shape
    if teacher_logits.shape != (j, b, k) or student_logits.shape != (b, k):
        raise ValueError(f"darht_loss: expected student_logits [B, K], feature_map [B, J, K], "
                         f"teacher_logits [J, B, K]; got {tuple(student_logits.shape)}, "
                         f"{tuple(feature_map.shape)}, {tuple(teacher_logits.shape)}")
    ce = F.cross_entropy(student_logits.float(), labels)
    log_s_BJK = F.log_softmax(feature_map.float(), dim=-1)
    log_t_BJK = F.log_softmax(teacher_logits.float().transpose(0, 1), dim=-1).detach()
    if kl_direction == "student_teacher":
        kl_BJ = (log_s_BJK.exp() * (log_s_BJK - log_t_BJK)).sum(-1)
    elif kl_direction == "teacher_student":
        kl_BJ = (log_t_BJK.exp() * (log_t_BJK - log_s_BJK)).sum(-1)
    else:
        raise ValueError(f"kl_direction must be 'student_teacher' or 'teacher_student', got {kl_direction!r}")
    teacher_ce_BJ = -log_t_BJK.gather(-1, labels.view(b, 1, 1).expand(b, j, 1)).squeeze(-1)
    if weight_granularity == "batch":
        teacher_ce_BJ = teacher_ce_BJ.mean(0, keepdim=True).expand(b, j)
    elif weight_granularity != "sample":
        raise ValueError(f"weight_granularity must be 'sample' or 'batch', got {weight_granularity!r}")
    if weighting == "softmax":
        weights_BJ = torch.softmax(-teacher_ce_BJ, dim=1)
    elif weighting == "exp":
        weights_BJ = torch.exp(-teacher_ce_BJ)
    else:
        raise ValueError(f"weighting must be 'softmax' or 'exp', got {weighting!r}")
    kd = (weights_BJ * kl_BJ).sum(1).mean()
    loss = ce_weight * ce + kd_weight * kd
    return loss, {"ce": ce, "kd": kd, "weights": weights_BJ.detach(), "kl": kl_BJ.detach()}


class DarhtConfig(MethodConfig):
    name: Literal["darht"] = "darht"
    kl_direction: Literal["student_teacher", "teacher_student"] = "student_teacher"
    weighting: Literal["softmax", "exp"] = "softmax"
    weight_granularity: Literal["sample", "batch"] = "sample"
    mixing: Literal["example", "batch"] = "example"
    """Adversarial with probability adv_prob per example (paper) or per mini-batch (official)."""
    adv_prob: float = 0.5
    attack: AttackConfig = AttackConfig.model_validate("fat")
    """Training attack F: `fat` (early-stopped PGD, attack.tau the budget), `trades` (KL-PGD), or
    the official code's `ce_pgd`, each with its reference step; any field can be set on top."""
    phases: Literal["joint", "staged"] = "joint"
    """joint: CE + KD every epoch (paper). staged (official): CE only before ce_only_until,
    KD only from kd_only_from."""
    ce_only_until: int = 50
    kd_only_from: int = 118
    teacher_mode: Literal["eval", "train"] = "eval"
    dropout: float = 0.1
    """MC-dropout p on the pooled features (the paper gives no value; the official code has none)."""
    mc_samples: int = 4
    """MC iterations C."""
    inference: Literal["deterministic", "mc"] = "deterministic"
    """Student at evaluation: dropout off, or the randomized MC average."""
    kd_scale: float = 1.0

    def check(self) -> None:
        check(0 <= self.adv_prob <= 1, "adv_prob", f"must be in [0, 1], got {self.adv_prob}")
        check(0 <= self.dropout < 1, "dropout", f"p must be in [0, 1), got {self.dropout}")
        check(self.mc_samples >= 1, "mc_samples", f"C must be >= 1, got {self.mc_samples}")
        check(self.kd_scale >= 0, "kd_scale", f"must be >= 0, got {self.kd_scale}")


def phase_weights(cfg: DarhtConfig, epoch: int) -> tuple[float, float]:
    """(ce_weight, kd_weight) at 0-based `epoch`."""
    if cfg.phases == "joint":
        return 1.0, 1.0
    if epoch < cfg.ce_only_until:
        return 1.0, 0.0
    return (0.0, 1.0) if epoch >= cfg.kd_only_from else (1.0, 1.0)


class DarhtStep(NamedTuple):
    x_in: torch.Tensor
    """The mixed batch the student and the teachers see."""
    adv_fraction: torch.Tensor
    """The share of its examples that are adversarial."""


class Darht(Stateless):
    def __init__(self, cfg: DarhtConfig, ctx: MethodContext) -> None:
        self.cfg, self.ctx = cfg, ctx

    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> DarhtStep:
        """The mixed batch: adversarial where chosen, clean elsewhere."""
        c, b = self.cfg, len(x)
        draws = torch.rand(b if c.mixing == "example" else 1, device=x.device)
        idx = torch.nonzero((draws < c.adv_prob).expand(b)).flatten()  # one host sync per step
        x_in = x.clone()
        if len(idx):
            x_in[idx] = craft(c.attack, self.ctx.student, x[idx], y[idx], threat_eps=self.ctx.eps)
        return DarhtStep(x_in, torch.tensor(len(idx) / b, device=x.device))

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, step: DarhtStep,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The DARHT loss; with a zero KD weight (the CE-only phase, or kd_scale 0) just the CE
        term, without running the teachers, and no kd / w_j / kl_j metrics."""
        c = self.cfg
        x_in = step.x_in
        logits, fmap_BJK = self.ctx.forward(x_in, with_map=True)
        ce_w, kd_w = phase_weights(c, info.epoch)
        metrics: dict[str, Any] = {"adv_fraction": step.adv_fraction,
                                   "train_acc": (logits.argmax(1) == y).float().mean()}
        if kd_w * c.kd_scale == 0:
            ce = F.cross_entropy(logits.float(), y)
            return ce_w * ce, {"ce": ce.detach(), **metrics}
        teacher_JBK = self.ctx.teachers.logits(x_in)
        loss, parts = darht_loss(logits, fmap_BJK, teacher_JBK, y, kl_direction=c.kl_direction,
                                 weighting=c.weighting, weight_granularity=c.weight_granularity,
                                 ce_weight=ce_w, kd_weight=kd_w * c.kd_scale)
        metrics.update(ce=parts["ce"].detach(), kd=parts["kd"].detach())
        for j, (w, kl) in enumerate(zip(parts["weights"].mean(0), parts["kl"].mean(0))):
            metrics[f"w_{j}"], metrics[f"kl_{j}"] = w, kl
        return loss, metrics


def _student(arch: str, kwargs: dict[str, Any], cfg: DarhtConfig, num_teachers: int) -> tuple[str, dict[str, Any]]:
    return "darht_student", {"backbone": arch, "backbone_kwargs": kwargs, "num_teachers": num_teachers,
                             "dropout": cfg.dropout, "mc_samples": cfg.mc_samples, "inference": cfg.inference}


OFFICIAL = {"kl_direction": "teacher_student", "weighting": "exp", "weight_granularity": "batch",
            "mixing": "batch", "attack": {"preset": "ce_pgd", "step_size": 0.003, "eps": 0.031},
            "phases": "staged", "teacher_mode": "train", "dropout": 0.0, "mc_samples": 1}
register(MethodDef("darht", DarhtConfig, Darht, profiles={"paper": {}, "official": OFFICIAL},
                   any_teachers=True, student=_student))
