"""RSLAD (trainers/methods/rslad.py) against a hand-written formula (docs/methods.md#rslad)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kd_testing import kl_np, np_of, sgd_steps

from attacks import kl_pgd
from trainers.configs import ConfigError
from trainers.methods import METHODS, StepInfo, parse_method
from trainers.methods.rslad import rslad_loss
from trainers.modes import eval_mode


@pytest.mark.parametrize("adv_weight,kd_scale", [(5 / 6, 0.1), (0.5, 1.0), (1.0, 0.1)])
def test_loss_matches_the_formula(adv_weight: float, kd_scale: float) -> None:
    gen = torch.Generator().manual_seed(0)
    s_adv, s_nat, t_nat = (3 * torch.randn(6, 10, generator=gen) for _ in range(3))
    loss, kl_adv, kl_nat = rslad_loss(s_adv, s_nat, t_nat, adv_weight=adv_weight, kd_scale=kd_scale)
    want_adv, want_nat = kl_np(np_of(t_nat), np_of(s_adv)).mean(), kl_np(np_of(t_nat), np_of(s_nat)).mean()
    assert [kl_adv.item(), kl_nat.item()] == pytest.approx([want_adv, want_nat], rel=1e-5)
    assert loss.item() == pytest.approx(kd_scale * (adv_weight * want_adv + (1 - adv_weight) * want_nat),
                                        rel=1e-5)


class CountingTeachers:
    """Wraps a TeacherSet and records which inputs each call saw."""

    def __init__(self, teachers) -> None:
        self.teachers, self.calls = teachers, []

    def logits_of(self, index: int, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x)
        return self.teachers.logits_of(index, x)


def test_step_uses_the_clean_teacher_once_and_the_paper_attack(make_ctx, batch) -> None:
    mdef, cfg = parse_method({"name": "rslad"})
    ctx = make_ctx(1)
    ctx.teachers = CountingTeachers(ctx.teachers)
    method = mdef.build(cfg, ctx)
    x, y = batch
    info = StepInfo(0, 0, 1.0)
    torch.manual_seed(3)
    x_adv = method.inner_max(x, y, info)
    torch.manual_seed(3)
    with eval_mode(ctx.student), torch.no_grad():
        target = torch.softmax(ctx.teachers.teachers.models[0](x), dim=1)
    with eval_mode(ctx.student):
        want_adv = kl_pgd(ctx.student, x, target_probs=target, eps=ctx.eps, steps=10, step_size=ctx.eps / 4)
    assert torch.equal(x_adv, want_adv)
    with torch.no_grad():
        s_adv, s_nat = np_of(ctx.student(x_adv)), np_of(ctx.student(x))
        t_nat = np_of(ctx.teachers.teachers.models[0](x))
    loss, metrics = method.loss_terms(x, y, x_adv, info)
    assert len(ctx.teachers.calls) == 1 and ctx.teachers.calls[0] is x  # clean x only, computed once
    want = 0.1 * (5 / 6 * kl_np(t_nat, s_adv).mean() + 1 / 6 * kl_np(t_nat, s_nat).mean())
    assert loss.item() == pytest.approx(want, rel=1e-5)
    method.loss_terms(x[:8], y[:8], x_adv[:8], info)  # no inner_max on this x: teacher recomputed
    assert len(ctx.teachers.calls) == 2 and ctx.teachers.calls[1] is not x


def test_trains_tiny_student(make_ctx, batch) -> None:
    mdef, cfg = parse_method({"name": "rslad", "kd_scale": 1.0, "steps": 3})
    ctx = make_ctx(1)
    losses = sgd_steps(mdef.build(cfg, ctx), ctx, batch[0][:16], batch[1][:16], steps=20)
    assert all(map(math.isfinite, losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_registration_and_config_errors() -> None:
    assert METHODS.get("rslad").teachers == (1, 1)
    assert parse_method({"name": "rslad"})[1].adv_weight == pytest.approx(5 / 6)
    for field, value in [("kd_scale", "x"), ("adv_weight", 1.5), ("steps", 0)]:
        with pytest.raises(ConfigError) as err:
            parse_method({"name": "rslad", field: value})
        assert err.value.field == field and str(err.value).startswith(field)
