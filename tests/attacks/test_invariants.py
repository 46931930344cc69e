"""Properties every attack must have, whatever the model: the threat model (eps-ball and [0, 1]),
no side effects on the model (weights' .grad, train/eval modes, the global RNG, the input),
eval-mode enforcement, determinism under a seed, parameter validation, and the keep-best rule."""
from __future__ import annotations

import inspect
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks import (AttackModeError, AttackSpec, autoattack, cw_inf, early_stopped_pgd, fgsm,
                     kl_pgd, pgd, run_attack)
from attacks.losses import cross_entropy
from attacks.registry import ATTACKS as REGISTRY

EPS = 0.1
# float32 positions: x +- eps, the clip and x_adv - x each round once at |x| <= 1 + eps (<= 2^-24 x 1.1);
# 1e-6 ~ 16 such roundings, far below any step or eps.
TOL = 1e-6
EPS32 = torch.finfo(torch.float32).eps  # 2^-23



def tiny_cnn(seed: int = 0) -> nn.Module:
    """BN and dropout, so train mode would visibly change the attack."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(6 * 16, 10))
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_cnn()


@pytest.fixture(scope="module")
def data(model) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 1, 8, 8, generator=g)
    x[:, :, 0, :] = 0.0  # pixels exactly on the box boundary
    x[:, :, -1, :] = 1.0
    x[:, :, :, 0] = torch.where(torch.arange(8) % 2 == 0, 0.0, 1.0)
    with torch.no_grad():
        y = model(x).argmax(1)  # clean-correct, so the AutoAttack components attack every point...
    y[:2] = (y[:2] + 1) % 10  # ...except two clean errors
    return x, y


Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


def native(fn, **kw) -> Attack:
    def run(model, x, y, seed, **extra):
        return fn(model, x, y, eps=EPS, generator=torch.Generator().manual_seed(seed), **kw, **extra)
    return run


def kl(model, x, y, seed, **extra):
    with torch.no_grad():
        target = torch.softmax(model(x), 1) if not model.training else torch.full((len(x), 10), 0.1)
    return kl_pgd(model, x, y, target_probs=target, eps=EPS,
                  generator=torch.Generator().manual_seed(seed), **extra)


def spec(name: str, **params) -> Attack:
    def run(model, x, y, seed, **extra):
        assert not extra
        return run_attack(AttackSpec(name, {"eps": EPS, **params}), model, x, y, seed=seed)
    return run


FAST = {"steps": 5, "n_iter": 5, "n_queries": 40}
"""Shorter runs for the attacks that take these parameters (the contracts hold at any length)."""
DETERMINISTIC = {"fgsm", "fab_t"}  # registry attacks with no random start by default (FAB's only restart)


def fast(name: str) -> dict:
    accepted = inspect.signature(REGISTRY[name][0]).parameters
    return {k: v for k, v in FAST.items() if k in accepted}


# name -> (attack, uses randomness, is a registry attack): every attack of the registry (so adding
# one puts it under these contracts), and variants of the native functions' options.
ATTACKS: dict[str, tuple[Attack, bool, bool]] = {
    "fgsm": (native(fgsm), False, False),
    "fgsm_uniform": (native(fgsm, random_start="uniform"), True, False),
    "pgd_uniform": (native(pgd, random_start="uniform"), True, False),
    "pgd_normal": (native(pgd, random_start="normal", start_scale=0.05), True, False),
    "pgd_none": (native(pgd, random_start="none"), False, False),
    "pgd_restarts2": (native(pgd, random_start="uniform", restarts=2, steps=5), True, False),
    "pgd_cw_no_best": (native(pgd, loss="cw", keep_best=False, random_start="uniform"), True, False),
    "cw_inf": (native(cw_inf, steps=10), True, False),
    "kl_pgd": (kl, True, False),
    "fat_ce": (native(early_stopped_pgd, tau=1), True, False),
    "fat_kl": (native(early_stopped_pgd, tau=1, loss="kl"), True, False),
    "fat_ce_tensor_tau": (native(early_stopped_pgd, tau=torch.arange(12) % 3, omega=0.0,
                                 random_start="none"), False, False),
    **{f"spec_{n}": (spec(n, **fast(n)), n not in DETERMINISTIC, True) for n in REGISTRY},
    "spec_autoattack_rand": (spec("autoattack", version="rand", **fast("autoattack")), True, True),
}
NAMES = list(ATTACKS)
RANDOM = [n for n in NAMES if ATTACKS[n][1]]
NATIVE = [n for n in NAMES if not ATTACKS[n][2]]
"""The attack functions themselves (they take extra keyword arguments such as require_eval)."""
NOT_LIBRARY = [n for n in NAMES if not (ATTACKS[n][2] and REGISTRY[n.removeprefix("spec_").removesuffix("_rand")][2])]
"""Everything but the official AutoAttack components (which batch and cast inside)."""


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("name", NAMES)
def test_threat_model_and_no_side_effects(name, model, data) -> None:
    attack = ATTACKS[name][0]
    x, y = data
    x_before, y_before = x.clone(), y.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.grad = None
    before_modes = modes(model)
    rng = torch.get_rng_state()

    x_adv = attack(model, x, y, 0)

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert torch.isfinite(x_adv).all()
    assert (x_adv - x).abs().max() <= EPS + TOL
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad
    # No side effects: weights' gradients, modes, weights and BN statistics, the global RNG, inputs.
    assert all(p.grad is None for p in model.parameters()), "the attack touched the weights' .grad"
    assert all(p.requires_grad for p in model.parameters())
    assert modes(model) == before_modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(torch.get_rng_state(), rng), "the attack consumed the global RNG"
    assert torch.equal(x, x_before) and torch.equal(y, y_before)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result(name, model, data) -> None:
    attack = ATTACKS[name][0]
    x, y = data
    assert torch.equal(attack(model, x, y, 3), attack(model, x, y, 3))


@pytest.mark.parametrize("name", RANDOM)
def test_different_seed_different_result(name, model, data) -> None:
    attack = ATTACKS[name][0]
    x, y = data
    assert not torch.equal(attack(model, x, y, 3), attack(model, x, y, 4))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("where", ["whole", "submodule"])
def test_train_mode_is_refused(name, where, data) -> None:
    attack = ATTACKS[name][0]
    x, y = data
    m = tiny_cnn()
    if where == "whole":
        m.train()
    else:
        m[5].train()  # only the dropout
    before = modes(m)
    with pytest.raises(AttackModeError):
        attack(m, x, y, 0)
    assert modes(m) == before


@pytest.mark.parametrize("name", NATIVE)
def test_require_eval_false_allows_train_mode(name, data) -> None:
    attack = ATTACKS[name][0]
    x, y = data
    m = tiny_cnn().train()
    x_adv = attack(m, x, y, 0, require_eval=False)
    assert (x_adv - x).abs().max() <= EPS + TOL
    assert all(mod.training for mod in m.modules())
    assert all(p.grad is None for p in m.parameters())


def test_autoattack_require_eval_false(data) -> None:
    x, y = data
    m = tiny_cnn()
    m[5].train()  # dropout only: the model is randomized, as for the "rand" protocol
    x_adv = autoattack(m, x, y, eps=EPS, seed=0, attacks=["apgd-ce"], n_iter=3, require_eval=False)
    assert (x_adv - x).abs().max() <= EPS + TOL and 0 <= x_adv.min() and x_adv.max() <= 1
    assert m[5].training and not m[1].training


@pytest.mark.parametrize("name", NOT_LIBRARY)
def test_input_requiring_grad_gives_a_constant_result(name, model, data) -> None:
    # x may come out of a differentiable pipeline; the attack's output must not carry a graph
    # back to it, and must equal the result on the detached input.
    attack = ATTACKS[name][0]
    x, y = data
    leaf = x.clone().requires_grad_(True)
    x_adv = attack(model, leaf * 1.0, y, 0)
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert torch.equal(x_adv, attack(model, x, y, 0))
    assert leaf.grad is None


def test_attacks_are_per_example(model, data) -> None:
    # Deterministic attacks: one example attacked alone = the same example attacked in a batch.
    x, y = data
    for attack in (native(pgd, random_start="none"), native(cw_inf, random_start="none", steps=10),
                   native(fgsm)):
        batch = attack(model, x, y, 0)
        for i in (0, 5, 11):
            torch.testing.assert_close(attack(model, x[i:i + 1], y[i:i + 1], 0), batch[i:i + 1],
                                       atol=TOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# Parameter validation and AttackSpec
# ---------------------------------------------------------------------------------------------

def _eps_callers():
    def aa(model, x, y, eps):
        return autoattack(model, x, y, eps=eps, seed=0, n_iter=1)
    return {
        "fgsm": lambda m, x, y, e: fgsm(m, x, y, eps=e),
        "pgd": lambda m, x, y, e: pgd(m, x, y, eps=e),
        "cw_inf": lambda m, x, y, e: cw_inf(m, x, y, eps=e),
        "kl_pgd": lambda m, x, y, e: kl_pgd(m, x, target_probs=torch.full((len(x), 10), 0.1), eps=e),
        "early_stopped_pgd": lambda m, x, y, e: early_stopped_pgd(m, x, y, eps=e),
        "autoattack": aa,
    }


@pytest.mark.parametrize("fn", list(_eps_callers()))
@pytest.mark.parametrize("eps", [-0.01, 1.5, 8.0])
def test_eps_out_of_range_raises(fn, eps, model, data) -> None:
    x, y = data
    with pytest.raises(ValueError, match="eps"):
        _eps_callers()[fn](model, x, y, eps)


def test_other_parameter_validation(model, data) -> None:
    x, y = data
    with pytest.raises(ValueError):
        pgd(model, x, y, eps=EPS, steps=-1)
    with pytest.raises(ValueError):
        pgd(model, x, y, eps=EPS, restarts=0)
    with pytest.raises(ValueError, match="random_start"):
        pgd(model, x, y, eps=EPS, random_start="gaussian")
    with pytest.raises(ValueError, match="apgd-xyz"):
        autoattack(model, x, y, eps=EPS, seed=0, attacks=["apgd-xyz"])


@pytest.mark.parametrize("name", ["pgd", "fgsm", "autoattack", "square"])
@pytest.mark.parametrize("eps", [-0.1, 1.01, 8])
def test_spec_eps_out_of_range(name, eps) -> None:
    with pytest.raises(ValueError, match="eps"):
        AttackSpec(name, {"eps": eps})


def test_spec_unknown_name_is_named() -> None:
    with pytest.raises(ValueError, match="'pgdd'") as err:
        AttackSpec("pgdd", {"eps": 0.1})
    assert "'pgd'" in str(err.value)  # the suggestion
    with pytest.raises(ValueError, match="'not_an_attack'"):
        AttackSpec("not_an_attack")


@pytest.mark.parametrize("name,param", [("pgd", "stepz"), ("fgsm", "steps"), ("cw_inf", "loss"),
                                        ("autoattack", "attacks"), ("pgd", "generator"),
                                        ("apgd_ce", "seed"), ("square", "kappa")])
def test_spec_unknown_or_reserved_param_is_named(name, param) -> None:
    with pytest.raises(ValueError, match=f"'{param}'"):
        AttackSpec(name, {"eps": 0.1, param: 1})


def test_spec_key_is_stable_and_ignores_label() -> None:
    a = AttackSpec("pgd", {"eps": 0.1, "steps": 10, "step_size": 0.025}, label="PGD-10")
    b = AttackSpec("pgd", {"step_size": 0.025, "steps": 10, "eps": 0.1})
    assert a.key == b.key
    assert a.key == '{"name": "pgd", "params": {"eps": 0.1, "step_size": 0.025, "steps": 10}}'
    assert AttackSpec("pgd", {"eps": 0.1, "steps": 20}).key != a.key
    assert AttackSpec("fgsm", {"eps": 0.1}).key != AttackSpec("pgd", {"eps": 0.1}).key
    assert a.display == "PGD-10" and b.display == "pgd"
    assert a.eps == 0.1


def test_spec_with_defaults_keeps_explicit_values() -> None:
    s = AttackSpec("pgd", {"steps": 20}, label="x").with_defaults(eps=0.2, steps=10)
    assert s.params == {"eps": 0.2, "steps": 20} and s.label == "x"


def test_run_attack_needs_eps(model, data) -> None:
    x, y = data
    with pytest.raises(ValueError, match="eps"):
        run_attack(AttackSpec("pgd"), model, x, y, seed=0)


def test_spec_from_library() -> None:
    assert not AttackSpec("pgd").from_library and not AttackSpec("cw_inf").from_library
    assert AttackSpec("apgd_t").from_library and AttackSpec("autoattack").from_library


# ---------------------------------------------------------------------------------------------
# keep_best
# ---------------------------------------------------------------------------------------------
# A model whose logits depend on x only through u = (sum(x) - 2) / (4 * delta), for x [B, 1, 2, 2]
# starting at 0.5 everywhere: every pixel's gradient has the same sign, so each signed step of
# delta moves u by exactly +1 or -1 and the PGD path visits integer u only.

DELTA = 0.05


class PathModel(nn.Module):
    def __init__(self, logits_of_u: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.logits_of_u = logits_of_u
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_of_u((x.flatten(1).sum(1) - 2.0) / (4 * DELTA))


def peaked(u: torch.Tensor) -> torch.Tensor:
    # z = [0, -1 - |u - 1.25|], y = 0: always correct, CE peaks at u = 1.25. From u = 0 the path is
    # 0, 1, 2, 1, 2 (the gradient flips sign past 1.25): the last iterate (u = 2) is worse than u = 1.
    return torch.stack([torch.zeros_like(u), -1 - (u - 1.25).abs()], 1)


def wrong_then_correct(u: torch.Tensor) -> torch.Tensor:
    # z = [0, h1, h2], y = 0, with h1 = -0.5 + 0.8 u - 2.4 relu(u - 1.5), h2 = -2 + 0.95 u.
    # u = 0: z = [0, -0.5, -2]     correct, CE 0.555
    # u = 1: z = [0, 0.3, -1.05]   WRONG,   CE 0.993
    # u = 2: z = [0, -0.1, -0.1]   correct, CE 1.033 (higher than at u = 1)
    # dCE/du > 0 at u = 0 and u = 1 (h1' = 0.8, h2' = 0.95 there), so the path is 0, 1, 2.
    h1 = -0.5 + 0.8 * u - 2.4 * F.relu(u - 1.5)
    h2 = -2 + 0.95 * u
    return torch.stack([torch.zeros_like(u), h1, h2], 1)


def at(k: int) -> torch.Tensor:
    return torch.full((1, 1, 2, 2), 0.5 + k * DELTA)


def test_keep_best_returns_the_highest_loss_iterate() -> None:
    model = PathModel(peaked)
    x, y = at(0), torch.tensor([0])
    loss = lambda p: cross_entropy(model(p), y).item()  # noqa: E731
    assert loss(at(1)) > loss(at(2)) > loss(at(0))
    kw = dict(eps=0.3, step_size=DELTA, steps=4, random_start="none")
    torch.testing.assert_close(pgd(model, x, y, keep_best=False, **kw), at(2), atol=TOL, rtol=0)
    torch.testing.assert_close(pgd(model, x, y, keep_best=True, **kw), at(1), atol=TOL, rtol=0)
    torch.testing.assert_close(pgd(model, x, y, restarts=2, keep_best=False, **kw), at(1),
                               atol=TOL, rtol=0)


def test_keep_best_prefers_misclassified_over_higher_loss() -> None:
    model = PathModel(wrong_then_correct)
    x, y = at(0), torch.tensor([0])
    with torch.no_grad():
        assert model(at(0)).argmax(1).item() == 0
        assert model(at(1)).argmax(1).item() != 0
        assert model(at(2)).argmax(1).item() == 0
        assert cross_entropy(model(at(2)), y) > cross_entropy(model(at(1)), y)
    kw = dict(eps=0.3, step_size=DELTA, steps=2, random_start="none")
    torch.testing.assert_close(pgd(model, x, y, keep_best=False, **kw), at(2), atol=TOL, rtol=0)
    torch.testing.assert_close(pgd(model, x, y, keep_best=True, **kw), at(1), atol=TOL, rtol=0)


def test_keep_best_against_every_iterate(model) -> None:
    # Same seed -> same start and path, so pgd(steps=k, keep_best=False) is the k-th iterate.
    # The keep-best result must be misclassified if any iterate is, else have the top loss.
    g = torch.Generator().manual_seed(5)
    x = torch.rand(48, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps, steps = 0.02, 8

    def run(k, keep_best):
        return pgd(model, x, y, eps=eps, steps=k, step_size=eps / 4, random_start="uniform",
                   keep_best=keep_best, generator=torch.Generator().manual_seed(9))

    iterates = [run(k, False) for k in range(steps + 1)]
    best = run(steps, True)
    with torch.no_grad():
        logits = [model(it) for it in iterates]
        wrong = torch.stack([z.argmax(1) != y for z in logits])
        loss = torch.stack([cross_entropy(z, y) for z in logits])
        best_logits = model(best)
    best_wrong = best_logits.argmax(1) != y
    ever_wrong = wrong.any(0)
    assert 0 < int(ever_wrong.sum()) < len(x), "the check needs both kinds of points"
    assert torch.equal(best_wrong, ever_wrong)
    never = ~ever_wrong
    best_loss = cross_entropy(best_logits, y)
    # Both forwards see the same rows in batches of one shape (the same kernels, the same order); what
    # may differ is the CE's own rounding: K eps32 (CE + max|z| + 1) (max shift, K-term lse, subtraction).
    z_max = torch.stack([z.abs().amax(1) for z in logits]).amax(0)
    tol = 10 * EPS32 * (loss.amax(0) + z_max + 1)
    assert (best_loss[never] >= loss[:, never].amax(0) - tol[never]).all()
    assert (best_loss[never] >= loss[-1, never] - tol[never]).all()


# ---------------------------------------------------------------------------------------------
# AutoAttack wiring: the official standard parameters (docs/evaluation.md#autoattack), read off the adversary
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def captured(monkeypatch):
    """Replace the library's evaluation loop by one that records the configured adversary."""
    import pyautoattack

    seen = []

    def fake(self, x, y, *, batch_size=250, state_path=None):
        seen.append((self, batch_size))
        return x.clone(), y.clone()

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", fake)
    return seen


