"""An evaluation as the results store holds it: the plan row's entries (`plan_entries`, written by
orchestrator.evaluate), the per-point masks they point at, and what is read from them (the summary
table, the masks per run, DARHT's repeated trials). Read by the report, the sanity checks and the
command line without importing the evaluation's executor."""
from __future__ import annotations

from typing import Any

import torch

from attacks.metrics import count, mann_whitney, trial_indices, w_robust, w_robust_per_trial, worst_case
from orchestrator.eval_pool import EvalTask
from orchestrator.results import ResultsStore, unpack_mask


def plan_entries(tasks: list[EvalTask]) -> list[dict[str, Any]]:
    """What a summary needs of each task; stored as the evaluation's plan row."""
    return [{"run": t.run, "attack": t.spec.display, "key": t.key, "clean_key": t.clean_key,
             "start": t.start, "stop": t.stop} for t in tasks]


def point_masks(entries: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
    """Per run, the per-point correctness over the whole split: {"clean": mask, attack: mask, ...}."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for run in dict.fromkeys(e["run"] for e in entries):
        mine = sorted((e for e in entries if e["run"] == run), key=lambda e: e["start"])
        shards = sorted({(e["start"], e["stop"], e["clean_key"]) for e in mine})
        masks = {"clean": torch.cat([unpack_mask(rows[k]["mask"], b - a) for a, b, k in shards])}
        for attack in dict.fromkeys(e["attack"] for e in mine):
            masks[attack] = torch.cat([unpack_mask(rows[e["key"]]["mask"], e["stop"] - e["start"])
                                       for e in mine if e["attack"] == attack])
        out[run] = masks
    return out


def summarize(entries: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: clean, then per attack robust and W-Robust (with counts), then the per-point worst
    case. `entries` from plan_entries, `rows` the store's eval rows by key."""
    table = []
    for run, masks in point_masks(entries, rows).items():
        clean = count(masks["clean"])
        attacks = {a: m for a, m in masks.items() if a != "clean"}
        if len(attacks) > 1:
            attacks["worst case"] = worst_case(attacks.values())
        table.append({"run": run, "clean": clean, "attacks": {
            a: {"robust": count(m), "w_robust": w_robust(clean, count(m))} for a, m in attacks.items()}})
    return table


def read_summary(store: ResultsStore, name: str) -> list[dict[str, Any]]:
    """The summary of evaluation `name` (a sweep or an evaluate run) from the store alone."""
    plans = store.read(kind="plan", sweep=name)
    if not plans:
        return []
    entries = plans[0]["metrics"]["tasks"]
    return summarize(entries, _plan_rows(store, entries))


def _plan_rows(store: ResultsStore, entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The eval rows (with masks) of a plan's tasks and their clean shards, by key."""
    keys = {e["key"] for e in entries} | {e["clean_key"] for e in entries}
    return {r["key"]: r for r in store.read(columns=["mask"], kind="eval", key=keys)}


def format_table(table: list[dict[str, Any]]) -> str:
    lines = [f"{'run':<28}{'attack':<16}{'clean':>9}{'robust':>9}{'W-Robust':>10}{'robust/n':>14}"]
    for entry in table:
        c = entry["clean"]
        for attack, r in entry["attacks"].items():
            lines.append(f"{entry['run']:<28}{attack:<16}{c.rate:>9.2%}{r['robust'].rate:>9.2%}"
                         f"{r['w_robust']:>10.2%}{r['robust'].correct:>8}/{r['robust'].total:<5}")
    return "\n".join(lines)


def read_masks(store: ResultsStore, name: str) -> dict[str, dict[str, torch.Tensor]]:
    plans = store.read(kind="plan", sweep=name)
    if not plans:
        return {}
    entries = plans[0]["metrics"]["tasks"]
    return point_masks(entries, _plan_rows(store, entries))


def repeated_trials(masks: dict[str, dict[str, torch.Tensor]], *, trials: int, size: int, seed: int) -> str:
    """DARHT's repeated trials: W-Robust over `trials` random subsets of `size` points per run and attack
    (the same subsets for every run), and a two-sided Mann-Whitney U test of the first run
    against each other one. Subsets resample the evaluated points; attacks are not re-run."""
    runs = list(masks)
    n = len(next(iter(masks.values()))["clean"])
    subsets = trial_indices(n, trials, min(size, n), seed)
    lines = [f"repeated trials: {trials} x {min(size, n)} points (seed {seed}); W-Robust mean +- std"]
    for attack in [a for a in masks[runs[0]] if a != "clean"]:
        scores = {r: w_robust_per_trial(masks[r]["clean"], masks[r][attack], subsets) for r in runs if attack in masks[r]}
        for run, values in scores.items():
            lines.append(f"  {attack:<14} {run:<28} {values.mean():.2%} +- {values.std(ddof=1) if trials > 1 else 0:.2%}")
        for run in list(scores)[1:]:
            u, p = mann_whitney(scores[runs[0]], scores[run])
            lines.append(f"  {attack:<14} Mann-Whitney U {runs[0]} vs {run}: U = {u:.1f}, p = {p:.3g}")
    return "\n".join(lines)
