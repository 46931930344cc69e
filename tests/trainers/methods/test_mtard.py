"""B-MTARD / MTARD (trainers/methods/mtard.py) against hand-written formulas and hand-computed
EBB / NLB sequences (docs/methods.md#b-mtard-and-mtard)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from kd_testing import EPS32, kl_atol, kl_np, log_softmax_atol, log_softmax_np, np_of, sgd_steps

from trainers.config import ConfigError
from trainers.methods import METHODS, StepInfo, method_config
from trainers.methods.mtard import EntropyBalance, LossBalance, Mtard, mtard_kd_terms


def sign(v: float) -> float:
    return float(v > 0) - float(v < 0)


def ebb_reference(tau: list[float], entropies: tuple[float, float], eta: float,
                  lo: float = 1.0, hi: float = 10.0) -> list[float]:
    """docs/methods.md#b-mtard-entropy-based-balance in the ratio form, e_i = sum_k q log q = -H_i."""
    e_adv, e_nat = -entropies[0], -entropies[1]
    return [min(hi, max(lo, tau[0] - eta * sign(e_adv / e_nat - 1))),
            min(hi, max(lo, tau[1] - eta * sign(e_nat / e_adv - 1)))]


def nlb_reference(w: list[float], losses: tuple[float, float], loss0: tuple[float, float],
                  eta: float, beta: float) -> list[float]:
    r = [(losses[i] / loss0[i]) ** beta for i in range(2)]
    return [w[i] - eta * (w[i] - r[i] / sum(r)) for i in range(2)]


def entropy_np(logits: np.ndarray) -> float:
    log_q = log_softmax_np(logits)
    return float(-(np.exp(log_q) * log_q).sum(1).mean())


def entropy_atol(logits: np.ndarray) -> float:
    """Float32 error bound of `entropy_np`: sum_k q_k log q_k with log q_k off by a_k (kd_testing's
    bound) and q_k = exp(log q_k) by q_k (a_k + eps32)."""
    log_q, a = log_softmax_np(logits), log_softmax_atol(logits)
    return float((np.exp(log_q) * (a + np.abs(log_q) * (a + EPS32))).sum(1).mean())


def kd_term_np(teacher: np.ndarray, student: np.ndarray, tau: float, kd_scale: float = 0.1) -> tuple[float, float]:
    """kd_scale * batchmean KL(p(T / tau) || p(S)) and its float32 error bound."""
    want = kd_scale * kl_np(teacher / tau, student).mean()
    return want, kd_scale * kl_atol(teacher / tau, student) + EPS32 * want


def test_kd_terms_match_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    s_adv, s_nat, t_adv, t_nat = (3 * torch.randn(5, 7, generator=gen) for _ in range(4))
    got = mtard_kd_terms(s_adv, s_nat, t_adv, t_nat, torch.tensor([1.7, 2.3]), kd_scale=0.1)
    (want_adv, tol_adv), (want_nat, tol_nat) = (kd_term_np(np_of(t_adv), np_of(s_adv), 1.7),
                                                kd_term_np(np_of(t_nat), np_of(s_nat), 2.3))
    assert got.tolist() == [pytest.approx(want_adv, abs=tol_adv), pytest.approx(want_nat, abs=tol_nat)]
    # Not the untempered teacher, nor the KL the other way round.
    assert abs(0.1 * kl_np(np_of(t_adv), np_of(s_adv)).mean() - want_adv) > 10 * tol_adv
    assert abs(0.1 * kl_np(np_of(s_adv), np_of(t_adv) / 1.7).mean() - want_adv) > 10 * tol_adv


def test_ebb_cools_the_higher_entropy_teacher_and_clamps() -> None:
    ebb = EntropyBalance(1.0, 10.0)
    seq = [((1.0, 2.0), [5.0, 1.0]),   # nat has more entropy: adv heated, nat cooled (clamped at 1)
           ((1.0, 2.0), [9.0, 1.0]),
           ((1.0, 2.0), [10.0, 1.0]),  # 13 clamped at 10
           ((3.0, 2.0), [6.0, 5.0]),   # adv now has more entropy: adv cooled, nat heated
           ((3.0, 2.0), [2.0, 9.0]),
           ((3.0, 2.0), [1.0, 10.0])]  # both clamped
    for entropies, want in seq:
        assert ebb.update(torch.tensor(entropies), eta=4.0).tolist() == want


