"""The adversarial-training methods: TRADES (trainers/methods/trades.py), FAT and FAT-TRADES
(fat.py) and PGD-AT (pgd_at.py), as docs/methods.md defines them: the TRADES loss and its
gradient against hand formulas, FAT's tau schedule, the inner maximizations' invariants and the
paper vs official profiles."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from kd_testing import (EPS32, bn_stats, ce_atol, kl_atol, kl_atol_per_example, kl_np, log_softmax_atol,
                        log_softmax_np, np_of, tiny_cnn)

from attacks import early_stopped_pgd, kl_pgd, pgd
from trainers.config import ConfigError
from trainers.methods import METHODS, MethodContext, StepInfo, method_config
from trainers.methods.fat import FatConfig, tau_at
from trainers.methods.trades import trades_loss
from trainers.modes import eval_mode

AT_METHODS = ["pgd_at", "trades", "fat", "fat_trades"]


def trades_np(clean: np.ndarray, adv: np.ndarray, y: np.ndarray, beta: float) -> tuple[float, float, float]:
    ce = float(-np.mean(log_softmax_np(clean)[np.arange(len(y)), y]))
    kl = float(kl_np(clean, adv).mean())
    return ce + beta * kl, ce, kl


def trades_atol(clean: np.ndarray, adv: np.ndarray, y: np.ndarray, beta: float) -> tuple[float, float, float]:
    """Float32 error bounds for (loss, ce, kl) of `trades_np` (kd_testing: eps32 x the summed terms)."""
    ce, kl = ce_atol(clean, y), kl_atol(clean, adv)
    loss = ce + beta * kl + 2 * EPS32 * trades_np(clean, adv, y, beta)[0]  # the terms', the sum's roundings
    return loss, ce, kl


def assert_trades_close(got: list[float], clean: np.ndarray, adv: np.ndarray, y: np.ndarray, beta: float) -> None:
    want, tol = trades_np(clean, adv, y, beta), trades_atol(clean, adv, y, beta)
    for name, g, w, t in zip(("loss", "ce", "kl"), got, want, tol):
        assert g == pytest.approx(w, abs=t), (name, g, w, t)


def logits_pair(b: int = 6, k: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    clean = 3 * torch.randn(b, k, generator=gen)
    adv = clean + 2 * torch.randn(b, k, generator=gen)
    return clean, adv, torch.randint(0, k, (b,), generator=gen)


# ----------------------------------------------------------------------------- TRADES loss

@pytest.mark.parametrize("beta", [0.0, 1.0, 6.0])
@pytest.mark.parametrize("k", [10, 100])
def test_trades_loss_matches_the_formula(beta: float, k: int) -> None:
    clean, adv, y = logits_pair(k=k, seed=k)
    loss, ce, kl = trades_loss(clean, adv, y, beta)
    assert_trades_close([loss.item(), ce.item(), kl.item()], np_of(clean), np_of(adv), y.numpy(), beta)


def test_trades_gradient_flows_through_clean_and_adversarial_logits() -> None:
    """Analytic gradients (B examples, p = softmax(z), q = softmax(z')):
    d CE / dz = (p - onehot) / B;  d KL(p || q) / dz_k = p_k (log p_k - log q_k - KL) / B;
    d KL / dz' = (q - p) / B. The clean logits get both the CE and the KL part."""
    beta = 6.0
    clean, adv, y = logits_pair(seed=3)
    clean.requires_grad_(True)
    adv.requires_grad_(True)
    loss, _, _ = trades_loss(clean, adv, y, beta)
    loss.backward()
    z, z_adv, b = np_of(clean), np_of(adv), len(y)
    log_p, log_q = log_softmax_np(z), log_softmax_np(z_adv)
    p, q = np.exp(log_p), np.exp(log_q)
    kl = (p * (log_p - log_q)).sum(1, keepdims=True)
    d_ce = (p - np.eye(10)[y.numpy()]) / b
    d_kl_clean = p * (log_p - log_q - kl) / b
    # float32: p, log p, log q, KL off by a, a', kl_b (kd_testing) x terms p (1 + beta (|log p - log q| + KL + 1)),
    # and p - onehot rounds once (eps32 (p + onehot))
    a, a_adv = log_softmax_atol(z), log_softmax_atol(z_adv)
    rel = a + a_adv + kl_atol_per_example(z, z_adv)[:, None]
    atol_clean = (p * (1 + beta * (np.abs(log_p - log_q) + kl + 1)) * rel + EPS32 * (p + np.eye(10)[y.numpy()])) / b
    atol_adv = beta * ((p + q) * (a + a_adv) + EPS32 * (p + q)) / b
    err_clean = np.abs(np_of(clean.grad) - d_ce - beta * d_kl_clean)
    err_adv = np.abs(np_of(adv.grad) - beta * (q - p) / b)
    assert (err_clean <= atol_clean).all(), (err_clean / atol_clean).max()
    assert (err_adv <= atol_adv).all(), (err_adv / atol_adv).max()
    # A gradient through KL(q || p) instead: off by far more than the tolerance.
    d_kl_reversed = (p - q) / b  # d KL(q || p) / dz
    assert (np.abs(d_kl_reversed - d_kl_clean) > 10 * atol_clean).any()
    assert np.abs(beta * d_kl_clean).max() > 1e-3  # the KL part is there, not just the CE
    assert np.abs(np_of(clean.grad) - d_ce).max() > 1e-3


# ----------------------------------------------------------------------------- FAT's tau schedule

def test_fat_tau_schedule() -> None:
    fat = method_config({"name": "fat"})
    got = {epoch1: tau_at(fat, epoch1 - 1) for epoch1 in (1, 50, 51, 90, 91, 120)}
    assert got == {1: 0, 50: 0, 51: 1, 90: 1, 91: 2, 120: 2}
    assert [tau_at(fat, e) for e in range(120)] == [0] * 50 + [1] * 40 + [2] * 30


def test_fat_trades_tau_schedule() -> None:
    fat_trades = method_config({"name": "fat_trades"})
    want = [0] * 30 + [1] * 20 + [2] * 20 + [3] * 15  # <=30 / <=50 / <=70 / after, 85 epochs
    assert [tau_at(fat_trades, e) for e in range(85)] == want
    official = method_config({"name": "fat_trades", "profile": "official"})
    assert [tau_at(official, e) for e in range(85)] == want


@pytest.mark.parametrize("tau", [0, 1, 3])
def test_fixed_tau_with_empty_milestones(tau: int) -> None:
    cfg = method_config({"name": "fat", "attack": {"tau": tau}, "tau_milestones": []})
    assert all(tau_at(cfg, e) == tau for e in range(200))
    offset = FatConfig(attack={"tau": 2}, tau_milestones=(3,))  # the base budget adds to the milestone count
    assert [tau_at(offset, e) for e in range(5)] == [2, 2, 2, 3, 3]


def test_fat_logs_the_current_tau(batch) -> None:
    cfg = method_config({"name": "fat_trades", "attack": {"steps": 1}})
    student = tiny_cnn(0).train()
    method = cfg.definition.build(cfg, MethodContext(student=student, forward=student, eps=0.1, num_classes=10))
    x, y = batch
    for epoch, tau in ((0, 0), (30, 1), (69, 2), (84, 3)):
        info = StepInfo(epoch, 0, 1.0)
        _, metrics = method.loss_terms(x, y, method.inner_max(x, y, info), info)
        assert metrics["tau"].item() == tau


# ----------------------------------------------------------------------------- inner maximization

@pytest.mark.parametrize("name", AT_METHODS)
@pytest.mark.parametrize("caller_mode", ["train", "eval", "mixed"])
def test_inner_max_keeps_modes_and_the_eps_ball(name: str, caller_mode: str, batch) -> None:
    eps = 0.1
    student = tiny_cnn(1)
    student.train(caller_mode != "eval")
    if caller_mode == "mixed":  # one BN layer frozen by the caller: its own mode must come back
        next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()
    modes = [m.training for m in student.modules()]
    cfg = method_config({"name": name, "attack": {"steps": 4}})
    method = cfg.definition.build(cfg, MethodContext(student=student, forward=student, eps=eps, num_classes=10))
    x, y = batch
    before = bn_stats(student)
    x_adv = method.inner_max(x, y, StepInfo(epoch=60, step=0, lr_scale=1.0))
    assert [m.training for m in student.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(student)))  # attacked in eval mode
    assert all(p.grad is None for p in student.parameters())
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()


@pytest.mark.parametrize("name", ["trades", "fat", "fat_trades"])
def test_official_profiles_use_the_reference_radius(name: str, batch) -> None:
    """Official: eps 0.031 and step 0.007 whatever the threat model's eps (0.2 on digits)."""
    student = tiny_cnn(2).train()
    cfg = method_config({"name": name, "profile": "official", "attack": {"steps": 3}})
    method = cfg.definition.build(cfg, MethodContext(student=student, forward=student, eps=0.2, num_classes=10))
    x, y = batch
    x_adv = method.inner_max(x, y, StepInfo(0, 0, 1.0))
    assert (x_adv - x).abs().max() <= 0.031 + 1e-6
    assert (x_adv - x).abs().max() > 0.02


def test_trades_inner_max_is_kl_pgd_against_the_clean_prediction(batch) -> None:
    student = tiny_cnn(3).train()
    cfg = method_config({"name": "trades", "profile": "official", "attack": {"steps": 3}})
    method = cfg.definition.build(cfg, MethodContext(student=student, forward=student, eps=0.2, num_classes=10))
    x, y = batch
    torch.manual_seed(5)
    got = method.inner_max(x, y, StepInfo(0, 0, 1.0))
    torch.manual_seed(5)
    with eval_mode(student):
        with torch.no_grad():
            target = torch.softmax(student(x), 1)
        want = kl_pgd(student, x, target_probs=target, eps=0.031, step_size=0.007, steps=3,
                      random_start="normal", start_scale=0.001)
    assert torch.equal(got, want)


@pytest.mark.parametrize("name,loss,start", [("fat", "ce", "uniform"), ("fat_trades", "kl", "normal")])
def test_fat_inner_max_is_early_stopped_pgd_with_the_current_tau(name: str, loss: str, start: str, batch) -> None:
    student = tiny_cnn(4).train()
    cfg = method_config({"name": name, "attack": {"steps": 3}})
    method = cfg.definition.build(cfg, MethodContext(student=student, forward=student, eps=0.2, num_classes=10))
    x, y = batch
    torch.manual_seed(6)
    got = method.inner_max(x, y, StepInfo(95, 0, 1.0))
    torch.manual_seed(6)
    with eval_mode(student):
        want = early_stopped_pgd(student, x, y, eps=0.2, tau=tau_at(cfg, 95), step_size=0.2 * 0.007 / 0.031,
                                 steps=3, omega=0.001, loss=loss, random_start=start)
    assert tau_at(cfg, 95) == (2 if name == "fat" else 3)
    assert torch.equal(got, want)


def reference_inner_max(name: str, student, x, y, *, eps: float, step: float, steps: int) -> torch.Tensor:
    with eval_mode(student):
        if name == "pgd_at":
            return pgd(student, x, y, eps=eps, step_size=step, steps=steps, random_start="uniform", keep_best=False)
        if name == "trades":
            with torch.no_grad():
                target = torch.softmax(student(x), 1)
            return kl_pgd(student, x, target_probs=target, eps=eps, step_size=step, steps=steps)
        return early_stopped_pgd(student, x, y, eps=eps, tau=0, step_size=step, steps=steps, omega=0.001,
                                 loss="ce" if name == "fat" else "kl")


@pytest.mark.parametrize("name,step", [("trades", 0.007 / 0.031 * 8 / 255), ("fat", 0.007 / 0.031 * 8 / 255),
                                       ("fat_trades", 0.007 / 0.031 * 8 / 255), ("pgd_at", 2 / 255)])
def test_default_attack_steps_are_the_references(name: str, step: float, batch) -> None:
    """At eps 8/255: TRADES, FAT and FAT-TRADES step 0.007 per 0.031 of eps (their codes: 0.007 at
    0.031), PGD-AT 2/255; the other of the two steps gives a different x'."""
    student = tiny_cnn(8).train()
    cfg = method_config({"name": name, "attack": {"steps": 3}})
    method = cfg.definition.build(cfg, MethodContext(student=student, forward=student, eps=8 / 255, num_classes=10))
    x, y = batch
    torch.manual_seed(9)
    got = method.inner_max(x, y, StepInfo(0, 0, 1.0))
    other = 2 / 255 if name != "pgd_at" else 0.007 / 0.031 * 8 / 255
    for candidate, same in ((step, True), (other, False)):
        torch.manual_seed(9)
        want = reference_inner_max(name, student, x, y, eps=8 / 255, step=candidate, steps=3)
        assert torch.equal(got, want) == same


def test_pgd_at_inner_max_is_uniform_start_ce_pgd(batch) -> None:
    student = tiny_cnn(5).train()
    cfg = method_config({"name": "pgd_at", "attack": {"steps": 3}})
    method = cfg.definition.build(cfg, MethodContext(student=student, forward=student, eps=0.2, num_classes=10))
    x, y = batch
    torch.manual_seed(7)
    got = method.inner_max(x, y, StepInfo(0, 0, 1.0))
    torch.manual_seed(7)
    with eval_mode(student):
        want = pgd(student, x, y, eps=0.2, step_size=0.05, steps=3, random_start="uniform", keep_best=False)
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["trades", "fat_trades"])
def test_trades_loss_terms_use_two_forwards_and_the_formula(name: str, batch) -> None:
    # Head x8: logits of a few units, KL ~0.06. At x1 the KL is ~1e-3 and KL(q || p) differs from
    # KL(p || q) by ~1e-7, below float32's error on terms of size |log p| ~ 2: no check could tell.
    student = tiny_cnn(6, head_scale=8.0).train()
    cfg = method_config({"name": name, "beta": 4.0})
    method = cfg.definition.build(cfg, MethodContext(student=student, forward=student, eps=0.2, num_classes=10))
    x, y = batch
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    with torch.no_grad():
        clean, adv = np_of(student(x)), np_of(student(x_adv))
    loss, metrics = method.loss_terms(x, y, x_adv, StepInfo(0, 0, 1.0))
    assert_trades_close([loss.item(), metrics["ce"].item(), metrics["kl"].item()], clean, adv, y.numpy(), 4.0)
    # The tolerance still tells the formula from its likely mistakes: the KL's other direction, the
    # adversarial logits in the CE, one forward of x only.
    kl_tol, ce_tol = kl_atol(clean, adv), ce_atol(clean, y.numpy())
    assert abs(kl_np(adv, clean).mean() - kl_np(clean, adv).mean()) > 10 * kl_tol
    assert abs(trades_np(adv, clean, y.numpy(), 4.0)[1] - trades_np(clean, adv, y.numpy(), 4.0)[1]) > 10 * ce_tol
    assert kl_np(clean, adv).mean() > 10 * kl_tol
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())


