"""Every sanity flag fires on a model built to trigger it and stays silent on honest small CNNs
(naturally and adversarially trained on digits). The triggering models are known failure modes:
input quantization (zero gradients), a saturated softmax (probabilities), a square root at black
pixels (non-finite gradients), a tiny gradient unrelated to the loss, a hard threshold in front
(no gradient path), dropout left on (randomized), and two-class models whose loss along the attack
path has a narrow adversarial band (large steps jump over it) or a local maximum before it
(iterative steps stall where one FGSM step of eps lands)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import AttackSpec
from attacks.autoattack import library_warnings
from attacks.scoring import robust_correct
from attacks.sanity import (SanityParams, logits_flag, monotone_flag, randomness_flag, robustness_curve,
                            run_model_checks, steps_flag, subsample, transfer_correct, unbounded_flag)
from attacks.sanity_flags import Flag, verdict
from attacks.sanity_gradients import gradient_flag
from attacks.sanity_suite import (attack_kind, black_box_flag, fgsm_flag, format_eps, library_flag, protocol_flag,
                                  transfer_flag)
from trainers.data import as_float, load_dataset
from trainers.models import DataCfg, build_model
from tests.attacks.sanity_models import DIGITS_EPS, POINTS, Quantized

EPS = 0.1
N = POINTS
BATCH = 128
FAST = SanityParams(points=N, curve_steps=10, unbounded_steps=20, strong_steps=30, strong_restarts=1)


@pytest.fixture(scope="module")
def teacher(train_digits_cnn):
    return train_digits_cnn(1)


class Saturated(nn.Module):
    """softmax(1000 z): probabilities instead of logits, saturated."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(1000 * self.model(x), dim=1)