@pytest.mark.parametrize("eta", [0.001, 0.3])
def test_ebb_matches_the_ratio_form_over_a_sequence(eta: float) -> None:
    rng = np.random.default_rng(1)
    ebb, tau = EntropyBalance(1.0, 10.0), [1.0, 1.0]
    for _ in range(40):
        h = tuple(float(v) for v in rng.uniform(0.1, 2.3, size=2))
        tau = ebb_reference(tau, h, eta)
        # float32 tau (<= 10) rounds once per update (<= 2^-24 x 10); 40 updates
        assert ebb.update(torch.tensor(h), eta).tolist() == pytest.approx(tau, abs=40 * 10 * 2.0 ** -24)


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("eta", [0.025, 0.025 * 0.1, 1.0])
def test_nlb_matches_hand_sequence_on_the_simplex(beta: float, eta: float) -> None:
    losses = [(2.0, 1.0), (1.5, 0.9), (0.6, 0.95), (0.3, 1.2), (0.2, 0.1)]
    nlb, w = LossBalance(beta), [0.5, 0.5]
    # float32 (u = 2^-24), w <= 1: r = (L / L0)^beta off by beta 4u + u (the inputs, the division, the
    # power), s = r / sum r by 2 x that <= 18u, w <- w - eta (w - s) by 18u + 2u: 20u a step, 5 steps.
    w_atol = 5 * 20 * 2.0 ** -24
    for pair in losses:
        w = nlb_reference(w, pair, losses[0], eta, beta)
        got = nlb.update(torch.tensor(pair), eta)
        assert got.tolist() == pytest.approx(w, abs=w_atol)
        assert got.min() >= 0 and got.sum().item() == pytest.approx(1.0, abs=2 * w_atol)
        assert nlb.loss0.tolist() == list(losses[0])  # L(0): the first batch, never refreshed
    if eta == 1.0:  # w jumps to the target share
        r = [(losses[-1][i] / losses[0][i]) ** beta for i in range(2)]
        assert w == pytest.approx([r[0] / sum(r), r[1] / sum(r)])


def test_nlb_first_step_keeps_equal_weights() -> None:
    assert LossBalance(2.0).update(torch.tensor([3.0, 0.1]), 0.025).tolist() == [0.5, 0.5]


@pytest.mark.parametrize("name", ["b_mtard", "mtard"])
def test_loss_terms_follow_methods_md(name: str, make_ctx, batch) -> None:
    """Three steps on real tiny models against the hand-written iteration, with eta_tau large
    enough that temperatures move, and lr_scale < 1 on later steps."""
    cfg = method_config({"name": name, "eta_tau": 0.5, "eta_w": 0.2, "beta": 2.0})
    ctx = make_ctx(2)
    method = cfg.definition.build(cfg, ctx)
    x_all, y_all = batch
    tau, w, loss0, loss0_tol = [1.0, 1.0], [0.5, 0.5], None, None
    w_tol = 0.0  # how far the float32 NLB weights can be from the float64 ones, accumulated over the steps
    for step, lr_scale in enumerate([1.0, 0.5, 0.1]):
        x, y = x_all[8 * step:8 * step + 8], y_all[8 * step:8 * step + 8]
        x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
        with torch.no_grad():
            s_adv, s_nat = np_of(ctx.student(x_adv)), np_of(ctx.student(x))
            t_adv = np_of(ctx.teachers.models[0](x_adv))
            t_nat = np_of(ctx.teachers.models[1](x))
        (l_adv, tol_adv), (l_nat, tol_nat) = (kd_term_np(t_adv, s_adv, tau[0]),
                                              kd_term_np(t_nat, s_nat, tau[1]))
        h = (entropy_np(t_adv / tau[0]), entropy_np(t_nat / tau[1]))
        h_tol = (entropy_atol(t_adv / tau[0]), entropy_atol(t_nat / tau[1]))
        loss0 = loss0 or (l_adv, l_nat)
        loss0_tol = loss0_tol if step else (tol_adv, tol_nat)
        w = nlb_reference(w, (l_adv, l_nat), loss0, 0.2 * lr_scale, 2.0)
        if step:  # s_i = r_i / sum r: off by 2 max rel err r_i; rel err (L_i / L_i(0))^beta <= beta (rel errs)
            rel_r = 2.0 * max(tol_adv / l_adv + loss0_tol[0] / loss0[0], tol_nat / l_nat + loss0_tol[1] / loss0[1])
            w_tol = (1 - 0.2 * lr_scale) * w_tol + 0.2 * lr_scale * 2 * rel_r + 4 * EPS32  # w <- (1 - eta) w + eta s
        loss, m = method.loss_terms(x, y, x_adv, StepInfo(epoch=0, step=step, lr_scale=lr_scale))
        want = w[0] * l_adv + w[1] * l_nat
        loss_tol = w[0] * tol_adv + w[1] * tol_nat + w_tol * (l_adv + l_nat) + 3 * EPS32 * want
        assert loss.item() == pytest.approx(want, abs=loss_tol)
        assert [m["tau_adv"].item(), m["tau_nat"].item()] == pytest.approx(tau)
        assert [m["w_adv"].item(), m["w_nat"].item()] == pytest.approx(w, abs=w_tol)
        assert [m["entropy_adv"].item(), m["entropy_nat"].item()] == [pytest.approx(v, abs=t)
                                                                      for v, t in zip(h, h_tol)]
        assert [m["loss_adv"].item(), m["loss_nat"].item()] == [pytest.approx(l_adv, abs=tol_adv),
                                                              pytest.approx(l_nat, abs=tol_nat)]
        # EBB moves tau by the sign of H_adv - H_nat: the float32 entropies must agree on it.
        assert abs(h[0] - h[1]) > h_tol[0] + h_tol[1]
        if name == "b_mtard":
            tau = ebb_reference(tau, h, 0.5 * lr_scale)
    assert method.ebb.tau.tolist() == pytest.approx(tau)
    assert (tau != [1.0, 1.0]) == (name == "b_mtard")


