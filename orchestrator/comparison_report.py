"""The report's "Method comparison" section: the comparison runs' test scores gathered per
method and seed, the table of means with their confidence intervals, the generated sentence
(orchestrator.comparison) and a figure with every seed as a point."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from orchestrator.comparison import comparison_markdown, rank_methods, summarize_seeds, verdict_sentence  # noqa: E402

FIGURE = "comparison.png"
_SEED_RUN = re.compile(r"(?P<label>[^/]+)/seed(?P<seed>\d+)")


def seed_scores(summary: list[dict[str, Any]], metric: str) -> dict[str, dict[str, list[float]]]:
    """Per column (clean, each attack's robust accuracy, `W-Robust (<metric>)`), per method, one
    test score per training seed, from the evaluation summary's `<method>/seed<k>` runs."""
    columns: dict[str, dict[str, list[float]]] = {"clean": {}}
    for entry in summary:
        match = _SEED_RUN.fullmatch(entry["run"])
        if not match or metric not in entry["attacks"]:
            continue
        label = match["label"]
        columns["clean"].setdefault(label, []).append(entry["clean"].rate)
        for attack, result in entry["attacks"].items():
            columns.setdefault(f"{attack} robust", {}).setdefault(label, []).append(result["robust"].rate)
        columns.setdefault(f"W-Robust ({metric})", {}).setdefault(label, []).append(entry["attacks"][metric]["w_robust"])
    return columns if len(columns) > 1 else {}


def comparison_section(columns: dict[str, dict[str, list[float]]], metric: str,
                       trials: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the section (empty without comparison runs)."""
    if not columns:
        return []
    ranking = columns[f"W-Robust ({metric})"]
    budget = Counter(t["metrics"]["method"] for t in trials)
    seeds = sorted({len(v) for v in ranking.values()})
    return ["## Method comparison", "",
            "The best configuration of each method from the search (by validation W-Robust) and each baseline "
            "without distillation (`-no-distill`), trained again with fresh training seeds, selected on the "
            "validation split and evaluated on the test split. Search budget: "
            + (", ".join(f"{m} {n} trial(s)" for m, n in sorted(budget.items())) or "none") + f"; seeds per "
            f"configuration: {', '.join(map(str, seeds))}.", "",
            comparison_markdown(columns), "",
            f"**{verdict_sentence(rank_methods(ranking, f'W-Robust ({metric})'))}**", "",
            f"![comparison]({FIGURE})", "",
            "Differences are over training seeds (would the method win if trained again?). The repeated-trials "
            "test of `orchestrator.evaluate --trials` resamples one model's test points: it says how precisely "
            "that model's accuracy is measured, not which method is better.", ""]


def comparison_png(columns: dict[str, dict[str, list[float]]], metric: str) -> bytes:
    """Left: the ranking W-Robust of every seed per method, with the mean and its 95 % interval.
    Right: clean vs worst-case robust accuracy, one point per seed."""
    import io

    ranking = columns[f"W-Robust ({metric})"]
    methods = list(ranking)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, method in enumerate(methods):
        values = [100 * v for v in ranking[method]]
        s = summarize_seeds(ranking[method])
        color = f"C{i}"
        left.scatter([i] * len(values), values, color=color, alpha=0.8, zorder=3)
        left.errorbar([i + 0.15], [100 * s.mean], yerr=[[100 * s.half_width]] if s.n > 1 else None, fmt="_",
                      color="k", capsize=6, markersize=16)
        robust = columns.get(f"{metric} robust", {}).get(method, [])
        right.scatter([100 * v for v in columns["clean"][method]][:len(robust)], [100 * v for v in robust],
                      color=color, label=method, alpha=0.8)
    left.set_xticks(range(len(methods)), methods, rotation=20)
    left.set(ylabel=f"test W-Robust ({metric}), %", title="Each seed a point; mean and 95 % CI")
    right.set(xlabel="test clean accuracy, %", ylabel=f"test {metric} robust accuracy, %", title="Clean vs robust per seed")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
