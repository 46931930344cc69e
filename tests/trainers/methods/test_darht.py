"""DARHT (trainers/methods/darht.py, trainers/models/darht_student.py) against docs/methods.md#darht:
the loss against independent numpy formulas, the MC-dropout head, the phases, the paper vs
official profiles, and the clean/adversarial mixing of inner_max."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from kd_testing import DATA_CFG, EPS32, ce_atol, kl_atol_per_example, log_softmax_atol, log_softmax_np, np_of

from attacks import early_stopped_pgd, kl_pgd, pgd
from trainers.config import ConfigError
from trainers.methods import METHODS, MethodContext, StepInfo, method_config
from trainers.methods import darht as darht_module
from trainers.methods.darht import Darht, DarhtConfig, DarhtStep, darht_loss, phase_weights
from trainers.models import build_model
from trainers.models.darht_student import DarhtStudent
from trainers.modes import eval_mode
from trainers.teachers import TeacherSet

OPTIONS = list(itertools.product(["student_teacher", "teacher_student"], ["softmax", "exp"],
                                 ["sample", "batch"]))


# ----------------------------------------------------------------------------- reference formulas

def darht_loss_np(s: np.ndarray, fmap: np.ndarray, t: np.ndarray, y: np.ndarray, *, kl_direction: str,
                  weighting: str, weight_granularity: str, ce_weight: float = 1.0,
                  kd_weight: float = 1.0) -> dict[str, np.ndarray]:
    """docs/methods.md#darht-loss-and-profiles written out loop by loop: s [B, K], fmap [B, J, K],
    t [J, B, K]."""
    b, j_count, _ = fmap.shape
    log_s = log_softmax_np(s)
    ce = -np.mean([log_s[i, y[i]] for i in range(b)])
    kl = np.zeros((b, j_count))
    c = np.zeros((b, j_count))  # teacher CE per example
    for i in range(b):
        for j in range(j_count):
            lp = log_softmax_np(fmap[i, j][None])[0]  # student-teacher feature map slot j
            lq = log_softmax_np(t[j, i][None])[0]     # teacher j
            p, q = np.exp(lp), np.exp(lq)
            kl[i, j] = (p * (lp - lq)).sum() if kl_direction == "student_teacher" else (q * (lq - lp)).sum()
            c[i, j] = -lq[y[i]]
    if weight_granularity == "batch":
        c = np.broadcast_to(c.mean(0, keepdims=True), c.shape)
    w = np.exp(-c)
    if weighting == "softmax":
        w = w / w.sum(1, keepdims=True)
    kd = (w * kl).sum(1).mean()
    return {"loss": ce_weight * ce + kd_weight * kd, "ce": ce, "kd": kd, "weights": w, "kl": kl}


def darht_atol(s: np.ndarray, fmap: np.ndarray, t: np.ndarray, y: np.ndarray, *, kl_direction: str,
               weighting: str, weight_granularity: str, ce_weight: float = 1.0,
               kd_weight: float = 1.0) -> dict[str, np.ndarray]:
    """Float32 error bounds for `darht_loss_np`'s outputs, propagated from kd_testing's per-entry
    log-softmax bound (eps32 x the summed terms) through the KLs, the teacher CEs, the weights and
    the weighted sum."""
    b, j_count, k = fmap.shape
    s_flat, t_flat = fmap.reshape(-1, k), t.transpose(1, 0, 2).reshape(-1, k)  # [B * J, K], rows alike
    target, other = (s_flat, t_flat) if kl_direction == "student_teacher" else (t_flat, s_flat)
    kl_tol = kl_atol_per_example(target, other).reshape(b, j_count)
    c = -log_softmax_np(t_flat).reshape(b, j_count, k)[np.arange(b), :, y]  # [B, J]
    c_tol = log_softmax_atol(t_flat).reshape(b, j_count, k)[np.arange(b), :, y]
    if weight_granularity == "batch":
        c, c_tol = (np.broadcast_to(v.mean(0, keepdims=True), v.shape) for v in (c, c_tol))
    w = np.exp(-c)
    w_rel = c_tol + EPS32  # d exp(-c) / exp(-c) = -dc, and exp's rounding
    if weighting == "softmax":  # normalized: the sum's errors (a weighted mean of the c errors) too
        w, w_rel = w / w.sum(1, keepdims=True), w_rel + c_tol.max(1, keepdims=True) + (j_count + 1) * EPS32
    want = darht_loss_np(s, fmap, t, y, kl_direction=kl_direction, weighting=weighting,
                         weight_granularity=weight_granularity, ce_weight=ce_weight, kd_weight=kd_weight)
    kd_tol = (w * w_rel * want["kl"] + w * kl_tol).sum(1).mean() + (j_count + 1) * EPS32 * want["kd"]
    ce_tol = ce_atol(s, y)
    return {"loss": ce_weight * ce_tol + kd_weight * kd_tol + 3 * EPS32 * want["loss"], "ce": ce_tol,
            "kd": kd_tol, "weights": w * w_rel, "kl": kl_tol}


def random_inputs(b: int, j: int, k: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    s = 3 * torch.randn(b, k, generator=gen)
    fmap = 3 * torch.randn(b, j, k, generator=gen)
    t = 4 * torch.randn(j, b, k, generator=gen)
    y = torch.randint(0, k, (b,), generator=gen)
    return s, fmap, t, y


def tiny_student(*, num_teachers: int = 2, dropout: float = 0.1, mc_samples: int = 4,
                 inference: str = "deterministic", seed: int = 0, hidden: int = 16) -> DarhtStudent:
    torch.manual_seed(seed)
    return build_model("darht_student", num_classes=10, data_cfg=DATA_CFG, backbone="small_cnn",
                       backbone_kwargs={"width": 4, "hidden": hidden}, num_teachers=num_teachers,
                       dropout=dropout, mc_samples=mc_samples, inference=inference)


def darht_method(raw: dict, teacher_dirs: list[Path], *, eps: float = 0.2,
                 student: DarhtStudent | None = None) -> Darht:
    cfg = method_config({"name": "darht", **raw})
    student = student or tiny_student(num_teachers=2, dropout=cfg.dropout, mc_samples=cfg.mc_samples)
    teachers = TeacherSet(teacher_dirs, dataset="digits", num_classes=10, mode=cfg.teacher_mode)
    ctx = MethodContext(student=student, forward=student, eps=eps, num_classes=10, teachers=teachers)
    return cfg.definition.build(cfg, ctx)


# ----------------------------------------------------------------------------- the loss

@pytest.mark.parametrize("j,k", [(1, 10), (4, 10), (1, 100), (4, 100)])
@pytest.mark.parametrize("kl_direction,weighting,granularity", OPTIONS)
def test_loss_matches_the_formula(kl_direction: str, weighting: str, granularity: str, j: int, k: int) -> None:
    s, fmap, t, y = random_inputs(6, j, k, seed=j * 1000 + k)
    loss, parts = darht_loss(s, fmap, t, y, kl_direction=kl_direction, weighting=weighting,
                             weight_granularity=granularity)
    args = (np_of(s), np_of(fmap), np_of(t), y.numpy())
    opts = {"kl_direction": kl_direction, "weighting": weighting, "weight_granularity": granularity}
    want, tol = darht_loss_np(*args, **opts), darht_atol(*args, **opts)
    assert loss.item() == pytest.approx(want["loss"], abs=tol["loss"])
    assert parts["ce"].item() == pytest.approx(want["ce"], abs=tol["ce"])
    assert parts["kd"].item() == pytest.approx(want["kd"], abs=tol["kd"])
    assert (np.abs(np_of(parts["weights"]) - want["weights"]) <= tol["weights"]).all()
    assert (np.abs(np_of(parts["kl"]) - want["kl"]) <= tol["kl"]).all()
    # The KL the other way round is off by far more than the bound.
    flipped = {"student_teacher": "teacher_student", "teacher_student": "student_teacher"}[kl_direction]
    other = darht_loss_np(*args, **{**opts, "kl_direction": flipped})
    assert (np.abs(other["kl"] - want["kl"]) > 10 * tol["kl"]).any()
    assert abs(other["kd"] - want["kd"]) > 10 * tol["kd"]
    assert parts["weights"].shape == parts["kl"].shape == (6, j)
    if weighting == "softmax":  # a distribution over teachers, per example
        np.testing.assert_allclose(np_of(parts["weights"].sum(1)), np.ones(6), rtol=1e-6)
    if granularity == "batch":  # one weight per teacher for the whole batch
        assert torch.equal(parts["weights"], parts["weights"][:1].expand(6, j))


@pytest.mark.parametrize("profile", ["paper", "official"])
def test_profile_settings_give_the_profile_formula(profile: str) -> None:
    cfg = method_config({"name": "darht", "profile": profile})
    opts = {"kl_direction": cfg.kl_direction, "weighting": cfg.weighting,
            "weight_granularity": cfg.weight_granularity}
    s, fmap, t, y = random_inputs(5, 3, 10, seed=7)
    loss, _ = darht_loss(s, fmap, t, y, **opts)
    want = darht_loss_np(np_of(s), np_of(fmap), np_of(t), y.numpy(), **opts)
    tol = darht_atol(np_of(s), np_of(fmap), np_of(t), y.numpy(), **opts)["loss"]
    assert loss.item() == pytest.approx(want["loss"], abs=tol)
    # The two profiles' formulas really differ on the same inputs.
    other = darht_loss_np(np_of(s), np_of(fmap), np_of(t), y.numpy(), **{
        "kl_direction": "teacher_student", "weighting": "exp", "weight_granularity": "batch"}
        if profile == "paper" else {"kl_direction": "student_teacher", "weighting": "softmax",
                                    "weight_granularity": "sample"})
    assert abs(other["loss"] - want["loss"]) > max(1e-3, 10 * tol)


@pytest.mark.parametrize("ce_weight,kd_weight", [(1.0, 0.0), (0.0, 1.0), (0.3, 2.5), (1.0, 1.0)])
def test_ce_and_kd_weights(ce_weight: float, kd_weight: float) -> None:
    s, fmap, t, y = random_inputs(4, 2, 10, seed=3)
    loss, parts = darht_loss(s, fmap, t, y, ce_weight=ce_weight, kd_weight=kd_weight)
    args = (np_of(s), np_of(fmap), np_of(t), y.numpy())
    opts = {"kl_direction": "student_teacher", "weighting": "softmax", "weight_granularity": "sample",
            "ce_weight": ce_weight, "kd_weight": kd_weight}
    want, tol = darht_loss_np(*args, **opts), darht_atol(*args, **opts)
    assert loss.item() == pytest.approx(ce_weight * want["ce"] + kd_weight * want["kd"], abs=tol["loss"])


def test_shape_and_option_errors() -> None:
    s, fmap, t, y = random_inputs(4, 2, 10, seed=0)
    bad_shapes = [(s, fmap, t[:1], y),                 # J mismatch
                  (s, fmap, t[:, :3], y),              # B mismatch (teachers)
                  (s[:3], fmap, t, y),                 # B mismatch (student)
                  (s[:, :9], fmap, t, y),              # K mismatch (student)
                  (s, fmap[..., :9], t, y),            # K mismatch (feature map)
                  (s, fmap, t.transpose(0, 1), y),     # teachers given [B, J, K]
                  (s, fmap.reshape(4, 20), t, y)]      # feature map not reshaped
    for args in bad_shapes:
        with pytest.raises(ValueError):
            darht_loss(*args)
    for kwargs in ({"kl_direction": "forward"}, {"weighting": "uniform"}, {"weight_granularity": "epoch"}):
        with pytest.raises(ValueError):
            darht_loss(s, fmap, t, y, **kwargs)


@pytest.mark.parametrize("kl_direction,weighting,granularity", OPTIONS)
def test_gradient_reaches_feature_map_and_logits_but_not_teachers(kl_direction: str, weighting: str,
                                                                  granularity: str) -> None:
    s, fmap, t, y = (v.requires_grad_(v.is_floating_point()) for v in random_inputs(5, 3, 10, seed=1))
    loss, parts = darht_loss(s, fmap, t, y, kl_direction=kl_direction, weighting=weighting,
                             weight_granularity=granularity)
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert fmap.grad is not None and (fmap.grad.abs().sum((0, 2)) > 0).all()  # every teacher slot
    assert not parts["weights"].requires_grad and not parts["kl"].requires_grad
    # d loss / d student logits is exactly the CE gradient: the KD term does not touch S(x).
    want = (torch.softmax(s.detach().double(), 1) - torch.nn.functional.one_hot(y, 10)) / len(y)
    # (p - onehot) / B, p = exp(log p): off by (p x kd_testing's log-softmax bound + eps32 (p + onehot)) / B
    p = torch.softmax(s.detach().double(), 1)
    tol = (p * torch.from_numpy(log_softmax_atol(np_of(s))) + EPS32 * (p + 1)) / len(y)
    err = (s.grad.double() - want).abs()
    assert (err <= tol).all(), (err / tol).max()


# ----------------------------------------------------------------------------- the student head

class CallCounter:
    def __init__(self, module: torch.nn.Module) -> None:
        self.batches: list[int] = []
        module.register_forward_hook(lambda m, args, out: self.batches.append(len(args[0])))


@pytest.mark.parametrize("mode", ["train", "mc"])
def test_mc_samples_share_one_backbone_pass(mode: str, batch) -> None:
    model = tiny_student(dropout=0.2, mc_samples=7, inference="mc")
    model.train(mode == "train")
    counter = CallCounter(model.backbone.body)  # the small CNN's whole convolutional trunk
    x = batch[0][:5]
    logits, fmap = model(x, with_map=True)
    assert counter.batches == [5]  # once, on the batch itself (not C copies)
    assert logits.shape == (5, 10) and fmap.shape == (5, 2, 10)
    # S is linear in S^T: averaging the feature map over C first gives the averaged logits.
    torch.testing.assert_close(logits, model.classifier(fmap.reshape(5, 20)))


def test_zero_dropout_is_the_deterministic_head_exactly(batch) -> None:
    x = batch[0][:8]
    p0 = tiny_student(dropout=0.0, mc_samples=4).train()
    f = p0.backbone.forward_features(x)
    want_map = f @ p0.feature_map.weight.T + p0.feature_map.bias
    want_logits = want_map @ p0.classifier.weight.T + p0.classifier.bias
    logits, fmap = p0.head(f)
    assert torch.equal(fmap, want_map.view(8, 2, 10))
    # The same products summed in another order: off by <= n eps32 sum |terms|, n = 20 inputs (+ bias).
    w2, b2 = p0.classifier.weight.detach(), p0.classifier.bias.detach()
    atol = 21 * torch.finfo(torch.float32).eps * (want_map.detach().abs() @ w2.abs().T + b2.abs())
    assert ((logits - want_logits).abs() <= atol).all()
    torch.manual_seed(0)
    a = p0(x, with_map=True)
    torch.manual_seed(1)  # no randomness is used at p = 0
    b = p0(x, with_map=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_eval_inference_modes(batch) -> None:
    x = batch[0][:8]
    det = tiny_student(dropout=0.3, mc_samples=4, inference="deterministic").eval()
    mc = tiny_student(dropout=0.3, mc_samples=4, inference="mc").eval()
    p0 = tiny_student(dropout=0.0, mc_samples=1).eval()
    mc.load_state_dict(det.state_dict())
    p0.load_state_dict(det.state_dict())
    assert not det.stochastic and mc.stochastic and not p0.stochastic
    torch.manual_seed(0)
    first = det(x, with_map=True)
    torch.manual_seed(1)
    second = det(x, with_map=True)
    reference = p0(x, with_map=True)
    for a, b, c in zip(first, second, reference):
        assert torch.equal(a, b) and torch.equal(a, c)
    draws = torch.stack([mc(x) for _ in range(200)])
    assert not torch.equal(draws[0], draws[1])
    # Inverted dropout: the MC model is unbiased around the deterministic one.
    torch.testing.assert_close(draws.mean(0), first[0], rtol=0, atol=0.1 * first[0].abs().max().item())
    # Dropout in train mode, whatever `inference` says.
    det.train()
    assert det.stochastic and not torch.equal(det.head(torch.ones(3, 16))[0], det.head(torch.ones(3, 16))[0])


def test_mc_average_has_one_over_c_variance() -> None:
    """Constant features and an identity feature-map layer: each coordinate of one sample is
    Bernoulli(1 - p) / (1 - p), variance p / (1 - p); the mean of C independent masks has 1/C of it."""
    p, rows = 0.5, 4000

    def head_samples(c: int) -> torch.Tensor:
        model = tiny_student(num_teachers=1, dropout=p, mc_samples=c).train()
        with torch.no_grad():
            model.feature_map.weight.copy_(torch.eye(10, 16))
            model.feature_map.bias.zero_()
        torch.manual_seed(123)
        with torch.no_grad():
            return model.head(torch.ones(rows, 16))[1].reshape(-1)

    single, averaged = head_samples(1), head_samples(8)
    assert set(single.unique().tolist()) == {0.0, 2.0}
    var_one, var_c = single.var().item(), averaged.var().item()
    assert var_one == pytest.approx(p / (1 - p), rel=0.05)
    assert var_c == pytest.approx(p / (1 - p) / 8, rel=0.1)
    assert var_one / var_c == pytest.approx(8, rel=0.15)
    assert single.mean().item() == pytest.approx(1.0, abs=0.03)
    assert averaged.mean().item() == pytest.approx(1.0, abs=0.01)


def test_student_argument_errors() -> None:
    good = {"num_teachers": 2, "dropout": 0.1, "mc_samples": 4}
    for bad in ({"num_teachers": 0}, {"mc_samples": 0}, {"dropout": -0.1}, {"dropout": 1.0}, {"dropout": 1.5}):
        with pytest.raises(ValueError):
            tiny_student(**{**good, **bad})
    with pytest.raises(ValueError, match="num_classes"):
        build_model("darht_student", num_classes=0, data_cfg=DATA_CFG, backbone="small_cnn",
                    backbone_kwargs={"width": 4, "hidden": 16}, num_teachers=2)
    with pytest.raises(ValueError, match="inference"):
        tiny_student(inference="average")
    for bad in ({"dropout": 1.0}, {"dropout": -0.5}, {"mc_samples": 0}, {"adv_prob": 1.5}):
        with pytest.raises(ConfigError) as err:
            method_config({"name": "darht", **bad})
        assert err.value.field == next(iter(bad))


# ----------------------------------------------------------------------------- phases and profiles

def test_phase_weights() -> None:
    joint = DarhtConfig()
    assert all(phase_weights(joint, e) == (1.0, 1.0) for e in (0, 49, 50, 117, 118, 300))
    staged = DarhtConfig(phases="staged", ce_only_until=50, kd_only_from=118)
    assert [phase_weights(staged, e) for e in (0, 49, 50, 117, 118, 349)] == [
        (1.0, 0.0), (1.0, 0.0), (1.0, 1.0), (1.0, 1.0), (0.0, 1.0), (0.0, 1.0)]
    short = DarhtConfig(phases="staged", ce_only_until=2, kd_only_from=4)
    assert [phase_weights(short, e) for e in range(6)] == [(1, 0), (1, 0), (1, 1), (1, 1), (0, 1), (0, 1)]


def test_profiles_follow_the_methods_md_table() -> None:
    paper = method_config({"name": "darht"})
    official = method_config({"name": "darht", "profile": "official"})
    mdef = paper.definition
    assert list(mdef.profiles) == ["paper", "official"] and paper.profile == "paper"
    assert mdef.any_teachers and mdef.teacher_roles == ()
    for count in (1, 2, 5):
        mdef.check_teachers(count)
    with pytest.raises(ConfigError, match="at least 1 teacher, got 0"):
        mdef.check_teachers(0)
    table = {  # option: (paper, official), docs/methods.md#darht-loss-and-profiles
        "kl_direction": ("student_teacher", "teacher_student"),
        "weighting": ("softmax", "exp"),
        "weight_granularity": ("sample", "batch"),
        "phases": ("joint", "staged"),
        "mixing": ("example", "batch"),
        # The attack: FAT (CE, uniform start, early stopping tau 0, noise 0.001, step 0.007 per
        # 0.031 of eps) vs the official CE-PGD (start x + 0.001 N(0, 1), step 0.003 at eps 0.031).
        "attack.loss": ("ce", "ce"),
        "attack.random_start": ("uniform", "normal"),
        "attack.tau": (0, None),
        "attack.omega": (0.001, 0.0),
        "attack.step_per_eps": (0.007 / 0.031, 0.25),
        "attack.step_size": (None, 0.003),
        "attack.eps": (None, 0.031),
        "attack.mode": ("eval", "eval"),
        "teacher_mode": ("eval", "train"),
        "mc_samples": (4, 1),
        "dropout": (0.1, 0.0),
    }

    def value(cfg: DarhtConfig, dotted: str) -> object:
        for part in dotted.split("."):
            cfg = getattr(cfg, part)
        return cfg

    for name, (want_paper, want_official) in table.items():
        assert (value(paper, name), value(official, name)) == (want_paper, want_official), name
    # Shared: adversarial with probability 0.5, 10 attack steps; official phases 0-49 / 50-117 / 118+.
    assert paper.adv_prob == official.adv_prob == 0.5
    assert paper.attack.steps == official.attack.steps == 10
    assert (official.ce_only_until, official.kd_only_from) == (50, 118)
    assert paper.kd_scale == official.kd_scale == 1.0
    # Explicit parameters win over the profile, and the profile is recorded.
    mixed = method_config({"name": "darht", "profile": "official", "dropout": 0.2, "mc_samples": 3})
    assert (mixed.dropout, mixed.mc_samples, mixed.profile, mixed.attack) == (0.2, 3, "official", official.attack)


def test_official_profile_student_and_teacher_modes(teacher_dirs) -> None:
    method = darht_method({"profile": "official"}, teacher_dirs)
    assert all(m.training for t in method.ctx.teachers.models for m in t.modules())
    cfg = method_config({"name": "darht", "profile": "official"})
    arch, kwargs = cfg.definition.student("small_cnn", {"width": 4}, cfg, 3)
    assert arch == "darht_student"
    assert kwargs == {"backbone": "small_cnn", "backbone_kwargs": {"width": 4}, "num_teachers": 3,
                      "dropout": 0.0, "mc_samples": 1, "inference": "deterministic"}
    paper = darht_method({}, teacher_dirs)
    assert not any(m.training for t in paper.ctx.teachers.models for m in t.modules())


@pytest.mark.parametrize("profile", ["paper", "official"])
def test_loss_terms_follow_the_formula_in_every_phase(profile: str, teacher_dirs, batch) -> None:
    """loss_terms on a real DarhtStudent (p = 0, so its output is reproducible) and real teachers,
    at an epoch of each phase, against the numpy formula; logged keys per teacher."""
    method = darht_method({"profile": profile, "dropout": 0.0, "kd_scale": 0.7, "phases": "staged",
                           "ce_only_until": 1, "kd_only_from": 3}, teacher_dirs)
    cfg = method.cfg
    x, y = batch[0][:16], batch[1][:16]
    x_in = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    step = DarhtStep(x_in, torch.tensor(0.25))
    student = method.ctx.student.train()
    for epoch, (ce_w, kd_w) in zip((0, 2, 5), ((1.0, 0.0), (1.0, 1.0), (0.0, 1.0))):
        with torch.no_grad():
            s, fmap = student(x_in, with_map=True)
            t = torch.stack([m(x_in) for m in method.ctx.teachers.models])
        args = (np_of(s), np_of(fmap), np_of(t), y.numpy())
        opts = {"kl_direction": cfg.kl_direction, "weighting": cfg.weighting,
                "weight_granularity": cfg.weight_granularity, "ce_weight": ce_w, "kd_weight": kd_w * 0.7}
        want, tol = darht_loss_np(*args, **opts), darht_atol(*args, **opts)
        loss, metrics = method.loss_terms(x, y, step, StepInfo(epoch=epoch, step=0, lr_scale=1.0))
        assert loss.item() == pytest.approx(ce_w * want["ce"] + kd_w * 0.7 * want["kd"], abs=tol["loss"])
        assert loss.requires_grad
        assert metrics["ce"].item() == pytest.approx(want["ce"], abs=tol["ce"])
        if kd_w == 0:  # the teachers did not run: no KD metrics
            assert set(metrics) == {"ce", "adv_fraction", "train_acc"}
            continue
        assert set(metrics) == {"ce", "kd", "adv_fraction", "train_acc", "w_0", "w_1", "kl_0", "kl_1"}
        assert metrics["kd"].item() == pytest.approx(want["kd"], abs=tol["kd"])  # logged unscaled
        for j in range(2):  # batch means of 16: the mean of the bounds, + 16 eps32 for the mean's own sum
            w_j, kl_j = want["weights"][:, j].mean(), want["kl"][:, j].mean()
            w_tol, kl_tol = tol["weights"][:, j].mean() + 16 * EPS32 * w_j, tol["kl"][:, j].mean() + 16 * EPS32 * kl_j
            assert metrics[f"w_{j}"].item() == pytest.approx(w_j, abs=w_tol)
            assert metrics[f"kl_{j}"].item() == pytest.approx(kl_j, abs=kl_tol)
        assert metrics["adv_fraction"].item() == 0.25
        assert all(not v.requires_grad for v in metrics.values())


@pytest.mark.parametrize("raw,epoch", [({"profile": "official"}, 0), ({"kd_scale": 0.0}, 3)],
                         ids=["ce-only-phase", "kd-scale-zero"])
def test_zero_kd_weight_skips_the_teachers_and_changes_nothing(raw: dict, epoch: int, teacher_dirs,
                                                                batch, monkeypatch) -> None:
    """With KD weight 0 no teacher runs, and the loss and every weight gradient equal those of the
    full DARHT loss with the teachers' logits (where the KD term is multiplied by 0)."""
    method = darht_method({**raw, "dropout": 0.0, "mc_samples": 1}, teacher_dirs)
    x, y = batch[0][:16], batch[1][:16]
    student, info = method.ctx.student.train(), StepInfo(epoch=epoch, step=0, lr_scale=1.0)
    assert phase_weights(method.cfg, epoch)[1] * method.cfg.kd_scale == 0
    with torch.no_grad():
        teacher_JBK = torch.stack([m(x) for m in method.ctx.teachers.models])
    calls = []
    for m in method.ctx.teachers.models:
        m.register_forward_hook(lambda *a: calls.append(1))
    loss, _ = method.loss_terms(x, y, DarhtStep(x, torch.tensor(1.0)), info)
    loss.backward()
    grads = [p.grad.clone() for p in student.parameters()]
    assert not calls
    student.zero_grad()
    s, fmap = student(x, with_map=True)
    c = method.cfg
    want, _ = darht_loss(s, fmap, teacher_JBK, y, kl_direction=c.kl_direction, weighting=c.weighting,
                         weight_granularity=c.weight_granularity, ce_weight=1.0, kd_weight=0.0)
    want.backward()
    assert loss.item() == want.item()
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, student.parameters()))


