"""Sanity verdicts of an evaluation, from the results store alone: the model checks stored by the
sanity tasks, plus the checks that read the suite's per-point masks (Square vs the gradient
attacks, confirmed by the stored re-attack of the points only Square broke; FGSM vs the
iterative ones; transfer from the teachers vs white-box), AutoAttack's own check messages and
the protocol record. Printed by orchestrator.evaluate, a section and a
robustness-curve figure of the report."""
from __future__ import annotations

import io
from typing import Any

import torch

from attacks.metrics import worst_case
from attacks.registry import ATTACKS
from attacks.sanity_flags import Flag, verdict
from attacks.sanity_suite import attack_kind, black_box_flag, fgsm_flag, library_flag, protocol_flag, transfer_flag
from orchestrator.summary import point_masks
from orchestrator.results import ResultsStore
from orchestrator.sanity import decode_mask

CHECKS = ("monotone_eps", "unbounded", "more_steps", "input_gradients", "gradient_quality", "randomness", "logits",
          "black_box", "fgsm_vs_iterative", "transfer", "autoattack_checks", "protocol")
CURVE_FIGURE = "robustness_curves.png"


def read_verdicts(store: ResultsStore, name: str) -> list[dict[str, Any]]:
    """Per checkpoint of evaluation `name`: {run, role, verdict, flags, curve}, in plan order."""
    plans = store.read(kind="sanity_plan", sweep=name)
    if not plans:
        return []
    rows = {r["key"]: r for r in store.read(kind="sanity", key={e["key"] for e in plans[0]["metrics"]["entries"]})}
    eval_plans = store.read(kind="plan", sweep=name)
    entries = eval_plans[0]["metrics"]["tasks"] if eval_plans else []
    keys = {e["key"] for e in entries} | {e["clean_key"] for e in entries}
    eval_rows = {r["key"]: r for r in store.read(kind="eval", key=keys)} if keys else {}
    masks = point_masks(entries, eval_rows) if entries else {}
    confirmed = _confirmations(store, name)
    out = []
    for entry in plans[0]["metrics"]["entries"]:
        row = rows.get(entry["key"])
        if row is None:
            continue
        mine = [e for e in entries if e["run"] == entry["run"]]
        flags = [Flag(**f) for f in row["metrics"]["flags"]] + _suite_flags(entry, row, mine, masks, eval_rows,
                                                                               confirmed.get(entry["run"]))
        flags.sort(key=lambda f: CHECKS.index(f.check) if f.check in CHECKS else len(CHECKS))
        curve = next(f.figures for f in flags if f.check == "monotone_eps")
        out.append({"run": entry["run"], "role": entry["role"], "verdict": verdict(flags), "flags": flags,
                    "curve": curve, "eps": row["metrics"]["facts"]["eps"]})
    return out


def _confirmations(store: ResultsStore, name: str) -> dict[str, dict[str, Any]]:
    """Per run, the stored re-attack of its Square-only points that evaluation `name` planned."""
    plans = store.read(kind="confirm_plan", sweep=name)
    planned = plans[0]["metrics"]["entries"] if plans else {}
    if not planned:
        return {}
    stored = {r["key"]: r["metrics"] for r in store.read(kind="sanity_confirm", key=set(planned.values()))}
    return {run: stored[key] for run, key in planned.items() if key in stored}


