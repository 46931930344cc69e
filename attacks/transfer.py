"""Transferability of adversarial examples from a student to its teachers (DARHT section 4.1):
on the points every teacher classifies correctly, adversarial examples are crafted on the
student; per teacher, the share of the examples fooling the student that also fool the teacher."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from attacks.scoring import check_perturbation, predict
from attacks.metrics import Transfer, transfer_rates
from attacks.pgd import require_eval_mode
from attacks.registry import AttackSpec, run_attack


def transferability(student: nn.Module, teachers: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor,
                    spec: AttackSpec, *, seed: int, batch_size: int = 256) -> dict[str, Transfer]:
    """Transfer rate per teacher, with counts (models must be in eval mode)."""
    for model in (student, *teachers.values()):
        require_eval_mode(model)
    eligible = torch.ones_like(y, dtype=torch.bool)
    for teacher in teachers.values():
        eligible &= predict(teacher, x, batch_size) == y
    idx = torch.nonzero(eligible).flatten()
    x_adv = x.clone()
    for start in range(0, len(idx), batch_size):
        b = idx[start:start + batch_size]
        x_adv[b] = run_attack(spec, student, x[b], y[b], seed=seed + start)
    check_perturbation(x_adv, x, spec.eps)
    student_ok = predict(student, x_adv, batch_size) == y
    teachers_ok = {name: predict(t, x_adv, batch_size) == y for name, t in teachers.items()}
    return transfer_rates(student_ok, teachers_ok, eligible)