# ----------------------------------------------------------------------------- mixing

def test_adv_prob_zero_attacks_nothing(teacher_dirs, batch, monkeypatch) -> None:
    method = darht_method({"adv_prob": 0.0}, teacher_dirs)
    monkeypatch.setattr(darht_module, "craft", lambda *a, **k: pytest.fail("attacked with adv_prob 0"))
    x, y = batch
    for step in range(5):
        x_in, adv_fraction = method.inner_max(x, y, StepInfo(0, step, 1.0))
        assert torch.equal(x_in, x) and adv_fraction.item() == 0.0


@pytest.mark.parametrize("mixing", ["example", "batch"])
def test_adv_prob_one_attacks_everything(mixing: str, teacher_dirs, batch) -> None:
    method = darht_method({"adv_prob": 1.0, "mixing": mixing, "attack": {"preset": "ce_pgd", "steps": 2}},
                          teacher_dirs)
    x, y = batch
    x_in, adv_fraction = method.inner_max(x, y, StepInfo(0, 0, 1.0))
    assert adv_fraction.item() == 1.0
    assert ((x_in - x).flatten(1).abs().amax(1) > 0).all()
    assert (x_in - x).abs().max() <= 0.2 + 1e-6 and 0 <= x_in.min() and x_in.max() <= 1


