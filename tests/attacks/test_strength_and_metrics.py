"""Attack strength on a quickly trained digits model (orderings that must hold), the metrics
against hand-computed values, and the threat-model check of the evaluator."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu

from attacks import AttackModeError, AttackSpec
from attacks.scoring import PerturbationError, check_perturbation, clean_correct, robust_correct
from attacks.metrics import (Count, Transfer, count, mann_whitney, transfer_rates, trial_indices,
                             w_robust, w_robust_per_trial, worst_case)
from trainers.data import load_dataset
from trainers.models import DataCfg, build_model

EPS = 0.1
N_TEST = 240  # a fixed slice of the digits test split keeps AutoAttack's share of the suite small
BATCH = 128



@pytest.fixture(scope="module")
def trained():
    """small_cnn, 6 epochs of Adam on digits (~2 s): ~99% clean, far from robust at eps 0.1."""
    ds = load_dataset("digits")
    info = ds.info
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10,
                        data_cfg=DataCfg((1, 8, 8), info.mean, info.std))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    x, y = ds.train.x, ds.train.y
    model.train()
    for _ in range(6):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, ds.test.x[:N_TEST], ds.test.y[:N_TEST]


@pytest.fixture(scope="module")
def masks(trained):
    model, x, y = trained
    clean = clean_correct(model, x, y, BATCH)
    specs = {
        "fgsm": AttackSpec("fgsm", {"eps": EPS}),
        "pgd10": AttackSpec("pgd", {"eps": EPS, "steps": 10}),
        "pgd50": AttackSpec("pgd", {"eps": EPS, "steps": 50}),
        "cw": AttackSpec("cw_inf", {"eps": EPS, "steps": 20}),
        "aa": AttackSpec("autoattack", {"eps": EPS, "n_iter": 10, "n_queries": 100}),
    }
    out = {name: robust_correct(model, x, y, s, seed=0, batch_size=BATCH, clean=clean)
           for name, s in specs.items()}
    out["clean"] = clean
    return out


def test_model_is_accurate_and_attackable(masks) -> None:
    n = len(masks["clean"])
    assert masks["clean"].sum() >= 0.95 * n
    assert masks["pgd10"].sum() <= 0.9 * masks["clean"].sum()


def test_robust_implies_clean(masks) -> None:
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == masks["clean"].shape
        assert not (mask & ~masks["clean"]).any(), name


def test_strength_ordering(masks) -> None:
    c = {k: int(v.sum()) for k, v in masks.items()}
    assert c["clean"] >= c["fgsm"] >= c["pgd10"] >= c["pgd50"], c
    # Same seed and step: PGD-50 walks PGD-10's path further and keeps the strongest iterate,
    # so per point robust under PGD-50 implies robust under PGD-10.
    assert not (masks["pgd50"] & ~masks["pgd10"]).any()


def test_autoattack_is_at_least_as_strong_as_every_native_attack(masks) -> None:
    aa = int(masks["aa"].sum())
    for name in ("fgsm", "pgd10", "pgd50", "cw"):
        assert aa <= int(masks[name].sum()), (name, aa, int(masks[name].sum()))


def test_robust_correct_is_deterministic_and_computes_clean_itself(trained, masks) -> None:
    model, x, y = trained
    spec = AttackSpec("pgd", {"eps": EPS, "steps": 10})
    again = robust_correct(model, x, y, spec, seed=0, batch_size=BATCH)  # clean computed inside
    assert torch.equal(again, masks["pgd10"])


@pytest.mark.parametrize("name", ["pgd", "square"])
def test_clean_errors_are_never_robust(trained, masks, name) -> None:
    # Wrong labels on the first 10 points: clean-wrong, so not robust, whatever the attack does
    # (eps 0: the attack cannot change anything).
    model, x, y = trained
    y_bad = y.clone()
    y_bad[:10] = (y[:10] + 1) % 10
    spec = AttackSpec(name, {"eps": 0.0} if name == "pgd" else {"eps": 0.0, "n_queries": 5})
    robust = robust_correct(model, x, y_bad, spec, seed=0, batch_size=BATCH)
    assert not robust[:10].any()
    assert torch.equal(robust[10:], masks["clean"][10:])


def test_robust_correct_refuses_train_mode(trained) -> None:
    model, x, y = trained
    model.train()
    try:
        with pytest.raises(AttackModeError):
            robust_correct(model, x[:8], y[:8], AttackSpec("fgsm", {"eps": EPS}), seed=0,
                           batch_size=BATCH)
    finally:
        model.eval()


def test_eps_zero_keeps_clean_accuracy(trained, masks) -> None:
    model, x, y = trained
    zero = robust_correct(model, x, y, AttackSpec("pgd", {"eps": 0.0}), seed=0, batch_size=BATCH)
    assert torch.equal(zero, masks["clean"])


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def b(*bits: int) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.bool)


def test_count_arithmetic() -> None:
    c = count(b(1, 0, 1, 1))
    assert c == Count(3, 4) and c.rate == 0.75
    assert Count(3, 4) + Count(2, 6) == Count(5, 10)
    assert (Count(3, 4) + Count(2, 6)).rate == 0.5
    assert math.isnan(Count(0, 0).rate)
    assert count(torch.zeros(0, dtype=torch.bool)) == Count(0, 0)


def test_worst_case_is_per_point_and_not_min_of_accuracies() -> None:
    a = b(1, 1, 0, 0, 1, 1)
    c = b(0, 1, 1, 0, 1, 1)
    d = b(1, 1, 1, 1, 0, 1)
    a0, c0 = a.clone(), c.clone()
    worst = worst_case([a, c, d])
    assert torch.equal(worst, b(0, 1, 0, 0, 0, 1))
    # min of the accuracies is 4/6; the per-point worst case is 2/6.
    assert min(count(m).rate for m in (a, c, d)) == 4 / 6 and count(worst).rate == 2 / 6
    assert torch.equal(a, a0) and torch.equal(c, c0)  # inputs untouched
    assert torch.equal(worst_case(iter([a])), a)
    with pytest.raises(ValueError):
        worst_case([])


def test_w_robust() -> None:
    assert w_robust(Count(90, 100), Count(40, 100)) == pytest.approx(0.65)
    assert w_robust(Count(3, 4), Count(1, 4)) == pytest.approx(0.5)


def test_transfer_rates_by_hand() -> None:
    eligible = b(1, 1, 1, 1, 1, 0)
    student = b(0, 0, 0, 1, 1, 0)  # fooled on 0, 1, 2 (5 is not eligible)
    teachers = {"t1": b(0, 1, 0, 0, 1, 0),  # also fooled on 0 and 2 (and 3, 5: don't count)
                "t2": b(1, 1, 1, 1, 1, 1),
                "t3": b(0, 0, 0, 0, 0, 0)}
    rates = transfer_rates(student, teachers, eligible)
    assert rates["t1"] == Transfer(2, 3) and rates["t1"].rate == pytest.approx(2 / 3)
    assert rates["t2"] == Transfer(0, 3) and rates["t2"].rate == 0
    assert rates["t3"] == Transfer(3, 3) and rates["t3"].rate == 1
    none = transfer_rates(b(1, 1), {"t": b(0, 0)}, b(1, 1))
    assert none["t"] == Transfer(0, 0) and math.isnan(none["t"].rate)


def test_trial_indices() -> None:
    subsets = trial_indices(100, trials=6, size=30, seed=3)
    assert len(subsets) == 6
    for s in subsets:
        assert s.shape == (30,) and len(set(s.tolist())) == 30
        assert 0 <= int(s.min()) and int(s.max()) < 100
    assert len({tuple(sorted(s.tolist())) for s in subsets}) == 6
    again = trial_indices(100, trials=6, size=30, seed=3)
    assert all(torch.equal(s, t) for s, t in zip(subsets, again))
    other = trial_indices(100, trials=6, size=30, seed=4)
    assert not all(torch.equal(s, t) for s, t in zip(subsets, other))
    full = trial_indices(10, trials=2, size=10, seed=0)
    assert all(sorted(s.tolist()) == list(range(10)) for s in full)
    for size in (0, 101, -1):
        with pytest.raises(ValueError):
            trial_indices(100, trials=1, size=size, seed=0)


def test_w_robust_per_trial_by_hand() -> None:
    clean = b(1, 1, 1, 0, 1, 0)
    robust = b(1, 0, 0, 0, 1, 0)
    subsets = [torch.tensor([0, 1]), torch.tensor([2, 3, 4, 5])]
    # subset 0: clean 2/2, robust 1/2 -> 0.75; subset 1: clean 2/4, robust 1/4 -> 0.375
    np.testing.assert_allclose(w_robust_per_trial(clean, robust, subsets), [0.75, 0.375])


def test_mann_whitney_by_hand() -> None:
    # a = (1, 3, 5), b = (2, 4, 6): U_a = #{a_i > b_j} = 0 + 1 + 2 = 3. For n = m = 3 the exact
    # null distribution of U over the C(6, 3) = 20 orderings has counts 1,1,2,3,3,3,3,2,1,1 for
    # U = 0..9, so the two-sided p = 2 * P(U <= 3) = 2 * 7/20 = 0.7.
    u, p = mann_whitney(np.array([1.0, 3.0, 5.0]), np.array([2.0, 4.0, 6.0]))
    assert u == 3 and p == pytest.approx(0.7)
    # Completely separated samples of 30 (DARHT's 30 trials): U = 0. At this size the p-value is
    # the normal approximation with continuity correction: mu = nm/2 = 450,
    # sigma = sqrt(nm(n+m+1)/12) = sqrt(4575), z = (|U - mu| - 1/2) / sigma, p = erfc(z / sqrt 2).
    a = np.linspace(0.50, 0.55, 30)
    u, p = mann_whitney(a, a + 0.1)
    z = (450 - 0.5) / math.sqrt(30 * 30 * 61 / 12)
    assert u == 0 and p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-6)
    assert p < 1e-9
    u, p_swapped = mann_whitney(a + 0.1, a)
    assert u == 900 and p_swapped == pytest.approx(p)


def test_mann_whitney_matches_scipy_two_sided() -> None:
    rng = np.random.default_rng(0)
    a, c = rng.normal(0.60, 0.01, 30), rng.normal(0.61, 0.01, 30)
    ref = mannwhitneyu(a, c, alternative="two-sided")
    assert mann_whitney(a, c) == pytest.approx((ref.statistic, ref.pvalue))
    assert mann_whitney(a, c)[1] < 0.05
    same = rng.normal(0.6, 0.01, 30)
    assert mann_whitney(same, same)[1] > 0.9


# ---------------------------------------------------------------------------------------------
# The evaluator's threat-model check
# ---------------------------------------------------------------------------------------------

def test_check_perturbation_accepts_points_in_the_threat_model() -> None:
    x = torch.tensor([[0.0, 0.5, 1.0, 0.95]])
    check_perturbation(x, x, 0.1)
    check_perturbation(torch.tensor([[0.1, 0.4, 0.9, 1.0]]), x, 0.1)  # on the ball's edge
    check_perturbation(x + 1e-7, x.clamp(max=1 - 1e-7), 0.0)  # within the tolerance
    check_perturbation(torch.zeros(0, 4), torch.zeros(0, 4), 0.1)


@pytest.mark.parametrize("bad", [
    [[0.0, 0.5, 1.0, 0.95 - 0.1 - 1e-4]],  # out of the ball
    [[0.0, 0.5 + 0.2, 1.0, 0.95]],        # out of the ball
    [[-1e-3, 0.5, 1.0, 0.95]],            # below 0
    [[0.0, 0.5, 1.0 + 1e-3, 0.95]],       # above 1
    [[0.0, float("nan"), 1.0, 0.95]],
    [[0.0, 0.5, float("inf"), 0.95]],
])
def test_check_perturbation_refuses(bad) -> None:
    x = torch.tensor([[0.0, 0.5, 1.0, 0.95]])
    with pytest.raises(PerturbationError):
        check_perturbation(torch.tensor(bad), x, 0.1)


def test_check_perturbation_out_of_range_even_when_within_eps() -> None:
    # 0 - 0.05 is within eps 0.1 of x but outside [0, 1].
    with pytest.raises(PerturbationError):
        check_perturbation(torch.tensor([[-0.05]]), torch.tensor([[0.0]]), 0.1)
