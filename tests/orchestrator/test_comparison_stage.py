"""The method comparison's plumbing without Ray: which runs it plans (each method's best trial and
each baseline, fresh seeds), how a finished sweep is extended with more seeds, and how the
evaluation summary becomes per-seed scores and the report's section."""
from __future__ import annotations

import pytest
from scipy import stats

from attacks.metrics import Count
from orchestrator.comparison_report import comparison_section, seed_scores
from orchestrator.config import load_sweep_config
from orchestrator.evaluate import _extends
from orchestrator.replicate import BASELINE_SUFFIX, plan_cells
from orchestrator.sweep import _same_sweep
from search_spaces import preset_path
from trainers.config import ConfigError, to_dict


def config(*sets: str):
    return load_sweep_config(str(preset_path("demo")), sets=["compare.seeds=3", "compare.baselines=[pgd_at]", *sets])


def trial(run: str, method: str, score: float, error: str | None = None) -> dict:
    return {"run": run, "metrics": {"method": method, "teachers": ["cnn_pgd_at"], "error": error,
                                    "overrides": {"method": {"name": method}, "optim": {"lr": score}},
                                    "checkpoint": f"/ck/{run}", "final": {"best_val_w_robust": score}}}


def test_cells_are_each_methods_best_trial_and_the_baselines_with_fresh_seeds():
    cfg = config("student.seed=7")
    trials = [trial("a", "darht", 0.5), trial("b", "darht", 0.6), trial("c", "rslad", 0.4),
              trial("d", "rslad", 0.9, error="boom"), trial("e", "b_mtard", 0.1)]
    cells = plan_cells(cfg, trials)
    by_label = {}
    for c in cells:
        by_label.setdefault(c["label"], []).append(c)
    assert list(by_label) == ["darht", "b_mtard", "rslad", "pgd_at" + BASELINE_SUFFIX]
    assert [c["seed"] for c in by_label["darht"]] == [8, 9, 10]  # never the search's seed 7
    assert {c["source"] for c in by_label["darht"]} == {"b"}  # the better darht trial
    assert {c["source"] for c in by_label["rslad"]} == {"c"}  # the failed trial is not a candidate
    baseline = by_label["pgd_at" + BASELINE_SUFFIX][0]
    assert baseline["overrides"] == {"method": {"name": "pgd_at"}} and baseline["teacher_names"] == []


def test_a_baseline_must_train_without_teachers_and_seeds_allow_a_statistic():
    with pytest.raises(ConfigError, match="compare.baselines.0..*distills from teachers"):
        config("compare.baselines=[rslad]")
    with pytest.raises(ConfigError, match="compare.seeds"):
        config("compare.seeds=1")


def test_more_seeds_extend_a_sweep_and_anything_else_is_another_sweep():
    recorded = to_dict(config())
    assert _same_sweep(recorded, to_dict(config()))
    assert _same_sweep(recorded, to_dict(config("compare.seeds=5")))
    assert not _same_sweep(recorded, to_dict(config("compare.seeds=2")))
    assert not _same_sweep(recorded, to_dict(config("compare.seeds=5", "student.epochs=7")))


def test_a_plan_extends_another_only_by_adding_tasks_under_the_same_threat_model():
    old = {"eps": 0.2, "split": "test", "tasks": [{"key": "k1", "run": "a"}]}
    assert _extends(old, {**old, "tasks": [{"key": "k1", "run": "a"}, {"key": "k2", "run": "b"}]})
    assert not _extends(old, {**old, "tasks": [{"key": "k2", "run": "b"}]})
    assert not _extends(old, {**old, "eps": 0.3, "tasks": old["tasks"] + [{"key": "k2", "run": "b"}]})


def entry(run: str, clean: int, robust: dict[str, int], n: int = 100) -> dict:
    return {"run": run, "clean": Count(clean, n), "attacks": {
        a: {"robust": Count(r, n), "w_robust": (clean / n + r / n) / 2} for a, r in robust.items()}}


def test_seed_scores_and_the_section_read_the_seed_runs_only():
    summary = [entry("darht/seed1", 90, {"PGD": 50, "worst case": 40}), entry("darht/seed2", 92, {"PGD": 52, "worst case": 44}),
               entry("darht/seed3", 91, {"PGD": 51, "worst case": 42}),
               entry("pgd_at-no-distill/seed1", 80, {"PGD": 40, "worst case": 30}),
               entry("pgd_at-no-distill/seed2", 82, {"PGD": 41, "worst case": 31}),
               entry("pgd_at-no-distill/seed3", 81, {"PGD": 45, "worst case": 35}),
               entry("darht-abc123", 99, {"PGD": 99, "worst case": 99}), entry("teacher:cnn", 99, {"PGD": 99, "worst case": 99})]
    columns = seed_scores(summary, "worst case")
    assert list(columns) == ["clean", "PGD robust", "worst case robust", "W-Robust (worst case)"]
    assert columns["clean"] == {"darht": [0.90, 0.92, 0.91], "pgd_at-no-distill": [0.80, 0.82, 0.81]}
    assert columns["W-Robust (worst case)"]["darht"] == pytest.approx([0.65, 0.68, 0.665])
    lines = "\n".join(comparison_section(columns, "worst case", [trial("a", "darht", 0.5), trial("b", "darht", 0.6)]))
    assert lines.startswith("## Method comparison") and "darht 2 trial(s)" in lines
    # the sentence's Welch p, Holm over one comparison, is scipy's
    p = stats.ttest_ind([0.65, 0.68, 0.665], [0.55, 0.565, 0.58], equal_var=False).pvalue
    assert f"Welch p = {p:.2g}" in lines and "darht has the highest W-Robust (worst case)" in lines
    assert seed_scores([entry("darht-abc", 90, {"worst case": 40})], "worst case") == {}
