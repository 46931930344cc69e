"""The sweep report, rebuilt from the storage alone (the results store, the sweep's Optuna study):
the threat model, a paper-style table (clean, robust and W-Robust per attack, per-point worst case)
for the evaluated trials and baselines, the sweep's teachers, the table of all trials, the
parameter importances of the search, Markdown + CSV files, figures, and the TensorBoard command.
The rows of an `orchestrator.evaluate` run (no trials, no TensorBoard runs) make an evaluation
report: the same tables and figures without the sweep's parts."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from orchestrator.comparison_report import FIGURE as COMPARISON_FIGURE  # noqa: E402
from orchestrator.comparison_report import comparison_png, comparison_section, seed_scores  # noqa: E402
from orchestrator.console import percent  # noqa: E402
from orchestrator.summary import read_summary  # noqa: E402
from orchestrator.importance import FIGURE, Group, importance_groups, importance_markdown, importance_png  # noqa: E402
from orchestrator.results import ResultsStore  # noqa: E402
from orchestrator.sanity_report import (CURVE_FIGURE, read_verdicts, robustness_curves_png,  # noqa: E402
                                        sanity_csv_rows, sanity_markdown)
from orchestrator.storage import Storage  # noqa: E402
from orchestrator.study import FOLDER, journal_name, load_study  # noqa: E402
from orchestrator.trials import MULTI_METRICS, SINGLE_METRIC, pareto_front  # noqa: E402


def build_report(storage: Storage, sweep: str) -> str:
    """Write reports/<sweep>/{report.md, evaluation.csv, trials.csv, pareto.png, importance.png,
    w_robust.png, sanity.csv, robustness_curves.png} (the trials' files only for a sweep); return
    the Markdown."""
    store = ResultsStore(storage)
    summary = read_summary(store, sweep)
    trials = sorted(store.read(kind="trial", sweep=sweep), key=lambda t: -_final(t, SINGLE_METRIC))
    if not summary and not trials:
        return f"no results for sweep {sweep!r} in {storage.uri}"
    points = [(_final(t, MULTI_METRICS[0]), _final(t, MULTI_METRICS[1])) for t in trials]
    front = pareto_front(points)
    eval_rows = [{"run": e["run"], "attack": a, "clean": e["clean"].rate, "robust": r["robust"].rate,
                  "w_robust": r["w_robust"], "robust_correct": r["robust"].correct, "n": r["robust"].total}
                 for e in summary for a, r in e["attacks"].items()]
    trial_rows = [{"trial": t["run"], "method": t["metrics"]["method"], "teachers": "+".join(t["metrics"]["teachers"]),
                   "val_clean": points[i][0], "val_pgd": points[i][1], "val_w_robust": _final(t, SINGLE_METRIC),
                   "pareto": i in front, "error": t["metrics"]["error"] or "",
                   "stopped_early": bool(t["metrics"].get("stopped")),
                   "params": " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in sorted(t["metrics"]["params"].items()))}
                  for i, t in enumerate(trials)]
    folder = ("reports", sweep)
    storage.write_bytes(_csv(eval_rows), *folder, "evaluation.csv")
    if trial_rows:
        storage.write_bytes(_csv(trial_rows), *folder, "trials.csv")
        storage.write_bytes(_pareto_png(trial_rows), *folder, "pareto.png")
    groups, journal_uri = _importance_groups(storage, sweep) if trials else ([], "")
    if any(g.importances for g in groups):
        storage.write_bytes(importance_png(groups), *folder, FIGURE)
    importance = importance_markdown(groups, journal_uri) if groups else []
    metric = _compare_metric(storage, sweep)
    columns = seed_scores(summary, metric)
    if columns:
        storage.write_bytes(comparison_png(columns, metric), *folder, COMPARISON_FIGURE)
    comparison = comparison_section(columns, metric, trials)
    if summary:
        storage.write_bytes(_w_robust_png(summary), *folder, "w_robust.png")
    verdicts = read_verdicts(store, sweep)
    if verdicts:
        storage.write_bytes(robustness_curves_png(verdicts), *folder, CURVE_FIGURE)
        storage.write_bytes(_csv(sanity_csv_rows(verdicts)), *folder, "sanity.csv")
    plans = store.read(kind="plan", sweep=sweep)
    teachers = store.read(kind="teachers", sweep=sweep)
    text = _markdown(sweep, summary, trial_rows, storage, plans[0]["metrics"] if plans else {},
                     teachers[0]["metrics"]["teachers"] if teachers else [], sanity_markdown(verdicts), importance,
                     comparison)
    storage.write_bytes(text.encode(), *folder, "report.md")
    return text


def _final(trial: dict[str, Any], key: str) -> float:
    value = (trial["metrics"].get("final") or {}).get(key)
    return float(value) if value is not None else float("nan")


DIGITS_NOTE = ("Digits (scikit-learn's 1,797 8x8 handwritten digits, eps 0.2) is the embedded demo data: it runs the "
               "whole pipeline in minutes and shows how the methods compare at toy scale. These numbers are not "
               "comparable with the papers' CIFAR / Tiny ImageNet results.")


def _threat_model(plan: dict[str, Any]) -> list[str]:
    if not plan.get("dataset"):
        return []
    lines = [f"Threat model: L-inf, eps = {plan['eps']:.6g} on `{plan['dataset']}` ({plan['split']} split).", ""]
    return lines + ([DIGITS_NOTE, ""] if plan["dataset"] == "digits" else [])


def _teachers(teachers: list[dict[str, Any]]) -> list[str]:
    if not teachers:
        return []
    lines = ["## Teachers", "", "Test split, from each teacher's training run (PGD as in per-epoch validation); "
             "teachers listed as baselines are also in the table above, under the full attack suite.", "",
             "| teacher | architecture | method | epochs | clean | PGD |", "|---|---|---|---|---|---|"]
    for t in teachers:
        lines.append(f"| {t['name']} | {t.get('arch', 'external')} | {t.get('method', '-')} | {t.get('epochs', '-')} | "
                     f"{percent(t.get('test_clean'))} | {percent(t.get('test_pgd'))} |")
    return lines + [""]


def _markdown(sweep: str, summary: list[dict[str, Any]], trials: list[dict[str, Any]], storage: Storage,
              plan: dict[str, Any], teachers: list[dict[str, Any]], sanity: str, importance: list[str],
              comparison: list[str]) -> str:
    split = plan.get("split", "test")
    heading = (f"## {split.capitalize()}-split robustness of the selected trials and baselines" if trials
               else f"## {split.capitalize()}-split robustness")
    lines = [f"# {'Sweep' if trials else 'Evaluation'} `{sweep}`", "", *_threat_model(plan), *comparison, heading, ""]
    attacks = list(dict.fromkeys(a for e in summary for a in e["attacks"]))
    lines += ["| run | clean | " + " | ".join(f"{a} robust / W-Robust" for a in attacks) + " |",
              "|---|---|" + "---|" * len(attacks)]
    for e in summary:
        cells = [f"{e['attacks'][a]['robust'].rate:.2%} / {e['attacks'][a]['w_robust']:.2%}" if a in e["attacks"] else "-"
                 for a in attacks]
        lines.append(f"| {e['run']} | {e['clean'].rate:.2%} ({e['clean'].total}) | " + " | ".join(cells) + " |")
    lines += ["", f"Robust accuracy is over all {split} points; the worst case is per point over the suite.", "",
              *_teachers(teachers), *_trials(trials), *importance, sanity, "",
              f"Files: {storage.uri_of('reports', sweep)}/"]
    if trials:
        lines.append(f"Compare trials: `tensorboard --logdir {storage.uri_of('tensorboard', sweep)}`")
    return "\n".join(lines + [""])


def _importance_groups(storage: Storage, sweep: str) -> tuple[list[Group], str]:
    """The importances of the sweep's study, or of each method's study (search.budget per_method,
    journals `optuna/<sweep>/<method>.log`), and the journal to open with optuna-dashboard."""
    if storage.exists(FOLDER, journal_name(sweep)):
        study = load_study(storage, sweep)
        return (importance_groups(study) if study else []), storage.uri_of(FOLDER, journal_name(sweep))
    methods = [path.rsplit("/", 1)[-1].removesuffix(".log") for path in storage.list_files(FOLDER, sweep, suffix=".log")]
    groups = []
    for method in methods:
        study = load_study(storage, f"{sweep}/{method}")
        groups += [dataclasses.replace(g, name=method) for g in (importance_groups(study) if study else [])]
    return groups, storage.uri_of(FOLDER, sweep, "<method>.log")


def _compare_metric(storage: Storage, sweep: str) -> str:
    """The suite row that ranks the method comparison, as the sweep was configured."""
    record = ("sweeps", f"{sweep}.json")
    return json.loads(storage.read_bytes(*record)).get("compare", {}).get("metric", "worst case") if (
        storage.exists(*record)) else "worst case"


def _trials(trials: list[dict[str, Any]]) -> list[str]:
    if not trials:
        return []
    lines = ["## All trials (validation split)", "",
             "| trial | method | teachers | clean | PGD | W-Robust | Pareto | parameters |", "|---|---|---|---|---|---|---|---|"]
    for t in trials:
        status = f" (failed: {t['error'][:40]})" if t["error"] else " (stopped early)" if t["stopped_early"] else ""
        lines.append(f"| {t['trial']}{status} | {t['method']} | {t['teachers']} | {t['val_clean']:.2%} | {t['val_pgd']:.2%} | "
                     f"{t['val_w_robust']:.2%} | {'yes' if t['pareto'] else ''} | {t['params']} |")
    return lines


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue().encode()


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _pareto_png(trials: list[dict[str, Any]]) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method in sorted({t["method"] for t in trials}):
        pts = [t for t in trials if t["method"] == method]
        ax.scatter([t["val_clean"] for t in pts], [t["val_pgd"] for t in pts], label=method, alpha=0.8)
    front = sorted((t["val_clean"], t["val_pgd"]) for t in trials if t["pareto"])
    if front:  # ringed, so a front of one trial shows too
        ax.plot(*zip(*front), "k--", lw=1, marker="o", markersize=11, markerfacecolor="none", label="Pareto front")
    ax.set(xlabel="validation clean accuracy", ylabel="validation PGD accuracy", title="Trials: clean vs robust")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _w_robust_png(summary: list[dict[str, Any]]) -> bytes:
    attacks = list(dict.fromkeys(a for e in summary for a in e["attacks"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(attacks) * max(1, len(summary)) / 2), 4.5))
    width = 0.8 / len(summary)
    for i, e in enumerate(summary):
        xs = [j + i * width for j in range(len(attacks))]
        ax.bar(xs, [e["attacks"].get(a, {"w_robust": 0})["w_robust"] for a in attacks], width, label=e["run"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(attacks))], attacks, rotation=20)
    ax.set(ylabel="W-Robust (test)", title="W-Robust per attack")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


if __name__ == "__main__":
    from orchestrator.entry import main

    main("report")
