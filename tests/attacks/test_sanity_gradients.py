"""The gradient checks: `gradient_quality` against a closed form and on a tiny gradient unrelated
to the loss (which passes every other model check), and a model with no gradient path from its
input, which gets a `fail` verdict while every registered attack still runs on it."""
from __future__ import annotations

import torch
from torch import nn

from attacks import ATTACKS, AttackSpec
from attacks.autoattack import library_warnings
from attacks.sanity import SanityParams, run_model_checks
from attacks.sanity_gradients import QUALITY_TOL, gradient_flag, quality_flag, slope_ratios
from attacks.scoring import clean_correct, robust_correct
from tests.attacks.sanity_models import DIGITS_EPS, POINTS, Threshold, TinyGradient

BATCH = 128


class Linear(nn.Module):
    """Logits x A + scale * x B, the first term detached when `detached`: closed-form gradients."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scale: float, detached: bool) -> None:
        super().__init__()
        self.a, self.b, self.scale, self.detached = a, b, scale, detached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.flatten(1) @ self.a
        return (first.detach() if self.detached else first) + self.scale * x.flatten(1) @ self.b


def test_slope_ratios_match_the_closed_form():
    """Margin z_j - z_y with a = A_j - A_y, b = B_j - B_y: the gradient is a + c b (c b when the first
    term is detached), the loss changes along it by the full a + c b, so the ratio is 1, or
    1 + a.b / (c |b|^2) when the gradient only sees the tiny branch."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 10, generator=gen), torch.randn(64, 10, generator=gen)
    x = 0.2 + 0.6 * torch.rand(16, 1, 8, 8, generator=gen)  # every pixel far inside [0, 1]
    y = torch.arange(16) % 10
    c = 1e-3
    honest = slope_ratios(Linear(a, b, c, detached=False), x, y)
    assert torch.allclose(honest, torch.ones(16, dtype=torch.float64), atol=1e-3), honest
    logits = x.flatten(1) @ a + c * x.flatten(1) @ b
    runner_up = logits.scatter(1, y[:, None], float("-inf")).argmax(1)
    da, db = (a[:, runner_up] - a[:, y]).T, (b[:, runner_up] - b[:, y]).T
    expected = 1 + (da * db).sum(1) / (c * (db * db).sum(1))
    masked = slope_ratios(Linear(a, b, c, detached=True), x, y)
    assert torch.allclose(masked, expected.double(), rtol=1e-3), (masked, expected)
    assert (expected - 1).abs().min() > 10  # the closed form is far from agreement


def test_gradient_quality_catches_a_tiny_gradient_unrelated_to_the_loss(at_cnn, points):
    """The other model checks pass it (PGD at eps 1, following the tiny branch's direction to a
    corner of the cube, breaks ~97-100 % of the points, around the unbounded check's threshold)."""
    flags, _ = run_model_checks(TinyGradient(at_cnn).eval(), *points, eps=DIGITS_EPS,
                                weak=AttackSpec("pgd", {"steps": 10}, "PGD-10"), params=SanityParams(points=POINTS),
                                eot=False, seed=0, batch_size=BATCH)
    status = {f.check: f.status for f in flags}
    others = ("monotone_eps", "more_steps", "input_gradients", "randomness", "logits")
    assert status["gradient_quality"] == "fail" and all(status[c] == "ok" for c in others), status
    quality = next(f for f in flags if f.check == "gradient_quality")
    assert quality.figures["median_error"] > 10 * QUALITY_TOL and quality.figures["agree"] < POINTS / 10
    assert "does not predict the loss" in quality.reason and "\n" not in quality.reason


def test_a_randomized_model_skips_the_gradient_quality_check(cnn, points):
    flag = quality_flag(cnn, *points, batch_size=BATCH, deterministic=False)
    assert flag.status == "skip" and "randomized" in flag.reason


def test_no_gradient_path_is_a_fail_verdict_and_no_attack_raises(cnn, points):
    model = Threshold(cnn).eval()
    x, y = points[0][:24], points[1][:24]
    flag = gradient_flag(model, x, y, batch_size=BATCH)
    assert flag.status == "fail" and flag.reason.startswith("no gradient path from the input to the logits")
    assert "\n" not in flag.reason and flag.figures["no_path"]
    assert quality_flag(model, x, y, batch_size=BATCH, deterministic=True).status == "skip"
    clean = clean_correct(model, x, y, BATCH)
    assert clean.float().mean() > 0.5
    quick = {"n_iter": 3, "n_queries": 30}
    with library_warnings():
        for name, (_, _, library) in ATTACKS.items():
            spec = AttackSpec(name, {"eps": DIGITS_EPS, **(quick if library else {})})
            robust = robust_correct(model, x, y, spec, seed=0, batch_size=BATCH)  # in the eps-ball, finite
            assert not (robust & ~clean).any(), name
    # FGSM starts at x and a zero gradient moves nothing: exactly the clean predictions.
    assert torch.equal(robust_correct(model, x, y, AttackSpec("fgsm", {"eps": DIGITS_EPS}), seed=0,
                                      batch_size=BATCH), clean)
