"""orchestrator.comparison against values computed here independently: scipy on fixed inputs
(ttest_ind, exact mannwhitneyu, t.interval) and cases worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from orchestrator.comparison import comparison_markdown, compare, holm, rank_methods, summarize_seeds, verdict_sentence

pytestmark = pytest.mark.filterwarnings("error")  # degenerate inputs must not warn either

# t_{0.975} with 2 dof in closed form, (2q - 1) / sqrt(2 q (1 - q)); the often-quoted table value
# 4.302652729911275 is off in the tenth decimal, so it is only checked to 1e-9.
T_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
BEST = [0.70, 0.71, 0.72]
OTHER = [0.55, 0.60, 0.62, 0.64, 0.66]  # unequal size and spread: Welch and pooled tests differ


def test_seed_interval_by_hand():
    assert T_975_2 == pytest.approx(4.302652729911275, abs=1e-9)
    s = summarize_seeds([1, 2, 3])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.ci_low == pytest.approx(2 - T_975_2 / math.sqrt(3), abs=1e-12)
    assert s.ci_high == pytest.approx(2 + T_975_2 / math.sqrt(3), abs=1e-12)


def test_seed_interval_against_scipy():
    x = np.array([0.683, 0.679, 0.687, 0.671])
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    s = summarize_seeds(x.tolist())
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert s.std == pytest.approx(x.std(ddof=1), abs=1e-12)


def test_one_seed_and_constant_seeds():
    one = summarize_seeds([0.7])
    assert one.n == 1 and one.mean == 0.7
    assert math.isnan(one.std) and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    flat = summarize_seeds([0.7, 0.7, 0.7])
    assert flat.std == 0 and flat.ci_low == flat.ci_high == flat.mean
    for bad in ([], [0.5, float("nan")]):
        with pytest.raises(ValueError):
            summarize_seeds(bad)


def test_welch_dof_and_interval_by_hand():
    # var([1, 2, 3]) = 1, var([2, 4, 6, 8]) = 20/3: terms 1/3 and 5/3, so se = sqrt(2) and
    # dof = (1/3 + 5/3)^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4 / (53/54) = 216/53.
    c = compare([1, 2, 3], [2, 4, 6, 8])
    dof = 216 / 53
    assert c.diff == -3.0 and c.welch_dof == pytest.approx(dof, abs=1e-12)
    half = stats.t.ppf(0.975, dof) * math.sqrt(2)
    assert (c.ci_low, c.ci_high) == pytest.approx((-3 - half, -3 + half), abs=1e-12)
    assert c.welch_p == pytest.approx(2 * stats.t.sf(3 / math.sqrt(2), dof), abs=1e-12)


def test_compare_against_scipy():
    c = compare(BEST, OTHER)
    welch = stats.ttest_ind(BEST, OTHER, equal_var=False)
    mw = stats.mannwhitneyu(BEST, OTHER, alternative="two-sided", method="exact")
    assert c.diff == pytest.approx(np.mean(BEST) - np.mean(OTHER), abs=1e-12)
    assert c.welch_p == pytest.approx(welch.pvalue, abs=1e-12)
    assert c.welch_dof == pytest.approx(welch.df, abs=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx(tuple(welch.confidence_interval(0.95)), abs=1e-12)
    assert c.mw_p == pytest.approx(mw.pvalue, abs=1e-12)
    assert c.mw_min_p == pytest.approx(2 / math.comb(8, 3)) and c.welch_undefined is None


def test_wrong_direction_or_pooled_test_would_fail():
    c = compare(BEST, OTHER)
    reversed_ = stats.ttest_ind(OTHER, BEST, equal_var=False).confidence_interval(0.95)
    pooled = stats.ttest_ind(BEST, OTHER, equal_var=True).pvalue
    assert c.diff > 0 and c.ci_low > 0  # best - other: the lead is positive
    assert (c.ci_low, c.ci_high) != pytest.approx(tuple(reversed_), abs=1e-3)
    assert abs(pooled - c.welch_p) > 1e-3 and c.welch_p != pytest.approx(pooled, abs=1e-6)


def test_mann_whitney_floor_for_three_seeds():
    c = compare([0.4, 0.5, 0.6], [0.1, 0.2, 0.3])  # fully separated: 2 / C(6, 3)
    assert c.mw_p == pytest.approx(0.1) and c.mw_min_p == pytest.approx(0.1)


def test_degenerate_comparisons():
    flat = compare([0.5, 0.5, 0.5], [0.4, 0.4, 0.4])
    assert math.isnan(flat.welch_p) and math.isnan(flat.ci_low) and math.isnan(flat.welch_dof)
    assert flat.welch_undefined == "zero variance in both groups" and flat.diff == pytest.approx(0.1)
    assert flat.mw_p == pytest.approx(0.1)
    single = compare([0.7], [0.6, 0.65])
    assert math.isnan(single.welch_p) and single.welch_undefined == "fewer than 2 seeds in a group"
    assert single.mw_p == single.mw_min_p == pytest.approx(2 / 3)  # separated 1 vs 2: 2 / C(3, 1)
    one_flat = compare([0.7, 0.7, 0.7], [0.6, 0.65, 0.61])  # one constant group: Welch is defined
    assert one_flat.welch_dof == pytest.approx(2.0) and one_flat.welch_undefined is None


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, 2*0.03, max(0.06, 1*0.04): step-down keeps it monotone
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    out = holm([0.01, float("nan"), 0.04])  # NaN passes through and is not counted
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([]) == []


SCORES = {"darht": [0.660, 0.664, 0.659], "rslad": [0.683, 0.679, 0.687], "b_mtard": [0.675, 0.690, 0.670]}


def test_rank_methods_best_and_holm():
    r = rank_methods(SCORES, "worst-case W-Robust")
    assert r.best == "rslad" and list(r.comparisons) == ["darht", "b_mtard"]
    p_darht, p_mtard = (stats.ttest_ind(SCORES["rslad"], SCORES[m], equal_var=False).pvalue for m in ("darht", "b_mtard"))
    assert p_darht < p_mtard  # Holm over 2: the smaller p times 2, the larger one kept at least as large
    assert r.welch_holm == pytest.approx({"darht": 2 * p_darht, "b_mtard": max(2 * p_darht, p_mtard)}, abs=1e-12)
    assert r.mw_holm == pytest.approx({"darht": 0.2, "b_mtard": 0.7})
    assert r.significant("darht") and not r.significant("b_mtard")
    for bad in ({}, {"a": [68.3, 70.1]}, {"a": [0.5, float("nan")]}):
        with pytest.raises(ValueError):
            rank_methods(bad, "clean")


def test_verdict_sentence():
    text = verdict_sentence(rank_methods(SCORES, "worst-case W-Robust"))
    half = 100 * T_975_2 * np.std(SCORES["rslad"], ddof=1) / math.sqrt(3)
    assert text.startswith(f"rslad has the highest worst-case W-Robust (68.3 % ± {half:.1f}, N = 3); ")
    assert "its lead over darht (+2.2 points, 95 % CI [1.4, 3.0]) is significant at 0.05" in text
    assert "over b_mtard (+0.5 points, 95 % CI [-1.8, 2.7]) is not significant at 0.05" in text
    assert text.endswith("with 3 seeds per method the exact Mann-Whitney test cannot reach p < 0.05.")


def test_verdict_mann_whitney_reach_and_degenerate():
    four = {"a": [0.50, 0.51, 0.52, 0.53], "b": [0.40, 0.41, 0.42, 0.43], "c": [0.30, 0.31, 0.32, 0.33]}
    assert "cannot reach p < 0.05 after Holm correction over 2 comparisons" in verdict_sentence(
        rank_methods(four, "clean"))  # 2 / C(8, 4) = 0.029, times 2 comparisons = 0.057
    six = {"a": [0.50, 0.51, 0.52, 0.53, 0.54, 0.55], "b": [0.40, 0.41, 0.42, 0.43, 0.44, 0.45]}
    assert "the exact Mann-Whitney test gives p = 0.0022 over b (Holm-adjusted)" in verdict_sentence(
        rank_methods(six, "clean"))  # 2 / C(12, 6) = 2 / 924
    text = verdict_sentence(rank_methods({"a": [0.5, 0.5], "b": [0.4, 0.4], "c": [0.3]}, "clean"))
    assert "over b (+10.0 points) cannot be tested with Welch's t-test (zero variance in both groups)" in text
    assert "with these seed counts the exact Mann-Whitney test cannot reach p < 0.05" in text
    assert verdict_sentence(rank_methods({"a": [0.7]}, "clean")) == (
        "a has the highest clean (70.0 %, N = 1, no interval); it is the only method.")


def test_comparison_markdown():
    table = comparison_markdown({"clean": {"a": [1 / 3, 0.4], "b": [0.7]}, "W-Robust": {"a": [0.5, 0.52, 0.51]}})
    half_clean = 100 * stats.t.ppf(0.975, 1) * np.std([1 / 3, 0.4], ddof=1) / math.sqrt(2)
    half_w = 100 * T_975_2 * 0.01 / math.sqrt(3)
    lines = table.splitlines()
    assert lines[:4] == ["| method | clean | W-Robust |", "|---|---|---|",
                         f"| a | 36.7 % ± {half_clean:.1f} (2) | 51.0 % ± {half_w:.1f} (3) |",
                         "| b | 70.0 % (N = 1, no interval) | - |"]
