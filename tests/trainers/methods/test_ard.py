"""ARD (trainers/methods/ard.py) against a hand-written formula (docs/methods.md#ard)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kd_testing import EPS32, bn_stats, ce_atol, kl_atol, kl_np, log_softmax_np, np_of, sgd_steps

from trainers.config import ConfigError
from trainers.methods import METHODS, StepInfo, method_config
from trainers.methods.ard import ard_loss


def ard_np(t_nat, s_adv, s_nat, y, *, alpha: float, temperature: float, divisor: int) -> dict[str, float]:
    """The KD term, the loss and their float32 error bounds (kd_testing: eps32 x the summed terms).
    At T = 30 the tempered distributions are near uniform and the KL small: T^2 scales its error too."""
    t, s = t_nat / temperature, s_adv / temperature
    kd = temperature ** 2 * kl_np(t, s).mean() / divisor
    kd_tol = temperature ** 2 * kl_atol(t, s) / divisor + 2 * EPS32 * kd  # the KL's bound, the two scalings
    ce = -log_softmax_np(s_nat)[np.arange(len(y)), y].mean()
    loss = alpha * kd + (1 - alpha) * ce
    loss_tol = alpha * kd_tol + (1 - alpha) * ce_atol(s_nat, y) + 3 * EPS32 * loss
    return {"kd": kd, "kd_tol": kd_tol, "loss": loss, "loss_tol": loss_tol}


@pytest.mark.parametrize("alpha", [1.0, 0.7])
@pytest.mark.parametrize("reduction,divisor", [("batchmean", 1), ("elementwise_mean", 10)])
def test_loss_matches_the_formula(alpha: float, reduction: str, divisor: int) -> None:
    gen = torch.Generator().manual_seed(0)
    s_adv, s_nat, t_nat = (5 * torch.randn(6, 10, generator=gen) for _ in range(3))
    y = torch.randint(0, 10, (6,), generator=gen)
    loss, kd, ce = ard_loss(t_nat, s_adv, s_nat, y, alpha=alpha, temperature=30.0, kl_reduction=reduction)
    want = ard_np(np_of(t_nat), np_of(s_adv), np_of(s_nat), y.numpy(), alpha=alpha, temperature=30.0, divisor=divisor)
    assert kd.item() == pytest.approx(want["kd"], abs=want["kd_tol"])
    assert loss.item() == pytest.approx(want["loss"], abs=want["loss_tol"])
    # The bound still tells the KL's direction and T^2 from T.
    reversed_kd = 30.0 ** 2 * kl_np(np_of(s_adv) / 30, np_of(t_nat) / 30).mean() / divisor
    assert abs(reversed_kd - want["kd"]) > 10 * want["kd_tol"]
    assert abs(want["kd"] / 30 - want["kd"]) > 10 * want["kd_tol"]
    assert (ce is None) == (alpha == 1)


@pytest.mark.parametrize("profile", ["paper", "official"])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_step_matches_the_formula_and_skips_the_clean_forward(profile: str, alpha: float, make_ctx,
                                                              batch) -> None:
    inputs = []
    ctx = make_ctx(1, forward=lambda x: (inputs.append(x), ctx.student(x))[1])
    cfg = method_config({"name": "ard", "profile": profile, "alpha": alpha})
    method = cfg.definition.build(cfg, ctx)
    x, y = batch
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    with torch.no_grad():
        s_adv, s_nat = np_of(ctx.student(x_adv)), np_of(ctx.student(x))
        t_nat = np_of(ctx.teachers.models[0](x))
    loss, metrics = method.loss_terms(x, y, x_adv, StepInfo(0, 0, 1.0))
    # At T = 30 these tiny models' tempered outputs are near uniform: KL ~3e-4 against terms of size
    # log 10, so float32 cannot tell its direction here (test_loss_matches_the_formula does), but the
    # reduction (/10), T^2 and the mixing with the CE are all far outside the bound.
    want = ard_np(t_nat, s_adv, s_nat, y.numpy(), alpha=alpha, temperature=30.0,
                  divisor=10 if profile == "official" else 1)
    assert loss.item() == pytest.approx(want["loss"], abs=want["loss_tol"])
    assert [t is x_adv for t in inputs] == ([True] if alpha == 1 else [True, False])
    assert ("train_acc" in metrics) == (alpha < 1)


@pytest.mark.parametrize("profile", ["paper", "official"])
def test_attack_mode_per_profile(profile: str, make_ctx, batch) -> None:
    """Paper: the student is attacked in eval mode (BN running stats untouched); official: in
    train mode, as the reference code (running stats move). Uniform start either way."""
    ctx = make_ctx(1)
    # A negligible step (a step of 0 is refused): x' is the random start.
    cfg = method_config({"name": "ard", "profile": profile, "attack": {"steps": 1, "step_size": 1e-9}})
    before = bn_stats(ctx.student)
    x, y = batch
    x_adv = cfg.definition.build(cfg, ctx).inner_max(x, y, StepInfo(0, 0, 1.0))
    moved = not all(torch.equal(a, b) for a, b in zip(before, bn_stats(ctx.student)))
    assert moved == (profile == "official") and ctx.student.training
    delta = (x_adv - x).abs()  # uniform start in the eps-ball (clipped to [0, 1])
    assert delta.max() <= ctx.eps + 1e-6 and delta.mean() > 0.2 * ctx.eps


@pytest.mark.parametrize("profile", ["paper", "official"])
def test_trains_tiny_student(profile: str, make_ctx, batch) -> None:
    cfg = method_config({"name": "ard", "profile": profile, "temperature": 4.0, "attack": {"steps": 3}})
    ctx = make_ctx(1)
    losses = sgd_steps(cfg.definition.build(cfg, ctx), ctx, batch[0][:16], batch[1][:16], steps=20,
                       attack_in_eval=profile == "paper")
    assert all(map(math.isfinite, losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_registration_and_config_errors() -> None:
    mdef = METHODS.get("ard")
    assert mdef.teacher_roles == ("teacher",) and not mdef.any_teachers
    mdef.check_teachers(1)
    for count in (0, 2):
        with pytest.raises(ConfigError, match=f"takes 1 teacher.*got {count}"):
            mdef.check_teachers(count)
    official = method_config({"name": "ard", "profile": "official"})
    assert (official.attack.mode, official.kl_reduction) == ("train", "elementwise_mean")
    for field, value in [("alpha", 2.0), ("temperature", 0.0), ("kl_reduction", "sum")]:
        with pytest.raises(ConfigError) as err:
            method_config({"name": "ard", field: value})
        assert err.value.field == field