def test_state_dict_round_trip_continues_identically(make_ctx, batch) -> None:
    cfg = method_config({"name": "b_mtard", "eta_tau": 0.3})
    mdef = cfg.definition
    ctx = make_ctx(2)
    x, y = batch
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    method = mdef.build(cfg, ctx)
    for step in range(3):
        method.loss_terms(x[step:step + 16], y[step:step + 16], x_adv[step:step + 16], StepInfo(0, step, 1.0))
    resumed = mdef.build(cfg, ctx)
    resumed.load_state_dict(json.loads(json.dumps(method.state_dict())))
    info = StepInfo(0, 3, 1.0)
    a, b = (m.loss_terms(x, y, x_adv, info) for m in (method, resumed))
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    assert method.state_dict() == resumed.state_dict()


def test_fresh_state_is_json_and_loads() -> None:
    ebb, nlb = EntropyBalance(1.0, 10.0), LossBalance(1.0)
    assert json.loads(json.dumps(nlb.state_dict())) == {"weights": [0.5, 0.5], "loss0": None}
    nlb.load_state_dict(nlb.state_dict())
    ebb.load_state_dict({"tau": [2.5, 1.0]})
    assert ebb.tau.tolist() == [2.5, 1.0] and nlb.loss0 is None


@pytest.mark.parametrize("name", ["b_mtard", "mtard"])
def test_trains_tiny_student(name: str, make_ctx, batch) -> None:
    cfg = method_config({"name": name, "kd_scale": 1.0, "attack": {"steps": 3}})
    ctx = make_ctx(2)
    losses = sgd_steps(cfg.definition.build(cfg, ctx), ctx, batch[0][:16], batch[1][:16], steps=20)
    assert all(map(math.isfinite, losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_registration_and_config_errors() -> None:
    for name in ("b_mtard", "mtard"):
        mdef = METHODS.get(name)
        assert mdef.teacher_roles == ("robust_teacher", "clean_teacher") and not mdef.any_teachers
        mdef.check_teachers(2)
        for count in (1, 3):
            with pytest.raises(ConfigError, match=f"takes 2 teacher.*got {count}"):
                mdef.check_teachers(count)
    assert METHODS.get("b_mtard").build is Mtard is METHODS.get("mtard").build
    assert method_config({"name": "b_mtard"}).balance_temperatures
    assert not method_config({"name": "mtard"}).balance_temperatures
    for field, value in [("kd_scale", "x"), ("eta_w", 1.5), ("tau_min", 2.0), ("beta", -1.0)]:
        with pytest.raises(ConfigError) as err:
            method_config({"name": "b_mtard", field: value})
        assert err.value.field == field