# ----------------------------------------------------------------------------- profiles

def test_profiles() -> None:
    assert list(METHODS.get("trades").profiles) == ["paper", "official"]
    paper, official = method_config({"name": "trades"}), method_config({"name": "trades", "profile": "official"})
    pa, oa = paper.attack, official.attack
    assert (paper.beta, pa.steps, pa.eps, pa.step_size) == (6.0, 10, None, None)
    assert (official.beta, oa.steps, oa.eps, oa.step_size) == (6.0, 10, 0.031, 0.007)
    for name in ("fat", "fat_trades"):
        p, o = method_config({"name": name}), method_config({"name": name, "profile": "official"})
        pa, oa = p.attack, o.attack
        assert (pa.eps, pa.step_size, oa.eps, oa.step_size) == (None, None, 0.031, 0.007)
        assert pa.steps == oa.steps == 10 and pa.omega == oa.omega == 0.001 and pa.tau == oa.tau == 0
        assert p.tau_milestones == o.tau_milestones == ((50, 90) if name == "fat" else (30, 50, 70))
        assert p.beta == 6.0
    pgd_cfg = method_config({"name": "pgd_at"})
    assert list(pgd_cfg.definition.profiles) == ["paper"]
    a = pgd_cfg.attack
    assert (a.steps, a.step_size, a.eps, a.random_start, a.mode) == (10, None, None, "uniform", "eval")
    for name in AT_METHODS:
        mdef = METHODS.get(name)
        assert mdef.teacher_roles == () and not mdef.any_teachers
        mdef.check_teachers(0)
        with pytest.raises(ConfigError, match="takes 0 teacher"):
            mdef.check_teachers(1)


def test_config_errors() -> None:
    for raw, field in [({"name": "trades", "beta": -1.0}, "beta"),
                       ({"name": "trades", "attack": {"steps": 0}}, "attack.steps"),
                       ({"name": "fat", "attack": {"tau": -1}}, "attack.tau"),
                       ({"name": "fat", "tau_milestones": [90, 50]}, "tau_milestones"),
                       ({"name": "pgd_at", "attack": {"steps": 0}}, "attack.steps"),
                       ({"name": "trades", "profile": "offical"}, "profile"),
                       ({"name": "pgd_at", "attack": {"random_start": "gauss"}}, "attack.random_start")]:
        with pytest.raises(ConfigError) as err:
            method_config(raw)
        assert err.value.field == field
