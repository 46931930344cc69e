"""The black-box check counts only the points Square breaks and no gradient attack of the suite
does that also survive stronger white-box attacks (APGD-T, then a long multi-restart PGD on the CW
margin): silent on honest digits models under the project's suites, a warning on masked ones."""
from __future__ import annotations

import pytest
import torch

from attacks import AttackSpec
from attacks.autoattack import library_warnings
from attacks.sanity import SanityParams, confirm_correct, subsample
from attacks.sanity_suite import SQUARE_SHARE, attack_kind, black_box_flag, library_flag, square_only
from attacks.scoring import robust_correct
from orchestrator.evaluate import load_suite
from tests.attacks.sanity_models import DIGITS_EPS, Quantized

BATCH = 128
KINDS = {"PGD": "gradient", "Square": "black-box"}
ATTACKS = ["APGD-T", "PGD-CW-200x10"]


def confirmation(model, x, y, only, *, eps: float, params: SanityParams = SanityParams()):
    """What the confirmation task stores, for the Square-only points `only` (a sample of at most
    params.confirm_points of them)."""
    pick = only[subsample(len(only), params.confirm_points, 0)]
    with library_warnings():
        survived, broken = confirm_correct(model, x[pick], y[pick], eps=eps, params=params, seed=0, batch_size=BATCH)
    return {"reattacked": len(pick), "survived": int(survived.sum()), "attacks": list(broken), "broken": broken}


def test_only_confirmed_points_count_and_both_counts_are_shown():
    n = 397
    gradient = torch.ones(n, dtype=torch.bool)
    square = gradient.clone()
    square[[5, 9]] = False  # two points only Square breaks: 0.5 %, above 0.2 %
    masks = {"PGD": gradient, "Square": square}
    broken = black_box_flag(masks, KINDS, {"reattacked": 2, "survived": 0, "attacks": ATTACKS})
    assert broken.status == "ok", broken.reason
    assert broken.reason.startswith("Square breaks 2 points (0.5%) that no gradient attack of the suite breaks; "
                                    "0 of the 2 survive APGD-T and PGD-CW-200x10")
    assert broken.figures | {"square_only": 2, "reattacked": 2, "survived": 0, "confirmed": 0} == broken.figures
    one = black_box_flag(masks, KINDS, {"reattacked": 2, "survived": 1, "attacks": ATTACKS})
    assert one.status == "warn" and "1 of the 2 survive" in one.reason and "gradient masking" in one.reason
    unconfirmed = black_box_flag(masks, KINDS)
    assert unconfirmed.status == "warn" and "not yet re-attacked" in unconfirmed.reason
    square[:300] = False  # 300 Square-only points; a sample of 100 re-attacked, 50 survive: ~150 in all
    sampled = black_box_flag(masks, KINDS, {"reattacked": 100, "survived": 50, "attacks": ATTACKS})
    assert sampled.status == "warn" and sampled.figures["confirmed"] == 150
    assert "50 of the 100 survive" in sampled.reason and "a sample of 100: ~150 points (37.8%) of all" in sampled.reason
    none_survive = black_box_flag(masks, KINDS, {"reattacked": 100, "survived": 0, "attacks": ATTACKS})
    assert none_survive.status == "ok" and none_survive.figures["confirmed"] == 0


@pytest.mark.parametrize("suite", ["paper", "demo", "autoattack"])
@pytest.mark.parametrize("honest", ["cnn", "at_cnn"])
def test_silent_on_honest_models_under_the_suites(suite, honest, points, request):
    """The suites of orchestrator/suites.yaml at the digits eps, on the test points. The standard
    AutoAttack ends with Square (its kind is 'mixed': the check is skipped) and applies the 0.2 %
    rule itself, in the messages the autoattack_checks flag reports."""
    model, (x, y) = request.getfixturevalue(honest), points
    specs = [s.with_defaults(eps=DIGITS_EPS) for s in load_suite(suite)]
    with library_warnings() as messages:
        masks = {s.display: robust_correct(model, x, y, s, seed=0, batch_size=BATCH) for s in specs}
    kinds = {s.display: attack_kind({"name": s.name, **s.params}) for s in specs}
    only = square_only(masks, kinds)
    confirmed = confirmation(model, x, y, only, eps=DIGITS_EPS) if only is not None and len(only) else None
    flag = black_box_flag(masks, kinds, confirmed)
    assert flag.status == ("skip" if suite == "autoattack" else "ok"), flag.reason
    assert (suite == "autoattack") == ("AutoAttack cascade" in flag.reason)
    assert library_flag(messages, ran=True).status == "ok", messages
    if confirmed:
        assert confirmed["survived"] == 0 and flag.figures["square_only"] == len(only)


def test_warns_on_a_masked_model_after_the_confirmation(cnn, points):
    """Quantized inputs: zero gradients, so Square breaks many points no gradient attack breaks;
    the stronger white-box attacks break few of them (APGD-T only from its random start)."""
    model, (x, y) = Quantized(cnn).eval(), points
    specs = {"PGD": AttackSpec("pgd", {"eps": DIGITS_EPS}), "Square": AttackSpec("square", {"eps": DIGITS_EPS,
                                                                                            "n_queries": 100})}
    with library_warnings():
        masks = {a: robust_correct(model, x, y, s, seed=0, batch_size=BATCH) for a, s in specs.items()}
    only = square_only(masks, KINDS)
    params = SanityParams(confirm_points=20, confirm_steps=20, confirm_restarts=1)
    confirmed = confirmation(model, x, y, only, eps=DIGITS_EPS, params=params)
    assert confirmed["reattacked"] == 20 and confirmed["survived"] > 10 and confirmed["broken"]["PGD-CW-20x1"] == 0
    flag = black_box_flag(masks, KINDS, confirmed)
    assert flag.status == "warn" and "gradient masking" in flag.reason and len(only) > 0.2 * len(y)
    assert flag.figures["confirmed"] == round(confirmed["survived"] * len(only) / 20) > SQUARE_SHARE * len(y)