def attacked_rows(x: torch.Tensor, x_in: torch.Tensor) -> torch.Tensor:
    return (x_in != x).flatten(1).any(1)


def test_per_example_mixing_attacks_about_half(teacher_dirs, monkeypatch) -> None:
    from trainers.data import load_dataset

    train = load_dataset("digits").train
    x, y = train.x[:64], train.y[:64]
    method = darht_method({"mixing": "example", "adv_prob": 0.5}, teacher_dirs)
    chosen = []
    monkeypatch.setattr(darht_module, "craft",
                        lambda attack, model, xs, ys, **k: chosen.append(len(xs)) or (xs + 0.01).clamp(0, 1))
    fractions = []
    torch.manual_seed(0)
    for step in range(20):
        x_in, adv_fraction = method.inner_max(x, y, StepInfo(0, step, 1.0))
        fractions.append(adv_fraction.item())
        assert chosen[-1] == attacked_rows(x, x_in).sum().item() == round(64 * fractions[-1])
    # Binomial(64, 0.5): mean 32, sd 4; each draw within 5 sd, the 20-draw mean within ~5 sd.
    assert all(12 / 64 <= f <= 52 / 64 for f in fractions)
    assert np.mean(fractions) == pytest.approx(0.5, abs=0.06)
    assert len(set(fractions)) > 3  # per example: the count varies, never all-or-nothing by design