def _suite_flags(entry: dict[str, Any], row: dict[str, Any], mine: list[dict[str, Any]],
                 masks: dict[str, dict[str, torch.Tensor]], eval_rows: dict[str, dict[str, Any]],
                 confirmation: dict[str, Any] | None) -> list[Flag]:
    m = row["metrics"]
    n, idx = row["n"], torch.tensor(m["indices"], dtype=torch.long)
    params = {e["attack"]: eval_rows[e["key"]]["attack_params"] for e in mine if e["key"] in eval_rows}
    run_masks = {a: mk for a, mk in masks.get(entry["run"], {}).items() if a != "clean"}
    facts = {**m["facts"], "n_evaluated": sum(b - a for a, b in {(e["start"], e["stop"]) for e in mine}),
             "autoattack_versions": [eval_rows[e["key"]]["metrics"].get("autoattack_version")
                                     for e in mine if e["key"] in eval_rows]}
    if not run_masks:  # a teacher checked for its curve only
        facts.update(n_evaluated=facts["split_size"])
        return [Flag(c, "skip", "a teacher of an evaluated student, not evaluated with the suite itself")
                for c in ("black_box", "fgsm_vs_iterative", "transfer", "autoattack_checks")] + [protocol_flag(facts)]
    kinds = {a: attack_kind(params[a]) for a in run_masks}
    names = {a: params[a].get("name") for a in run_masks}
    whitebox = decode_mask(m["whitebox"], n)
    gradient = [mk[idx] for a, mk in run_masks.items() if kinds[a] == "gradient"]
    if gradient:
        whitebox &= worst_case(gradient)
    transfer = {t: decode_mask(text, n) for t, text in m["transfer"].items()}
    messages = [w for e in mine if e["key"] in eval_rows for w in eval_rows[e["key"]]["metrics"].get("library_warnings", [])]
    ran_library = any(ATTACKS[params[a]["name"]][2] for a in run_masks if params[a].get("name") in ATTACKS)
    return [black_box_flag(run_masks, kinds, confirmation), fgsm_flag(run_masks, names, kinds),
            transfer_flag(transfer, whitebox, entry.get("missing_teachers", [])), library_flag(messages, ran_library),
            protocol_flag(facts)]


def format_verdicts(verdicts: list[dict[str, Any]]) -> str:
    """One line per checkpoint, then one per flag that is not ok."""
    if not verdicts:
        return "sanity checks: none recorded"
    lines = []
    for v in verdicts:
        lines.append(f"sanity {v['run']}: {v['verdict'].upper()}")
        lines += [f"  {f.status:<5} {f.check:<18} {f.reason}" for f in v["flags"] if f.status in ("warn", "fail")]
    return "\n".join(lines)


def sanity_markdown(verdicts: list[dict[str, Any]]) -> str:
    """The report's "Sanity checks" section: run x check table, the findings, the curves."""
    if not verdicts:
        return ""
    n = verdicts[0]["curve"]["n"]
    lines = ["", "## Sanity checks", "",
             f"Model checks on a seeded {n}-point subsample of the evaluated split; suite checks from the stored "
             "per-point results (no re-run). ok / warn / fail / skip (not applicable).", "",
             "| run | verdict | " + " | ".join(CHECKS) + " |", "|---|---|" + "---|" * len(CHECKS)]
    for v in verdicts:
        status = {f.check: f.status for f in v["flags"]}
        lines.append(f"| {v['run']} | **{v['verdict']}** | " + " | ".join(status.get(c, "-") for c in CHECKS) + " |")
    findings = [f"- {v['run']} / {f.check} ({f.status}): {f.reason}" for v in verdicts for f in v["flags"]
                if f.status in ("warn", "fail")]
    lines += ["", *(findings or ["No warnings."]), "", f"![robustness curves]({CURVE_FIGURE})", ""]
    return "\n".join(lines)


def sanity_csv_rows(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"run": v["run"], "role": v["role"], "check": f.check, "status": f.status, "reason": f.reason}
            for v in verdicts for f in v["flags"]]


def robustness_curves_png(verdicts: list[dict[str, Any]]) -> bytes:
    """Accuracy vs eps (PGD on the subsample), one line per evaluated model and teacher (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for v in verdicts:
        style = "--" if v["role"] == "teacher" or v["run"].startswith("teacher:") else "-"
        ax.plot(v["curve"]["eps"], v["curve"]["accuracy"], style, marker="o", label=v["run"])
    eps = verdicts[0]["eps"]
    ax.axvline(eps, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="L-inf eps", ylabel="accuracy (PGD)", ylim=(0, 1.02),
           title=f"Robustness curves ({verdicts[0]['curve']['n']}-point subsample; dotted: eps {eps:.4g})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
