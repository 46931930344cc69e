"""Sanity checks that read what the suite already stored: per-point masks of each attack, the
library's own check messages, and the facts of the evaluation protocol. Nothing of the suite is
re-run; the black-box check counts only the Square-only points (`square_only`) that survive a
stronger white-box attack (`attacks.sanity.confirm_correct`, run on those points alone).

Masks are per point over the evaluated split (True: correct under the attack, and clean).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from attacks.metrics import worst_case
from attacks.sanity import POINT_SHARE
from attacks.sanity_flags import Flag, share

SQUARE_SHARE = 0.002
"""AutoAttack's own threshold (check_square_sr): Square may beat the gradient attacks on at most
0.2 % of points. AutoAttack applies it after its whole cascade (APGD-CE, APGD-T, FAB-T); after a
weaker suite, one point of a few hundred crosses it on honest models, hence the confirmation."""
GRADIENT = {"fgsm", "pgd", "cw_inf", "apgd_ce", "apgd_dlr", "apgd_t", "fab_t"}


def attack_kind(params: Mapping[str, Any]) -> str:
    """'gradient', 'black-box' or 'mixed' (the standard AutoAttack cascade ends with Square), from
    a stored row's attack_params ({"name": ..., **params})."""
    name = params.get("name")
    if name == "square":
        return "black-box"
    if name in GRADIENT or (name == "autoattack" and params.get("version") == "rand"):
        return "gradient"
    return "mixed"


def square_only(masks: Mapping[str, torch.Tensor], kinds: Mapping[str, str]) -> torch.Tensor | None:
    """Indices of the points Square breaks and no gradient attack does; None when the suite has no
    Square or no gradient attack."""
    square = [m for a, m in masks.items() if kinds[a] == "black-box"]
    gradient = [m for a, m in masks.items() if kinds[a] == "gradient"]
    if not square or not gradient:
        return None
    return torch.nonzero(worst_case(gradient) & ~worst_case(square)).flatten()


def black_box_flag(masks: Mapping[str, torch.Tensor], kinds: Mapping[str, str],
                   confirmation: Mapping[str, Any] | None = None) -> Flag:
    """Points Square breaks but no gradient attack does, confirmed: a gradient-masking warning when
    more than 0.2 % of the points survive the stronger white-box attacks too. `confirmation`:
    {reattacked, survived, attacks} of those points (a sample of them when there are many, the
    survivors then scaled up); None when they have not been re-attacked yet."""
    only = square_only(masks, kinds)
    if only is None:
        if "mixed" in kinds.values():
            return Flag("black_box", "skip", "the suite's AutoAttack cascade ends with Square and applies the 0.2 % "
                        "rule itself (autoattack_checks); no separate Square or gradient attack to compare")
        missing = "black-box (Square)" if "black-box" not in kinds.values() else "gradient"
        return Flag("black_box", "skip", f"the suite has no {missing} attack")
    n, k = len(next(iter(masks.values()))), len(only)
    figures = {"square_only": k, "n": n, "threshold": SQUARE_SHARE}
    found = f"Square breaks {share(k, n)} that no gradient attack of the suite breaks"
    rule = f"AutoAttack's threshold {SQUARE_SHARE:.1%}"
    if not k:
        return Flag("black_box", "ok", found, figures)
    if confirmation is None:
        if k <= SQUARE_SHARE * n:
            return Flag("black_box", "ok", f"{found} ({rule})", figures)
        return Flag("black_box", "warn", f"{found}, not yet re-attacked by a stronger white-box attack (re-run the "
                    f"evaluation to confirm them), above {rule}: possible gradient masking", figures)
    tried, survived = confirmation["reattacked"], confirmation["survived"]
    confirmed = survived if tried >= k else round(survived * k / tried)
    figures.update(reattacked=tried, survived=survived, confirmed=confirmed, attacks=list(confirmation["attacks"]))
    sample = "" if tried >= k else f" (a sample of {tried}: ~{share(confirmed, n)} of all)"
    counts = f"{found}; {survived} of the {tried} survive {' and '.join(confirmation['attacks'])}{sample}"
    if confirmed > SQUARE_SHARE * n:
        return Flag("black_box", "warn", f"{counts}, above {rule}: possible gradient masking", figures)
    return Flag("black_box", "ok", f"{counts} ({rule})", figures)


def fgsm_flag(masks: Mapping[str, torch.Tensor], names: Mapping[str, str], kinds: Mapping[str, str]) -> Flag:
    """Per point, the iterative gradient attacks must break what FGSM breaks (compared with their
    per-point worst case: a margin-loss attack alone, e.g. CW-inf, may miss a few CE points)."""
    fgsm = [m for a, m in masks.items() if names[a] == "fgsm"]
    iterative = {a: m for a, m in masks.items() if kinds[a] == "gradient" and names[a] != "fgsm"}
    if not fgsm or not iterative:
        return Flag("fgsm_vs_iterative", "skip", f"the suite has no {'FGSM' if not fgsm else 'iterative'} attack")
    one_step = worst_case(fgsm)
    missed = int((worst_case(iterative.values()) & ~one_step).sum())
    n = len(one_step)
    figures = {"missed": missed, "missed_per_attack": {a: int((m & ~one_step).sum()) for a, m in iterative.items()},
               "n": n}
    if missed > POINT_SHARE * n:
        return Flag("fgsm_vs_iterative", "warn", f"FGSM breaks {share(missed, n)} that no iterative attack "
                    f"({', '.join(iterative)}) breaks: masked gradients or a bad step size", figures)
    return Flag("fgsm_vs_iterative", "ok", f"the iterative attacks miss {share(missed, n)} FGSM breaks", figures)


