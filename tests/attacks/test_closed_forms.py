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

ATOL = 1e-6


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


def test_fat_rejects_unknown_loss() -> None:
    with pytest.raises(ValueError, match="loss"):
        run_fat(A[None], tau=0, loss="cw")


# ---------------------------------------------------------------------------------------------
# Loss functions vs hand formulas
# ---------------------------------------------------------------------------------------------

Z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, -1.0], [1.0, 1.0, 1.0]])
Y = torch.tensor([0, 2, 1])


def test_cross_entropy_hand_formula() -> None:
    expected = []
    for z, y in zip(Z.tolist(), Y.tolist()):
        expected.append(-z[y] + math.log(sum(math.exp(v) for v in z)))
    out = losses.cross_entropy(Z, Y)
    assert out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=0)


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
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=0)


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
    torch.testing.assert_close(losses.kl_to_target(Z, torch.softmax(Z, 1)), torch.zeros(3),
                               atol=1e-6, rtol=0)
