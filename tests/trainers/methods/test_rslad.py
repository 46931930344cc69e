"""RSLAD (trainers/methods/rslad.py) against a hand-written formula (docs/methods.md#rslad)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kd_testing import EPS32, kl_atol, kl_np, np_of, sgd_steps

from attacks import kl_pgd
from trainers.config import ConfigError
from trainers.methods import METHODS, StepInfo, method_config
from trainers.methods.rslad import RsladStep, rslad_loss
from trainers.modes import eval_mode


def rslad_np(t_nat, s_adv, s_nat, adv_weight: float = 5 / 6, kd_scale: float = 0.1) -> tuple[float, float]:
    """(the loss, its float32 error bound): the two KLs' kd_testing bounds, weighted, and the sum's roundings."""
    want = kd_scale * (adv_weight * kl_np(t_nat, s_adv).mean()
                       + (1 - adv_weight) * kl_np(t_nat, s_nat).mean())
    tol = (kd_scale * (adv_weight * kl_atol(t_nat, s_adv) + (1 - adv_weight) * kl_atol(t_nat, s_nat))
           + 3 * EPS32 * want)
    return want, tol


@pytest.mark.parametrize("adv_weight,kd_scale", [(5 / 6, 0.1), (0.5, 1.0), (1.0, 0.1)])
def test_loss_matches_the_formula(adv_weight: float, kd_scale: float) -> None:
    gen = torch.Generator().manual_seed(0)
    s_adv, s_nat, t_nat = (3 * torch.randn(6, 10, generator=gen) for _ in range(3))
    loss, kl_adv, kl_nat = rslad_loss(s_adv, s_nat, t_nat, adv_weight=adv_weight, kd_scale=kd_scale)
    t, sa, sn = np_of(t_nat), np_of(s_adv), np_of(s_nat)
    assert kl_adv.item() == pytest.approx(kl_np(t, sa).mean(), abs=kl_atol(t, sa))
    assert kl_nat.item() == pytest.approx(kl_np(t, sn).mean(), abs=kl_atol(t, sn))
    want, tol = rslad_np(t, sa, sn, adv_weight, kd_scale)
    assert loss.item() == pytest.approx(want, abs=tol)


class CountingTeachers:
    """Wraps a TeacherSet and records which inputs each call saw."""

    def __init__(self, teachers) -> None:
        self.teachers, self.calls = teachers, []

    def logits_of(self, index: int, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x)
        return self.teachers.logits_of(index, x)


def test_step_uses_the_clean_teacher_once_and_the_paper_attack(make_ctx, batch) -> None:
    cfg = method_config({"name": "rslad"})
    ctx = make_ctx(1)
    ctx.teachers = CountingTeachers(ctx.teachers)
    method = cfg.definition.build(cfg, ctx)
    x, y = batch
    info = StepInfo(0, 0, 1.0)
    torch.manual_seed(3)
    step = method.inner_max(x, y, info)
    x_adv = step.x_adv
    torch.manual_seed(3)
    with eval_mode(ctx.student), torch.no_grad():
        target = torch.softmax(ctx.teachers.teachers.models[0](x), dim=1)
    with eval_mode(ctx.student):
        want_adv = kl_pgd(ctx.student, x, target_probs=target, eps=ctx.eps, steps=10, step_size=ctx.eps / 4)
    assert torch.equal(x_adv, want_adv)
    with torch.no_grad():
        s_adv, s_nat = np_of(ctx.student(x_adv)), np_of(ctx.student(x))
        t_nat = np_of(ctx.teachers.teachers.models[0](x))
    np.testing.assert_allclose(np_of(step.teacher_nat), t_nat, rtol=1e-6, atol=1e-6)
    loss, metrics = method.loss_terms(x, y, step, info)
    assert len(ctx.teachers.calls) == 1 and ctx.teachers.calls[0] is x  # clean x only, computed once
    want, tol = rslad_np(t_nat, s_adv, s_nat)
    assert loss.item() == pytest.approx(want, abs=tol)
    # ... and not with the KLs the other way round: KL(p(S) || p(T)) differs by far more than the bound.
    reversed_kl = 0.1 * (5 / 6 * kl_np(s_adv, t_nat).mean() + 1 / 6 * kl_np(s_nat, t_nat).mean())
    assert abs(reversed_kl - want) > 10 * tol
    # The loss takes the teacher's logits from the step it is handed, never from a teacher call:
    # another step's logits give that step's loss.
    other = RsladStep(x_adv[:8], step.teacher_nat[:8].flip(1))
    loss8, _ = method.loss_terms(x[:8], y[:8], other, info)
    assert len(ctx.teachers.calls) == 1
    with torch.no_grad():  # a batch of 8 in train mode: its own batch-norm statistics
        s_adv8, s_nat8 = np_of(ctx.student(x_adv[:8])), np_of(ctx.student(x[:8]))
    t8 = t_nat[:8, ::-1]
    want8, tol8 = rslad_np(t8, s_adv8, s_nat8)
    assert loss8.item() == pytest.approx(want8, abs=tol8)


def test_trains_tiny_student(make_ctx, batch) -> None:
    cfg = method_config({"name": "rslad", "kd_scale": 1.0, "attack": {"steps": 3}})
    ctx = make_ctx(1)
    losses = sgd_steps(cfg.definition.build(cfg, ctx), ctx, batch[0][:16], batch[1][:16], steps=20)
    assert all(map(math.isfinite, losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_registration_and_config_errors() -> None:
    mdef = METHODS.get("rslad")
    assert mdef.teacher_roles == ("teacher",) and not mdef.any_teachers
    mdef.check_teachers(1)
    for count in (0, 2):
        with pytest.raises(ConfigError, match=f"takes 1 teacher.*got {count}"):
            mdef.check_teachers(count)
    assert method_config({"name": "rslad"}).adv_weight == pytest.approx(5 / 6)
    for field, raw in [("kd_scale", {"kd_scale": "x"}), ("adv_weight", {"adv_weight": 1.5}),
                       ("attack.steps", {"attack": {"steps": 0}})]:
        with pytest.raises(ConfigError) as err:
            method_config({"name": "rslad", **raw})
        assert err.value.field == field and str(err.value).startswith(field)
