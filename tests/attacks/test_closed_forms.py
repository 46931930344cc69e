"""Attacks against values derived by hand: closed forms on linear models, never the code's output.

Throughout, f(x) = W @ flatten(x) + b, inputs lie in [0.3, 0.7] and eps is small enough that the
[0, 1] clip never binds, so the only projection in play is the eps-ball's.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks import cw_inf, early_stopped_pgd, fgsm, kl_pgd, pgd
from attacks import losses

# Positions: each step adds +-step to x (|x| <= 1) and rounds once (<= 2^-24); the closed form rounds
# once. At most 30 steps, a start and a projection: 32 x 2^-24 = 1.9e-6, far below any step (>= 1e-3).
ATOL = 32 * 2.0 ** -24
EPS32 = torch.finfo(torch.float32).eps  # 2^-23



class Linear(nn.Module):
    """f(x) = W @ flatten(x) + b."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone().float())
        self.bias = nn.Parameter(torch.zeros(len(weight)) if bias is None else bias.clone().float())
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def well_separated_weight(rows: int, dim: int, seed: int) -> torch.Tensor:
    """Entries in +-[0.2, 1] with random signs (nonzero row differences are checked where they
    matter)."""
    g = torch.Generator().manual_seed(seed)
    mag = 0.2 + 0.8 * torch.rand(rows, dim, generator=g)
    sign = torch.where(torch.rand(rows, dim, generator=g) < 0.5, -1.0, 1.0)
    return mag * sign