class SqrtInput(nn.Module):
    """x + 0 * sqrt(x): the same outputs, a non-finite input gradient at every black pixel."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + 0 * x.sqrt())


class PathModel(nn.Module):
    """Two classes; the class-1 logit is -1 + sum of Gaussian bumps (center, width, height) of the
    image mean u. Images of constant 0.5 are class 0; sign-gradient steps move u by the step."""

    def __init__(self, bumps: list[tuple[float, float, float]]) -> None:
        super().__init__()
        self.bumps = bumps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.flatten(1).mean(1)
        h = -1 + sum(a * torch.exp(-((u - c) / w) ** 2) for c, w, a in self.bumps)
        return torch.stack([torch.zeros_like(h), h], 1)


GREY = torch.full((16, 1, 8, 8), 0.5), torch.zeros(16, dtype=torch.long)
BAND = PathModel([(0.57, 0.012, 2.0)]).eval()
"""Adversarial only for u in ~[0.56, 0.58]: PGD steps of eps/4 land there at eps 0.1 (u = 0.575)
and jump over it at eps 0.2 (0.55 <-> 0.60)."""
TRAP = PathModel([(0.53, 0.01, 0.5), (0.6, 0.02, 3.0)]).eval()
"""A local maximum of the loss at u = 0.53 (still class 0) before the adversarial region around
0.6: one FGSM step of 0.1 lands in it, PGD oscillates around the local maximum."""


def pgd(eps: float = EPS, **params) -> AttackSpec:
    return AttackSpec("pgd", {"eps": eps, **params})


def masks_for(model, x, y, specs):
    return {label: robust_correct(model, x, y, spec, seed=0, batch_size=BATCH) for label, spec in specs.items()}


@pytest.mark.parametrize("honest, eps, params", [
    ("cnn", EPS, FAST),
    # The steps check's default PGD-100x2: PGD-30x1 in steps of eps/10 is not stronger than PGD-10 on this model.
    ("at_cnn", DIGITS_EPS, SanityParams(points=N, curve_steps=10, unbounded_steps=20))])
def test_honest_cnns_pass_every_model_check(honest, eps, params, points, request):
    model = request.getfixturevalue(honest)
    flags, whitebox = run_model_checks(model, *points, eps=eps, weak=AttackSpec("pgd", {"steps": 10}, "PGD-10"),
                                       params=params, eot=False, seed=0, batch_size=BATCH)
    assert [f.check for f in flags] == ["monotone_eps", "unbounded", "more_steps", "input_gradients",
                                        "gradient_quality", "randomness", "logits"]
    assert all(f.status == "ok" for f in flags), [(f.check, f.reason) for f in flags]
    assert verdict(flags) == "ok"
    curve = flags[0].figures
    assert curve["eps"] == [0.0, eps / 4, eps / 2, eps, 2 * eps] and curve["accuracy"][0] > 0.85 > curve["accuracy"][3]
    assert whitebox.float().mean() < curve["accuracy"][0]
    assert flags[4].figures["median_error"] < 0.01 and flags[4].figures["points"] == N


def test_monotone_fires_when_large_steps_jump_over_the_adversarial_band():
    curve = robustness_curve(BAND, *GREY, eps=EPS, params=FAST, seed=0, batch_size=BATCH)
    assert [float(m.float().mean()) for m in curve.values()] == [1.0, 1.0, 1.0, 0.0, 1.0]
    flag = monotone_flag(curve)
    assert flag.status == "fail" and "rises" in flag.reason and "eps 0.1 to 0.2" in flag.reason


def test_unbounded_fires_on_quantized_inputs(cnn, points):
    assert unbounded_flag(cnn, *points, params=FAST, seed=0, batch_size=BATCH).status == "ok"
    flag = unbounded_flag(Quantized(cnn).eval(), *points, params=FAST, seed=0, batch_size=BATCH)
    assert flag.status == "fail" and flag.figures["robust"] > 0.9


def test_steps_check_flags_a_weak_one_step_pgd(cnn, points):
    strong = FAST.strong(EPS)
    kw = dict(seed=0, batch_size=BATCH)
    weak = robust_correct(cnn, *points, pgd(steps=1, step_size=EPS / 10), **kw)
    strong_mask = robust_correct(cnn, *points, strong, **kw)
    flag = steps_flag(weak, strong_mask, "PGD-1", strong.display)
    assert flag.status == "warn" and "PGD-1 is too weak" in flag.reason


def test_steps_check_fails_when_more_steps_raise_robust_accuracy():
    weak = robust_correct(BAND, *GREY, pgd(steps=10), seed=0, batch_size=BATCH)
    overshooting = robust_correct(BAND, *GREY, pgd(steps=100, step_size=0.05), seed=0, batch_size=BATCH)
    flag = steps_flag(weak, overshooting, "PGD-10", "PGD-100")
    assert flag.status == "fail" and flag.figures["missed_by_strong"] == 16


def test_gradient_check_fires_on_zero_and_non_finite_gradients(cnn, points):
    assert gradient_flag(cnn, *points, batch_size=BATCH).status == "ok"
    zero = gradient_flag(Quantized(cnn).eval(), *points, batch_size=BATCH)
    assert zero.status == "warn" and zero.figures["zero"] == N
    nonfinite = gradient_flag(SqrtInput(cnn).eval(), *points, batch_size=BATCH)
    assert nonfinite.status == "fail" and nonfinite.figures["nonfinite"] == N


def test_randomness_fires_on_dropout_left_on_and_on_an_mc_student(points, train_digits_cnn):
    x = points[0]
    base = train_digits_cnn(2, steps=1)
    assert randomness_flag(base, x, batch_size=BATCH, eot=False).status == "ok"
    dropout = nn.Sequential(base, nn.Dropout(0.5)).eval()
    dropout[1].train()  # dropout in train mode, the rest in eval mode
    flag = randomness_flag(dropout, x, batch_size=BATCH, eot=False)
    assert flag.status == "fail" and "EOT" in flag.reason and flag.figures["flips"] > 0
    info = load_dataset("digits").info
    student = build_model("darht_student", num_classes=10, data_cfg=DataCfg((1, 8, 8), info.mean, info.std),
                          backbone="small_cnn", num_teachers=2, backbone_kwargs={"width": 4, "hidden": 16},
                          dropout=0.3, mc_samples=2, inference="mc").eval()
    assert randomness_flag(student, x, batch_size=BATCH, eot=False).status == "fail"
    evaluated_with_eot = randomness_flag(student, x, batch_size=BATCH, eot=True)
    assert evaluated_with_eot.status == "ok" and "EOT" in evaluated_with_eot.reason


def test_logits_check_fires_on_probabilities(cnn, points):
    assert logits_flag(cnn, points[0], batch_size=BATCH).status == "ok"
    assert logits_flag(Saturated(cnn).eval(), points[0], batch_size=BATCH).status == "fail"


SUITE = {"FGSM": AttackSpec("fgsm", {"eps": EPS}), "PGD-10": pgd(steps=10),
         "Square": AttackSpec("square", {"eps": EPS, "n_queries": 100})}
KINDS = {"FGSM": "gradient", "PGD-10": "gradient", "Square": "black-box"}
NAMES = {"FGSM": "fgsm", "PGD-10": "pgd", "Square": "square"}


def test_black_box_and_fgsm_checks_are_silent_on_the_trained_cnn(cnn, points):
    masks = masks_for(cnn, *points, SUITE)
    assert black_box_flag(masks, KINDS).status == "ok"
    assert fgsm_flag(masks, NAMES, KINDS).status == "ok"


def test_fgsm_beating_the_iterative_attacks_warns():
    specs = {"FGSM": AttackSpec("fgsm", {"eps": EPS}), "PGD-10": pgd(steps=10), "CW": AttackSpec("cw_inf", {"eps": EPS})}
    names = {"FGSM": "fgsm", "PGD-10": "pgd", "CW": "cw_inf"}
    flag = fgsm_flag(masks_for(TRAP, *GREY, specs), names, {a: "gradient" for a in specs})
    assert flag.status == "warn" and flag.figures["missed"] == 16


def test_suite_checks_skip_when_the_suite_lacks_the_attacks():
    mask = torch.ones(4, dtype=torch.bool)
    assert black_box_flag({"PGD": mask}, {"PGD": "gradient"}).status == "skip"
    assert fgsm_flag({"PGD": mask}, {"PGD": "pgd"}, {"PGD": "gradient"}).status == "skip"
    assert transfer_flag({}, mask).status == "skip"
    assert library_flag([], ran=False).status == "skip"
    assert verdict([Flag("a", "skip", ""), Flag("b", "ok", "")]) == "ok"
    assert attack_kind({"name": "autoattack"}) == "mixed"
    assert attack_kind({"name": "autoattack", "version": "rand"}) == "gradient"


def test_transfer_from_a_teacher_beating_white_box_warns(cnn, teacher, points):
    spec = pgd(steps=10)
    whitebox = robust_correct(cnn, *points, spec, seed=0, batch_size=BATCH)
    ok = transfer_flag({"teacher": transfer_correct(teacher, cnn, *points, spec, seed=0, batch_size=BATCH)}, whitebox)
    assert ok.status == "ok", ok.reason
    masked = Quantized(cnn).eval()
    whitebox = robust_correct(masked, *points, spec, seed=0, batch_size=BATCH)
    transfer = transfer_correct(cnn, masked, *points, spec, seed=0, batch_size=BATCH)
    flag = transfer_flag({"teacher": transfer}, whitebox)
    assert flag.status == "warn" and "teacher" in flag.reason and flag.figures["beats_whitebox"]["teacher"] > 0.1 * N


def test_library_checks_are_recorded(cnn, points):
    x, y = points[0][:32], points[1][:32]
    spec = AttackSpec("apgd_ce", {"eps": EPS, "n_iter": 2})
    with library_warnings() as quiet:
        robust_correct(cnn, x, y, spec, seed=0, batch_size=BATCH)
    assert library_flag(quiet, ran=True).status == "ok"
    with library_warnings() as messages:
        robust_correct(Saturated(cnn).eval(), x, y, spec, seed=0, batch_size=BATCH)
    flag = library_flag(messages, ran=True)
    assert flag.status == "warn" and "probability distribution" in flag.reason
    assert "\n" not in flag.reason


FACTS = {"dataset": "cifar10", "dataset_eps": 8 / 255, "eps": 8 / 255, "split": "test", "split_size": 10000,
         "n_evaluated": 10000, "autoattack_versions": ["0.2.0"], "autoattack_installed": "0.2.0", "dtype": "float32",
         "autocast": False, "train_batch": {"per_worker": 128, "workers": 1},
         "selection": "best val_w_robust on the validation split (epoch 12)", "threat_eps": 8 / 255,
         "eval_batch_size": 256}


def test_protocol_silent_on_the_standard_protocol():
    flag = protocol_flag(FACTS)
    assert flag.status == "ok" and "8/255 (the training eps)" in flag.reason and "10000 test points" in flag.reason
    unrecorded = protocol_flag({**FACTS, "threat_eps": None})  # e.g. an imported checkpoint
    assert unrecorded.status == "ok" and "training eps" not in unrecorded.reason


@pytest.mark.parametrize("change, needle", [
    ({"eps": 0.031}, "eps 0.031 is not the cifar10 default 8/255 = 0.0313725 (a rounding of it)"),
    ({"n_evaluated": 1000}, "a subset: 1000 of 10000"),
    ({"split": "val"}, "val split"),
    ({"autoattack_versions": ["0.1.0", "0.2.0"]}, "pyautoattack 0.1.0, 0.2.0"),
    ({"dtype": "bfloat16"}, "bfloat16, not fp32"),
    ({"train_batch": {"per_worker": 128, "workers": 4}}, "global batch of 512 (4 workers x 128)"),
    ({"selection": None}, "selection rule not recorded"),
    ({"threat_eps": 4 / 255}, "evaluated at eps 8/255, but the checkpoint was trained at eps 4/255 (its threat_eps)"),
    ({"eps": 0.1, "dataset_eps": 0.1}, "evaluated at eps 0.1, but the checkpoint was trained at eps 8/255"),
])
def test_protocol_warns_on_each_deviation(change, needle):
    flag = protocol_flag({**FACTS, **change})
    assert flag.status == "warn" and needle in flag.reason, flag.reason


def test_subsample_is_seeded_and_sorted():
    a, b = subsample(1000, 50, seed=3), subsample(1000, 50, seed=3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 50 and torch.equal(a, a.sort().values)
    assert not torch.equal(a, subsample(1000, 50, seed=4))
    assert torch.equal(subsample(30, 50, seed=0), torch.arange(30))
    assert format_eps(0.2) == "0.2" and format_eps(2 / 255) == "2/255"


def test_params_are_validated():
    with pytest.raises(ValueError, match="points"):
        SanityParams(points=0)
    with pytest.raises(ValueError, match="factors"):
        SanityParams(factors=(1.0, 0.5))
    with pytest.raises(ValueError, match="confirm_restarts"):
        SanityParams(confirm_restarts=0)
    assert [s.display for s in SanityParams(confirm_steps=50, confirm_restarts=3).confirm(0.2)] == ["APGD-T",
                                                                                                  "PGD-CW-50x3"]
