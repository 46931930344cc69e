"""Seed-level comparison of methods: one score per training seed (a model trained again), so the
spread is training variance - what answers "would method A beat method B if trained again".
Test-sampling variance of one model (`attacks.metrics.repeated_trials`) is a different question.

Scores are fractions in [0, 1]; sentences and tables print them as percentages and differences
in percentage points. Pure numpy + scipy.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Sequence

import numpy as np
from scipy.stats import mannwhitneyu
from scipy.stats import t as student_t

LEVEL = 0.95


@dataclass(frozen=True)
class SeedSummary:
    """Mean over seeds with the 95 % Student-t interval of the mean (N - 1 dof). For n = 1 the
    sample std and the interval are undefined: std, ci_low and ci_high are NaN."""
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


@dataclass(frozen=True)
class Comparison:
    """best - other. Welch's t-test and its interval are undefined (welch_p, ci_low, ci_high and
    welch_dof NaN, welch_undefined saying why) when a group has fewer than 2 seeds or both groups
    are constant. mw_p is the exact two-sided Mann-Whitney p (always defined; ties are not
    corrected for, identical groups give 1); mw_min_p is the smallest p it can reach at these
    sizes, 2 / C(n1 + n2, n1), so 0.1 with 3 seeds each."""
    n_best: int
    n_other: int
    diff: float
    ci_low: float
    ci_high: float
    welch_dof: float
    welch_p: float
    welch_undefined: str | None
    mw_p: float
    mw_min_p: float


@dataclass(frozen=True)
class MethodComparison:
    """The best method by mean against every other. Welch is the primary test - `significant`
    reads its Holm-adjusted p - because the exact Mann-Whitney test cannot reach 0.05 with 3 seeds
    per method (nor with 4 after Holm over 2+ comparisons); its Holm-adjusted p is kept as the
    check that assumes no normality.
    Each test is its own Holm family over the comparisons."""
    metric: str
    alpha: float
    best: str
    summaries: dict[str, SeedSummary]
    comparisons: dict[str, Comparison]
    welch_holm: dict[str, float]
    mw_holm: dict[str, float]

    def significant(self, other: str) -> bool:
        return bool(self.welch_holm[other] < self.alpha)


def _values(values: Sequence[float], fractions: bool = False) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"need at least one finite value, got {list(values)!r}")
    if fractions and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"scores must be fractions in [0, 1], got {x.tolist()!r}")
    return x


def _var(x: np.ndarray) -> float:
    """Sample variance, exactly 0 for a constant group (floating-point means leave ~1e-33)."""
    return 0.0 if np.all(x == x[0]) else float(x.var(ddof=1))


def summarize_seeds(values: Sequence[float]) -> SeedSummary:
    """Mean, sample std (ddof = 1) and 95 % Student-t interval of the mean of per-seed values.
    No values or a non-finite one raise ValueError."""
    x = _values(values)
    mean = float(x.mean())
    if x.size == 1:
        return SeedSummary(1, mean, float("nan"), float("nan"), float("nan"))
    std = _var(x) ** 0.5
    half = float(student_t.ppf((1 + LEVEL) / 2, x.size - 1)) * std / x.size ** 0.5
    return SeedSummary(int(x.size), mean, std, mean - half, mean + half)


def compare(best: Sequence[float], other: Sequence[float]) -> Comparison:
    """Difference of means best - other with its 95 % Welch interval (Welch-Satterthwaite dof),
    Welch's two-sided p (as `scipy.stats.ttest_ind(equal_var=False)`, computed from the same terms
    so a constant group neither warns nor divides by zero) and the exact Mann-Whitney p."""
    a, b = _values(best), _values(other)
    diff = float(a.mean() - b.mean())
    mw_p = float(mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)
    mw_min_p = min(1.0, 2 / comb(a.size + b.size, a.size))
    va, vb = (_var(a) / a.size, _var(b) / b.size) if min(a.size, b.size) >= 2 else (0.0, 0.0)
    if va + vb == 0:
        why = "fewer than 2 seeds in a group" if min(a.size, b.size) < 2 else "zero variance in both groups"
        nan = float("nan")
        return Comparison(a.size, b.size, diff, nan, nan, nan, nan, why, mw_p, mw_min_p)
    se = (va + vb) ** 0.5
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = float(student_t.ppf((1 + LEVEL) / 2, dof)) * se
    p = float(2 * student_t.sf(abs(diff) / se, dof))
    return Comparison(a.size, b.size, diff, diff - half, diff + half, dof, p, None, mw_p, mw_min_p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values in the input order, capped at 1. NaN (a test that could not
    run) passes through and is not counted in the family size."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    order = defined[np.argsort(p[defined], kind="stable")]
    m = order.size
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out.tolist()


def rank_methods(scores: dict[str, Sequence[float]], metric_name: str,
                 alpha: float = 0.05) -> MethodComparison:
    """The method with the highest mean (the first listed on a tie) against every other method."""
    if not scores:
        raise ValueError("no methods to compare")
    arrays = {name: _values(v, fractions=True) for name, v in scores.items()}
    summaries = {name: summarize_seeds(x) for name, x in arrays.items()}
    best = max(summaries, key=lambda name: summaries[name].mean)
    comparisons = {name: compare(arrays[best], x) for name, x in arrays.items() if name != best}
    welch = holm([c.welch_p for c in comparisons.values()])
    mw = holm([c.mw_p for c in comparisons.values()])
    return MethodComparison(metric_name, alpha, best, summaries, comparisons,
                            dict(zip(comparisons, welch)), dict(zip(comparisons, mw)))


def _pct(s: SeedSummary) -> str:
    if s.n == 1:
        return f"{100 * s.mean:.1f} %, N = 1, no interval"
    return f"{100 * s.mean:.1f} % ± {100 * s.half_width:.1f}, N = {s.n}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def verdict_sentence(result: MethodComparison) -> str:
    """One sentence: the best method, and for each other whether its lead is significant at alpha
    after Holm correction (Welch), then what the exact Mann-Whitney test says or that N is too
    small for it to reach alpha."""
    head = f"{result.best} has the highest {result.metric} ({_pct(result.summaries[result.best])})"
    if not result.comparisons:
        return head + "; it is the only method."
    clauses = []
    for name, c in result.comparisons.items():
        lead = f"{100 * c.diff:+.1f} points"
        if c.welch_undefined:
            clauses.append(f"over {name} ({lead}) cannot be tested with Welch's t-test ({c.welch_undefined})")
            continue
        verdict = "is significant" if result.significant(name) else "is not significant"
        clauses.append(f"over {name} ({lead}, 95 % CI [{100 * c.ci_low:.1f}, {100 * c.ci_high:.1f}]) {verdict} "
                       f"at {result.alpha:g} (Holm-adjusted Welch {_p(result.welch_holm[name])})")
    sizes = {s.n for s in result.summaries.values()}
    seeds = f"{sizes.pop()} seeds per method" if len(sizes) == 1 else "these seed counts"
    floor = min(c.mw_min_p for c in result.comparisons.values())
    m = len(result.comparisons)
    cannot = f"with {seeds} the exact Mann-Whitney test cannot reach p < {result.alpha:g}"
    if floor >= result.alpha:
        mw = cannot
    elif m * floor >= result.alpha:  # Holm multiplies the smallest p by the family size
        mw = f"{cannot} after Holm correction over {m} comparisons"
    else:
        mw = "the exact Mann-Whitney test gives " + ", ".join(
            f"{_p(p)} over {name}" for name, p in result.mw_holm.items()) + " (Holm-adjusted)"
    return f"{head}; its lead " + "; ".join(clauses) + f"; {mw}."


def comparison_markdown(per_metric: dict[str, dict[str, Sequence[float]]]) -> str:
    """Markdown table, one row per method and one column per metric (clean, each attack, worst
    case, W-Robust...): mean ± 95 % CI half-width (N) over seeds, in percent; '-' where missing."""
    methods = list(dict.fromkeys(name for scores in per_metric.values() for name in scores))
    lines = ["| method | " + " | ".join(per_metric) + " |", "|---" * (len(per_metric) + 1) + "|"]
    for name in methods:
        cells = []
        for scores in per_metric.values():
            s = summarize_seeds(_values(scores[name], fractions=True)) if name in scores else None
            cells.append("-" if s is None else f"{100 * s.mean:.1f} % (N = 1, no interval)" if s.n == 1
                         else f"{100 * s.mean:.1f} % ± {100 * s.half_width:.1f} ({s.n})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Mean ± half-width of the 95 % Student-t interval over training seeds (N), in percent."]
    return "\n".join(lines)