def inputs(n: int, seed: int, shape: tuple[int, ...] = (1, 4, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(n, *shape, generator=g)


# ---------------------------------------------------------------------------------------------
# Two classes, cross-entropy: FGSM and PGD
# ---------------------------------------------------------------------------------------------
# With z = W x + b and p = softmax(z), CE(z, y) = -z_y + logsumexp(z), so dCE/dz = p - e_y and
# dCE/dx = W^T (p - e_y) = sum_k p_k w_k - w_y. With two classes and o the other class,
# p_y - 1 = -p_o, so dCE/dx = p_o w_o - p_o w_y = p_o (w_o - w_y). Since p_o > 0,
# sign(dCE/dx) = sign(w_o - w_y), independent of x: every signed step moves the same way, and
# the ball's vertex x + eps * sign(w_o - w_y) is the unique maximizer of CE on the ball.


@pytest.fixture
def two_class() -> tuple[Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
    # w_1 = w_0 + delta with |delta| >= 0.1 per coordinate; small logits, so p_o never underflows.
    w0 = well_separated_weight(1, 16, seed=1)[0] * 0.5
    w = torch.stack([w0, w0 + 0.5 * well_separated_weight(1, 16, seed=11)[0]])
    model = Linear(w, torch.tensor([0.1, -0.1]))
    x = inputs(6, seed=2)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    other = 1 - y
    direction = (w[other] - w[y]).sign().view_as(x)
    assert (w[0] - w[1]).abs().min() > 0.01, "the test needs every coordinate of w_1 - w_0 nonzero"
    return model, x, y, direction


def test_fgsm_two_class_linear_is_the_vertex(two_class) -> None:
    model, x, y, direction = two_class
    eps = 0.05
    x_adv = fgsm(model, x, y, eps=eps)
    torch.testing.assert_close(x_adv, x + eps * direction, atol=ATOL, rtol=0)


def test_fgsm_custom_step_size(two_class) -> None:
    model, x, y, direction = two_class
    x_adv = fgsm(model, x, y, eps=0.05, step_size=0.02)
    torch.testing.assert_close(x_adv, x + 0.02 * direction, atol=ATOL, rtol=0)


@pytest.mark.parametrize("random_start", ["none", "uniform", "normal"])
@pytest.mark.parametrize("keep_best", [True, False])
def test_pgd_two_class_linear_converges_to_the_vertex(two_class, random_start, keep_best) -> None:
    # Steps of eps/4 from anywhere in the ball reach the vertex within 8 steps; 10 are run.
    model, x, y, direction = two_class
    eps = 0.05
    gen = torch.Generator().manual_seed(0)
    x_adv = pgd(model, x, y, eps=eps, steps=10, step_size=eps / 4, random_start=random_start,
                start_scale=0.01, keep_best=keep_best, generator=gen)
    torch.testing.assert_close(x_adv, x + eps * direction, atol=ATOL, rtol=0)


def test_pgd_partial_path_is_steps_times_step(two_class) -> None:
    # 3 steps of eps/8 from x: 3/8 of the way to the vertex, no projection involved.
    model, x, y, direction = two_class
    eps = 0.08
    x_adv = pgd(model, x, y, eps=eps, steps=3, step_size=eps / 8, random_start="none")
    torch.testing.assert_close(x_adv, x + 3 * eps / 8 * direction, atol=ATOL, rtol=0)


def test_pgd_zero_steps_returns_start(two_class) -> None:
    model, x, y, _ = two_class
    torch.testing.assert_close(pgd(model, x, y, eps=0.05, steps=0, random_start="none"), x)


def test_pgd_eps_zero_is_identity(two_class) -> None:
    model, x, y, _ = two_class
    torch.testing.assert_close(pgd(model, x, y, eps=0.0, random_start="uniform"), x)
    torch.testing.assert_close(fgsm(model, x, y, eps=0.0), x)


def test_pgd_clips_to_unit_box() -> None:
    # Inputs on the [0, 1] boundary: the vertex coordinate that leaves [0, 1] is clipped.
    w = torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]]) * 0.5
    model = Linear(w)
    x = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).view(1, 1, 2, 2)
    y = torch.tensor([0])
    # sign(w_1 - w_0) = (-, +, -, +): x + eps * s = (-eps, eps, 1 - eps, 1 + eps) -> clip.
    expected = torch.tensor([[0.0, 0.1, 0.9, 1.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(fgsm(model, x, y, eps=0.1), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(pgd(model, x, y, eps=0.1, random_start="none"), expected,
                               atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# Multi-class, CW margin
# ---------------------------------------------------------------------------------------------
# cw_margin = -clamp(z_y - max_{j != y} z_j + kappa, min=0). Where the clamp is inactive
# (z_y - z_j* + kappa > 0, j* the runner-up) the loss is z_j* - z_y - kappa, whose gradient in x is
# w_j* - w_y. Where it is active (z_y - z_j* + kappa < 0) the loss is constantly 0: gradient 0,
# sign(0) = 0, the step is 0.


def test_cw_one_step_follows_the_runner_up() -> None:
    w = well_separated_weight(5, 16, seed=3)
    model = Linear(w)
    x = inputs(8, seed=4)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)  # correct points: the runner-up is the second-highest logit
    runner_up = z.masked_fill(F.one_hot(y, 5).bool(), float("-inf")).argmax(1)
    step = 0.01
    direction = (w[runner_up] - w[y]).view_as(x)
    assert direction.abs().min() > 0
    x_adv = cw_inf(model, x, y, eps=0.05, step_size=step, steps=1, random_start="none")
    torch.testing.assert_close(x_adv, x + step * direction.sign(), atol=ATOL, rtol=0)


def test_cw_kappa_clamp_freezes_confidently_wrong_points() -> None:
    # z_1 - z_0 = 1.6 d.x, z_2 = -10 (never the runner-up).
    # Example 0: x = 0.5 - 0.06 d, d.x = -0.96: correct with z_0 - z_1 = 1.536, clamp inactive ->
    # moves along sign(w_1 - w_0) = sign(d); at the vertex z_0 - z_1 = 0.256 is still > 0.
    # Example 1: x = 0.5 + 0.25 d, d.x = 4: z_1 - z_0 = 6.4 > kappa = 5 -> z_y - z_j* + kappa < 0,
    # loss constant 0, gradient 0, the point stays exactly where it started.
    d = torch.tensor([1.0, -1.0] * 8)
    w = torch.stack([-0.8 * d, 0.8 * d, torch.zeros(16)])
    model = Linear(w, torch.tensor([0.0, 0.0, -10.0]))
    x = torch.stack([0.5 - 0.06 * d, 0.5 + 0.25 * d]).view(2, 1, 4, 4)
    y = torch.tensor([0, 0])
    with torch.no_grad():
        z = model(x)
    kappa = 5.0
    margins = z[:, 0] - z[:, 1] + kappa
    assert margins[0] > 0 > margins[1]
    for steps in (1, 5):
        x_adv = cw_inf(model, x, y, eps=0.05, step_size=0.01, steps=steps, kappa=kappa,
                       random_start="none")
        torch.testing.assert_close(x_adv[1], x[1], atol=0, rtol=0)
        expected0 = x[0] + min(steps * 0.01, 0.05) * d.sign().view(1, 4, 4)
        torch.testing.assert_close(x_adv[0], expected0, atol=ATOL, rtol=0)


def test_pgd_cw_loss_matches_cw_inf() -> None:
    # pgd(loss="cw") is the same closed form: after enough steps the vertex along sign(w_j* - w_y)
    # (two classes, so j* never changes).
    d = torch.tensor([1.0, -1.0] * 8)
    model = Linear(torch.stack([-0.3 * d, 0.3 * d]))
    x = inputs(4, seed=5)
    y = torch.zeros(4, dtype=torch.long)
    x_adv = pgd(model, x, y, eps=0.04, steps=10, loss="cw", random_start="none")
    torch.testing.assert_close(x_adv, x + 0.04 * d.sign().view(1, 1, 4, 4), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# KL-PGD
# ---------------------------------------------------------------------------------------------
# KL(t || softmax(z)) = sum_k t_k log t_k - sum_k t_k log p_k. With sum_k t_k = 1,
# d/dz_j [-sum_k t_k log p_k] = -t_j + p_j sum_k t_k = p_j - t_j. Through z = W x + b:
# d KL / dx = W^T (p - t). One signed step from x is x + step * sign(W^T (p - t)).


@pytest.mark.parametrize("target_kind", ["one_hot", "probs"])
def test_kl_pgd_one_step(target_kind) -> None:
    w = well_separated_weight(4, 16, seed=6)
    model = Linear(w, torch.tensor([0.2, -0.1, 0.0, 0.3]))
    x = inputs(5, seed=7)
    if target_kind == "one_hot":
        target = F.one_hot(torch.tensor([0, 1, 2, 3, 1]), 4).float()
    else:
        g = torch.Generator().manual_seed(8)
        target = torch.softmax(2 * torch.randn(5, 4, generator=g), 1)
    with torch.no_grad():
        p = torch.softmax(x.flatten(1) @ w.T + model.bias, 1)
    grad = (p - target) @ w  # [B, D] = W^T (p - t) per example
    assert grad.abs().min() > 1e-4, "signs would be fragile"
    step = 0.01
    x_adv = kl_pgd(model, x, target_probs=target, eps=0.05, step_size=step, steps=1,
                   random_start="none")
    torch.testing.assert_close(x_adv, x + step * grad.sign().view_as(x), atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# Early-stopped PGD (FAT)
# ---------------------------------------------------------------------------------------------
# Two classes, w_0 = -d/2, w_1 = d/2 with d = (+1, -1, ...) (sum 0, ||d||_1 = 16), b = 0, y = 0.
# Margin m(x) = z_1 - z_0 = d . x; x is misclassified iff m > 0. CE gradient sign is
# sign(w_1 - w_0) = sign(d), so each step of s changes m by s * ||d||_1 = 16 s. With
# x = 0.5 + (m0 / 16) d the start margin is m0 (d . 0.5 = 0). s = 0.01: +0.16 per step; eps =
# 0.05 caps the walk at 5 steps (m0 + 0.8).
#   A: m0 = +0.08 -> wrong at iterate 0.
#   B: m0 = -0.24 -> -0.08 after 1 step, +0.08 after 2: first wrong at iterate 2.
#   C: m0 = -1.00 -> at most -0.20: never wrong; walks to the vertex x + eps * sign(d).

D = torch.tensor([1.0, -1.0] * 8)
S, EPS = 0.01, 0.05


def fat_model() -> Linear:
    return Linear(torch.stack([-D / 2, D / 2]))


def fat_point(m0: float) -> torch.Tensor:
    return (0.5 + m0 / 16 * D).view(1, 4, 4)


def iterate(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th PGD iterate from x (no projection binds before 5 steps)."""
    return x + min(k * S, EPS) * D.sign().view(1, 4, 4)


A, B, C = fat_point(0.08), fat_point(-0.24), fat_point(-1.0)


def run_fat(x: torch.Tensor, tau, **kw) -> torch.Tensor:
    y = torch.zeros(len(x), dtype=torch.long)
    return early_stopped_pgd(fat_model(), x, y, eps=EPS, tau=tau, step_size=S, steps=10, omega=0.0,
                             random_start="none", **kw)


def test_fat_setup_margins() -> None:
    model = fat_model()
    with torch.no_grad():
        m = lambda x: (model(x[None]) @ torch.tensor([-1.0, 1.0])).item()  # noqa: E731
        assert m(A) > 0 and m(iterate(A, 1)) > 0
        assert m(iterate(B, 1)) < 0 < m(iterate(B, 2)) < m(iterate(B, 3))
        assert m(iterate(C, 10)) < 0


def test_fat_tau_zero() -> None:
    x_adv = run_fat(torch.stack([A, B, C]), tau=0)
    torch.testing.assert_close(x_adv[0], A, atol=0, rtol=0)  # frozen at its start
    torch.testing.assert_close(x_adv[1], iterate(B, 2), atol=ATOL, rtol=0)
    torch.testing.assert_close(x_adv[2], iterate(C, 10), atol=ATOL, rtol=0)


def test_fat_tau_one_spends_one_more_step() -> None:
    x_adv = run_fat(torch.stack([A, B, C]), tau=1)
    torch.testing.assert_close(x_adv[0], iterate(A, 1), atol=ATOL, rtol=0)
    torch.testing.assert_close(x_adv[1], iterate(B, 3), atol=ATOL, rtol=0)
    torch.testing.assert_close(x_adv[2], iterate(C, 10), atol=ATOL, rtol=0)


def test_fat_large_tau_is_plain_pgd() -> None:
    x = torch.stack([A, B, C])
    x_adv = run_fat(x, tau=10)
    torch.testing.assert_close(x_adv, torch.stack([iterate(p, 10) for p in x]), atol=ATOL, rtol=0)


def test_fat_keeps_input_order() -> None:
    x = torch.stack([C, B, A, B, C, A])
    x_adv = run_fat(x, tau=0)
    expected = torch.stack([iterate(C, 10), iterate(B, 2), A, iterate(B, 2), iterate(C, 10), A])
    torch.testing.assert_close(x_adv, expected, atol=ATOL, rtol=0)


def test_fat_per_example_tau() -> None:
    x = torch.stack([A, B, B, C, A])
    x_adv = run_fat(x, tau=torch.tensor([1, 0, 1, 0, 0]))
    expected = torch.stack([iterate(A, 1), iterate(B, 2), iterate(B, 3), iterate(C, 10), A])
    torch.testing.assert_close(x_adv, expected, atol=ATOL, rtol=0)


def test_fat_step_limit() -> None:
    # With only 1 step B never gets misclassified, so it returns its first iterate.
    y = torch.zeros(2, dtype=torch.long)
    x_adv = early_stopped_pgd(fat_model(), torch.stack([A, B]), y, eps=EPS, tau=0, step_size=S,
                              steps=1, omega=0.0, random_start="none")
    torch.testing.assert_close(x_adv, torch.stack([A, iterate(B, 1)]), atol=ATOL, rtol=0)


def test_fat_kl_loss_with_tau_zero_freezes_wrong_points() -> None:
    # KL variant: the misclassification check still uses y. A is wrong at its start -> frozen.
    y = torch.zeros(1, dtype=torch.long)
    x_adv = early_stopped_pgd(fat_model(), A[None], y, eps=EPS, tau=0, omega=0.0, loss="kl",
                              random_start="none")
    torch.testing.assert_close(x_adv[0], A, atol=0, rtol=0)


def test_fat_noise_is_omega_times_standard_normal_and_skips_frozen_points() -> None:
    # One step from C (never wrong): x + s * sign(d) + omega * N(0, 1), no projection binding
    # (|s + noise| <= 0.01 + 8 * 0.005 < eps). A (wrong, tau 0) is frozen: no noise either.
    omega = 0.005
    x = torch.stack([C] * 200 + [A] * 5)
    y = torch.zeros(len(x), dtype=torch.long)
    x_adv = early_stopped_pgd(fat_model(), x, y, eps=EPS, tau=0, step_size=S, steps=1, omega=omega,
                              random_start="none", generator=torch.Generator().manual_seed(0))
    noise = (x_adv[:200] - iterate(C, 1)) / omega
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05
    assert torch.equal(x_adv[200:], x[200:])


def test_fat_kl_walks_away_from_the_clean_prediction() -> None:
    # FAT-TRADES: KL(p(x) || p(x')) with p(x) the model's clean prediction. Two classes, as above:
    # dKL/dx' = W^T (p(x') - p(x)) = (p_1(x') - p_1(x)) (w_1 - w_0), so every step moves all pixels
    # by sign(p_1(x') - p_1(x)) * sign(d), and that sign never changes (moving increases the gap).
    # From the start x0 (x + 0.001 N(0, 1) by default; read back with steps=0 under the same seed)
    # the walk ends at the vertex x + eps * sign(p_1(x0) - p_1(x)) * sign(d). The budget is large
    # enough that early stopping never triggers.
    model = fat_model()
    g = torch.Generator().manual_seed(0)
    x = torch.stack([fat_point(m) for m in (-0.5, -0.3, -0.1, 0.2)] * 4)
    x = x + 0.05 * torch.rand(x.shape, generator=g) - 0.025  # break the symmetry between copies
    y = torch.zeros(len(x), dtype=torch.long)
    kw = dict(eps=EPS, tau=10, omega=0.0, loss="kl", start_scale=0.01)
    x0 = early_stopped_pgd(model, x, y, steps=0, generator=torch.Generator().manual_seed(1), **kw)
    assert (x0 - x).abs().max() > 0, "the KL default start is x + start_scale * N(0, 1)"
    with torch.no_grad():
        gap = torch.softmax(model(x0), 1)[:, 1] - torch.softmax(model(x), 1)[:, 1]
    assert gap.abs().min() > 1e-5
    assert (gap > 0).any() and (gap < 0).any()
    x_adv = early_stopped_pgd(model, x, y, steps=10, generator=torch.Generator().manual_seed(1), **kw)
    expected = x + EPS * gap.sign().view(-1, 1, 1, 1) * D.sign().view(1, 4, 4)
    torch.testing.assert_close(x_adv, expected, atol=ATOL, rtol=0)


def test_fat_rejects_unknown_loss() -> None:
    with pytest.raises(ValueError, match="loss"):
        run_fat(A[None], tau=0, loss="cw")


# ---------------------------------------------------------------------------------------------
# Random starts: read back with steps=0
# ---------------------------------------------------------------------------------------------

def test_uniform_start_fills_the_ball() -> None:
    model = fat_model()
    x = torch.full((64, 1, 4, 4), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    eps = 0.1
    x0 = pgd(model, x, y, eps=eps, steps=0, random_start="uniform",
             generator=torch.Generator().manual_seed(0))
    u = ((x0 - x) / eps).flatten()  # should be U(-1, 1): mean 0, variance 1/3
    assert u.min() >= -1 - 1e-6 and u.max() <= 1 + 1e-6
    assert u.min() < -0.99 and u.max() > 0.99
    assert abs(u.mean().item()) < 0.05 and abs(u.var().item() - 1 / 3) < 0.03


def test_normal_start_has_start_scale_std() -> None:
    model = fat_model()
    x = torch.full((64, 1, 4, 4), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    x0 = pgd(model, x, y, eps=0.3, steps=0, random_start="normal", start_scale=0.02,
             generator=torch.Generator().manual_seed(0))
    n = ((x0 - x) / 0.02).flatten()
    assert abs(n.mean().item()) < 0.05 and abs(n.std().item() - 1) < 0.05


def test_fat_default_starts() -> None:
    # FAT (CE): uniform in the ball; FAT-TRADES (KL): x + start_scale * N(0, 1).
    model = fat_model()
    x = torch.full((64, 1, 4, 4), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    eps = 0.1
    kw = dict(eps=eps, steps=0, start_scale=0.01)
    u = (early_stopped_pgd(model, x, y, loss="ce", generator=torch.Generator().manual_seed(0),
                           **kw) - x) / eps
    assert u.abs().max() > 0.99 and abs(u.var().item() - 1 / 3) < 0.03
    n = (early_stopped_pgd(model, x, y, loss="kl", generator=torch.Generator().manual_seed(0),
                           **kw) - x) / 0.01
    assert n.abs().max() < 6 and abs(n.std().item() - 1) < 0.05


def test_normal_start_is_projected() -> None:
    # start_scale far larger than eps: the start is clipped to the ball (and to [0, 1]).
    model = fat_model()
    x = torch.full((8, 1, 4, 4), 0.5)
    x[:, :, 0] = 0.0
    x0 = pgd(model, x, torch.zeros(8, dtype=torch.long), eps=0.05, steps=0, random_start="normal",
             start_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert (x0 - x).abs().max() <= 0.05 + 1e-7 and x0.min() >= 0
    assert ((x0 - x).abs() > 0.05 - 1e-7).float().mean() > 0.5  # most coordinates clipped


# ---------------------------------------------------------------------------------------------
# Loss functions vs hand formulas
# ---------------------------------------------------------------------------------------------

Z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, -1.0], [1.0, 1.0, 1.0]])
Y = torch.tensor([0, 2, 1])


def loss_atol(z: torch.Tensor, size: list[float]) -> torch.Tensor:
    """How far a float32 per-example loss built from log_softmax(z) can be from the exact value,
    `size` the magnitude of its summed terms (sum_k t_k (|log t_k| + |log p_k|); |log p_y| for CE)."""
    # K eps32 (size + max|z| + 1): the max shift, the K-term log-sum-exp (>= 1), the K-term sum, each eps32 x its size
    return z.shape[1] * EPS32 * (torch.tensor(size) + z.abs().amax(1) + 1)


def test_cross_entropy_hand_formula() -> None:
    expected = []
    for z, y in zip(Z.tolist(), Y.tolist()):
        expected.append(-z[y] + math.log(sum(math.exp(v) for v in z)))
    out = losses.cross_entropy(Z, Y)
    assert out.shape == (3,)
    assert ((out.double() - torch.tensor(expected, dtype=torch.float64)).abs() <= loss_atol(Z, expected)).all()


def test_cross_entropy_per_example_no_batch_mean() -> None:
    full = losses.cross_entropy(Z, Y)
    for i in range(3):
        torch.testing.assert_close(losses.cross_entropy(Z[i:i + 1], Y[i:i + 1]), full[i:i + 1])


@pytest.mark.parametrize("kappa", [0.0, 0.5, 2.5, 50.0])
def test_cw_margin_hand_formula(kappa) -> None:
    # Row 0: z_y 2, runner-up 1 -> -max(1 + kappa, 0). Row 1: z_y -1, max other 3 ->
    # -max(-4 + kappa, 0). Row 2: all equal -> -max(kappa, 0).
    expected = torch.tensor([-max(1 + kappa, 0), -max(-4 + kappa, 0), -max(kappa, 0)])
    torch.testing.assert_close(losses.cw_margin(Z, Y, kappa), expected, atol=1e-6, rtol=0)


def test_cw_margin_default_kappa_is_50() -> None:
    torch.testing.assert_close(losses.cw_margin(Z, Y), torch.tensor([-51.0, -46.0, -50.0]))


def test_cw_margin_gradient_zero_when_clamped() -> None:
    z = torch.tensor([[-5.0, 5.0, 0.0]], requires_grad=True)
    losses.cw_margin(z, torch.tensor([0]), kappa=1.0).sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    z = torch.tensor([[1.0, 0.5, 0.0]], requires_grad=True)
    losses.cw_margin(z, torch.tensor([0]), kappa=1.0).sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([[-1.0, 1.0, 0.0]]))


def test_kl_to_target_hand_formula() -> None:
    t = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.2, 0.0, 0.8]])
    expected = []
    for z, tt in zip(Z.tolist(), t.tolist()):
        lse = math.log(sum(math.exp(v) for v in z))
        expected.append(sum(tk * (math.log(tk) - (zk - lse)) for zk, tk in zip(z, tt) if tk > 0))
    out = losses.kl_to_target(Z, t)
    assert out.shape == (3,)
    size = [sum(tk * (abs(math.log(tk)) + abs(zk - math.log(sum(math.exp(v) for v in z))))
                for zk, tk in zip(z, tt) if tk > 0) for z, tt in zip(Z.tolist(), t.tolist())]
    assert ((out.double() - torch.tensor(expected, dtype=torch.float64)).abs() <= loss_atol(Z, size)).all()


def test_kl_to_target_zero_probabilities_are_finite() -> None:
    z = torch.tensor([[30.0, -30.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    out = losses.kl_to_target(z, t)
    assert torch.isfinite(out).all()
    # One-hot target: KL = -log p_k.
    torch.testing.assert_close(out.detach(), -F.log_softmax(z.detach(), 1)[[0, 1], [2, 0]])
    out.sum().backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad, torch.softmax(z.detach(), 1) - t)  # dKL/dz = p - t


def test_kl_to_target_is_zero_at_equal_distributions() -> None:
    t = torch.softmax(Z, 1)
    size = (2 * t * torch.log_softmax(Z, 1).abs()).sum(1).tolist()  # log t and log p: both ~ log_softmax(Z)
    assert (losses.kl_to_target(Z, t).abs() <= loss_atol(Z, size)).all()


# ---------------------------------------------------------------------------------------------
# Documented defaults (docs/evaluation.md#attacks-and-parameters, FAT:
# docs/methods.md#fat-and-fat-trades), read off the closed forms above
# ---------------------------------------------------------------------------------------------
# On the two-class model above (y = 0) every CE / CW step moves by +step * sign(d), and a KL step
# towards the one-hot target e_0 too (dKL/dx = p_1 (w_1 - w_0)). With eps 0.2 and x at 0.5 +- 0.03
# neither the ball nor [0, 1] binds before 0.15 of displacement. Starts are read back with
# steps=0 under the same seed.

SIGN = D.sign().view(1, 4, 4)


def _far(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([fat_point(-3.0)] * n), torch.zeros(n, dtype=torch.long)  # margin -3


def _seeded(fn, *args, **kw) -> torch.Tensor:
    return fn(*args, generator=torch.Generator().manual_seed(0), **kw)


def test_pgd_defaults() -> None:
    # 10 steps of eps/4 from x + 0.001 N(0, 1).
    model, (x, y) = fat_model(), _far()
    x0 = _seeded(pgd, model, x, y, eps=0.2, steps=0)
    assert abs(((x0 - x) / 0.001).std().item() - 1) < 0.05
    torch.testing.assert_close(_seeded(pgd, model, x, y, eps=0.2, steps=2), x0 + 0.1 * SIGN,
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(_seeded(pgd, model, x, y, eps=0.2, step_size=0.01),
                               x0 + 0.1 * SIGN, atol=ATOL, rtol=0)


def ball(v: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the eps-ball around x and [0, 1]. Steps that move every pixel the same
    way each time compose to one projection of the total move."""
    return torch.minimum(torch.maximum(v, x - eps), x + eps).clamp(0, 1)


def test_cw_inf_defaults() -> None:
    # 30 steps of eps/4 from a uniform start, kappa 50. With w = +-2.5 d the margin is
    # z_1 - z_0 = 5 d.x: x = 0.5 + 0.25 d is misclassified by 20 and still pushed (20 < kappa);
    # x = 0.5 - 0.25 d is correct by 20. Both move along sign(d) at every step.
    model = Linear(torch.stack([-2.5 * D, 2.5 * D]))
    x = torch.stack([(0.5 + 0.25 * D).view(1, 4, 4), (0.5 - 0.25 * D).view(1, 4, 4)] * 32)
    y = torch.zeros(64, dtype=torch.long)
    x0 = _seeded(cw_inf, model, x, y, eps=0.2, steps=0)
    u = (x0 - x) / 0.2
    assert u.abs().max() > 0.99 and abs(u.var().item() - 1 / 3) < 0.03
    torch.testing.assert_close(_seeded(cw_inf, model, x, y, eps=0.2, steps=2),
                               ball(x0 + 0.1 * SIGN, x, 0.2), atol=ATOL, rtol=0)
    # The start moves the margin by at most 5 * 16 * 0.2 = 16: the wrong points stay wrong by
    # >= 4 > kappa = 3, so with kappa 3 their loss is clamped and they stay at the start.
    frozen = _seeded(cw_inf, model, x, y, eps=0.2, step_size=0.001, kappa=3.0)
    torch.testing.assert_close(frozen[::2], x0[::2], atol=0, rtol=0)
    x0 = _seeded(cw_inf, model, x, y, eps=0.5, steps=0)
    x_adv = _seeded(cw_inf, model, x, y, eps=0.5, step_size=0.001)
    torch.testing.assert_close(x_adv, ball(x0 + 0.03 * SIGN, x, 0.5), atol=ATOL, rtol=0)


def test_kl_pgd_defaults() -> None:
    # 10 steps of eps/4 from x + 0.001 N(0, 1).
    model, (x, _) = fat_model(), _far()
    t = torch.tensor([[1.0, 0.0]]).expand(len(x), 2)
    x0 = _seeded(kl_pgd, model, x, target_probs=t, eps=0.2, steps=0)
    assert abs(((x0 - x) / 0.001).std().item() - 1) < 0.05
    torch.testing.assert_close(_seeded(kl_pgd, model, x, target_probs=t, eps=0.2, steps=2),
                               x0 + 0.1 * SIGN, atol=ATOL, rtol=0)
    torch.testing.assert_close(_seeded(kl_pgd, model, x, target_probs=t, eps=0.2, step_size=0.01),
                               x0 + 0.1 * SIGN, atol=ATOL, rtol=0)


def test_early_stopped_pgd_defaults() -> None:
    # tau 0, steps of 0.007 per 0.031 of eps (the FAT code: 0.007 at 0.031), at most 10 of them,
    # omega 0.001.
    model, (x, y) = fat_model(), _far()
    kw = dict(random_start="none")
    step = 0.2 * 0.007 / 0.031
    torch.testing.assert_close(_seeded(early_stopped_pgd, model, x, y, eps=0.2, steps=2, omega=0.0,
                                       **kw), x + 2 * step * SIGN, atol=ATOL, rtol=0)
    torch.testing.assert_close(_seeded(early_stopped_pgd, model, x, y, eps=0.2, step_size=0.01,
                                       omega=0.0, **kw), x + 0.1 * SIGN, atol=ATOL, rtol=0)
    noise = (_seeded(early_stopped_pgd, model, x, y, eps=0.2, steps=1, **kw) - x - step * SIGN)
    assert abs((noise / 0.001).std().item() - 1) < 0.05
    frozen = _seeded(early_stopped_pgd, model, A[None], torch.tensor([0]), eps=0.2, **kw)
    torch.testing.assert_close(frozen[0], A, atol=0, rtol=0)  # tau 0: wrong at start -> frozen