def test_per_batch_mixing_is_all_or_nothing(teacher_dirs, batch, monkeypatch) -> None:
    method = darht_method({"mixing": "batch", "adv_prob": 0.5}, teacher_dirs)
    monkeypatch.setattr(darht_module, "craft", lambda attack, model, xs, ys, **k: (xs + 0.01).clamp(0, 1))
    x, y = batch
    torch.manual_seed(0)
    fractions = []
    for step in range(30):
        x_in, adv_fraction = method.inner_max(x, y, StepInfo(0, step, 1.0))
        fractions.append(adv_fraction.item())
        assert attacked_rows(x, x_in).sum().item() == 32 * fractions[-1]
    assert set(fractions) == {0.0, 1.0}
    assert 5 <= sum(fractions) <= 25


def attack_kind(raw: dict) -> str:
    """Which of the three training attacks of docs/methods.md#darht-loss-and-profiles `raw` asks
    for: an explicit preset, else the profile's (official: ce_pgd; paper: fat)."""
    attack = raw.get("attack")
    preset = attack if isinstance(attack, str) else (attack or {}).get("preset")
    return preset or ("ce_pgd" if raw.get("profile") == "official" else "fat")


def reference_attack(raw: dict, student: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training attack docs/methods.md#darht-loss-and-profiles names, called from the attack
    library on these examples alone."""
    kind, attack = attack_kind(raw), raw.get("attack", {})
    attack = attack if isinstance(attack, dict) else {}
    official = raw.get("profile") == "official"
    eps = attack.get("eps", 0.031 if official else 0.2)
    # Default steps: CE-PGD eps / 4; FAT and TRADES their codes' 0.007 at eps 0.031, scaled.
    default_step = eps / 4 if kind == "ce_pgd" else eps * 0.007 / 0.031
    step = attack.get("step_size", 0.003 if official else default_step)
    steps = attack.get("steps", 10)
    with eval_mode(student):
        if kind == "ce_pgd":  # the official code: start x + 0.001 N(0, 1), final iterate
            return pgd(student, x, y, eps=eps, step_size=step, steps=steps, random_start="normal",
                       start_scale=0.001, keep_best=False)
        if kind == "trades":
            with torch.no_grad():
                target = torch.softmax(student(x), dim=1)
            return kl_pgd(student, x, target_probs=target, eps=eps, step_size=step, steps=steps)
        return early_stopped_pgd(student, x, y, eps=eps, tau=attack.get("tau", 0), step_size=step,
                                 steps=steps, omega=attack.get("omega", 0.001), loss="ce", random_start="uniform")


def with_attack_steps(raw: dict, steps: int) -> dict:
    """`raw` with its attack's step count set (on top of a preset name if it gives one)."""
    attack = raw.get("attack", {})
    attack = {"preset": attack} if isinstance(attack, str) else attack
    return {**raw, "attack": {**attack, "steps": steps}}


@pytest.mark.parametrize("raw", [{}, {"attack": "trades"}, {"attack": "ce_pgd"}, {"attack": {"tau": 2}},
                                 {"profile": "official"}, {"profile": "official", "mixing": "example"}],
                         ids=["paper-fat", "trades", "ce_pgd", "fat-tau2", "official", "official-example"])
def test_attacked_examples_equal_the_chosen_attack_alone(raw: dict, teacher_dirs, batch) -> None:
    raw = with_attack_steps(raw, 3)
    method = darht_method(raw, teacher_dirs)
    student = method.ctx.student.train()
    x, y = batch
    bn_before = [b.clone() for n, b in student.named_buffers() if "running" in n]
    for seed in range(4):
        torch.manual_seed(seed)
        draws = torch.rand(len(x) if method.cfg.mixing == "example" else 1)
        chosen = (draws < method.cfg.adv_prob).expand(len(x))
        want = reference_attack(raw, student, x[chosen], y[chosen]) if chosen.any() else None
        torch.manual_seed(seed)
        x_in, adv_fraction = method.inner_max(x, y, StepInfo(0, seed, 1.0))
        assert torch.equal(x_in[~chosen], x[~chosen])
        if want is not None:
            assert torch.equal(x_in[chosen], want)
        assert adv_fraction.item() == chosen.float().mean().item()
        eps = method.cfg.attack.eps or 0.2
        assert (x_in - x).abs().max() <= eps + 1e-6 and 0 <= x_in.min() and x_in.max() <= 1
    assert student.training and all(p.grad is None for p in student.parameters())
    assert all(torch.equal(a, b) for a, b in zip(bn_before, [b for n, b in student.named_buffers() if "running" in n]))


def test_registered() -> None:
    assert METHODS.get("darht").config is DarhtConfig