def test_autoattack_standard_parameters(captured, model, data) -> None:
    x, y = data
    autoattack(model, x, y, eps=0.03, seed=7)
    (adv, batch_size), = captured
    assert adv.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert adv.epsilon == 0.03 and adv.norm == "Linf" and adv.seed == 7
    assert str(adv.device) == "cpu" and batch_size == 250
    assert adv.apgd.n_iter == 100 and adv.apgd.n_restarts == 1 and adv.apgd.eot_iter == 1
    assert adv.apgd_targeted.n_iter == 100 and adv.apgd_targeted.n_target_classes == 9
    assert adv.fab.n_iter == 100 and adv.fab.n_target_classes == 9
    assert adv.square.n_queries == 5000 and adv.square.p_init == 0.8
    assert adv.verbose is False


def test_autoattack_overrides_and_components(captured, model, data) -> None:
    x, y = data
    autoattack(model, x, y, eps=0.1, seed=1, attacks=["square"], n_iter=7,
               n_queries=11, batch_size=5)
    (adv, batch_size), = captured
    assert adv.attacks_to_run == ["square"] and batch_size == 5
    assert adv.apgd.n_iter == adv.apgd_targeted.n_iter == adv.fab.n_iter == 7
    assert adv.square.n_queries == 11


def test_autoattack_rand_version(captured, model, data) -> None:
    x, y = data
    autoattack(model, x, y, eps=0.1, seed=1, version="rand")
    (adv, _), = captured
    assert adv.attacks_to_run == ["apgd-ce", "apgd-dlr"] and adv.apgd.eot_iter == 20


def test_autoattack_targets_capped_by_classes(captured) -> None:
    # 4 classes: at most 3 target classes.
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    x = torch.rand(3, 1, 8, 8)
    autoattack(m, x, torch.zeros(3, dtype=torch.long), eps=0.1, seed=0)
    (adv, _), = captured
    assert adv.apgd_targeted.n_target_classes == 3 and adv.fab.n_target_classes == 3