def transfer_flag(transfer: Mapping[str, torch.Tensor], whitebox: torch.Tensor, missing: list[str] = ()) -> Flag:
    """Examples crafted on a surrogate (each teacher) must not beat the white-box attacks on the
    student; `transfer[t]` is the student's correctness on the examples crafted on teacher t."""
    if not transfer:
        why = f"teacher checkpoint(s) not found: {', '.join(missing)}" if missing else "no teachers recorded"
        return Flag("transfer", "skip", why)
    beats = {t: int((whitebox & ~m).sum()) for t, m in transfer.items()}
    teacher = max(beats, key=beats.__getitem__)
    n = len(whitebox)
    figures = {"beats_whitebox": beats, "whitebox_robust": float(whitebox.float().mean()), "n": n}
    if beats[teacher] > POINT_SHARE * n:
        return Flag("transfer", "warn", f"examples crafted on {teacher} fool the student on {share(beats[teacher], n)} "
                    "the white-box attacks do not: the student's gradients are masked", figures)
    return Flag("transfer", "ok", f"transfer from {', '.join(transfer)} beats white-box on at most "
                f"{share(beats[teacher], n)}", figures)


def library_flag(messages: list[str], ran: bool) -> Flag:
    """The official AutoAttack's own checks (randomized model, probabilities, zero gradients,
    Square beating the cascade, ...), recorded while the suite ran."""
    if not ran:
        return Flag("autoattack_checks", "skip", "the suite runs no AutoAttack component")
    unique = list(dict.fromkeys(" ".join(m.split()) for m in messages))
    if unique:
        more = f" (+{len(unique) - 1} more)" if len(unique) > 1 else ""
        return Flag("autoattack_checks", "warn", f"AutoAttack: {unique[0]}{more}", {"messages": unique})
    return Flag("autoattack_checks", "ok", "AutoAttack's own checks raised nothing", {"messages": []})


def format_eps(eps: float) -> str:
    """A short decimal when there is one (0.2, 0.031), else k/255 (8/255)."""
    k = eps * 255
    if float(f"{eps:.4g}") != eps and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:.6g}"


def protocol_flag(facts: Mapping[str, Any]) -> Flag:
    """The evaluation protocol and its deviations from the rules reported numbers follow: the eps
    the checkpoint was trained at (`threat_eps` of its sidecar, when recorded) and the dataset's
    eps exactly, every point of the test split, one library version, fp32, the training batch as
    configured, a recorded checkpoint selection rule."""
    eps, default, trained = facts["eps"], facts["dataset_eps"], facts.get("threat_eps")
    deviations = []
    if trained is not None and not math.isclose(eps, trained, rel_tol=0, abs_tol=1e-9):
        deviations.append(f"evaluated at eps {format_eps(eps)}, but the checkpoint was trained at eps "
                          f"{format_eps(trained)} (its threat_eps)")
    if not math.isclose(eps, default, rel_tol=0, abs_tol=1e-9):
        rounding = " (a rounding of it)" if abs(eps - default) <= 0.02 * default else ""
        deviations.append(f"eps {format_eps(eps)} is not the {facts['dataset']} default {format_eps(default)} "
                          f"= {default:.6g}{rounding}")
    if facts["split"] != "test":
        deviations.append(f"evaluated on the {facts['split']} split, not test")
    if facts["n_evaluated"] < facts["split_size"]:
        deviations.append(f"a subset: {facts['n_evaluated']} of {facts['split_size']} {facts['split']} points")
    versions = sorted(set(facts["autoattack_versions"]))
    if len(versions) > 1 or (versions and versions[0] != facts["autoattack_installed"]):
        deviations.append(f"rows from pyautoattack {', '.join(versions)} (installed {facts['autoattack_installed']})")
    if facts["dtype"] != "float32" or facts["autocast"]:
        deviations.append(f"evaluated in {facts['dtype']}{' with autocast' if facts['autocast'] else ''}, not fp32")
    batch = facts.get("train_batch")
    if batch and batch["workers"] > 1:
        deviations.append(f"trained with a global batch of {batch['per_worker'] * batch['workers']} "
                          f"({batch['workers']} workers x {batch['per_worker']})")
    if not facts.get("selection"):
        deviations.append("checkpoint selection rule not recorded")
    if deviations:
        return Flag("protocol", "warn", "; ".join(deviations), dict(facts))
    trained_at = " (the training eps)" if trained is not None else ""
    summary = (f"eps {format_eps(eps)}{trained_at}, all {facts['split_size']} {facts['split']} points, pyautoattack "
               f"{facts['autoattack_installed']}, fp32, {facts['selection']}")
    return Flag("protocol", "ok", summary, dict(facts))
