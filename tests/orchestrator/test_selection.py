"""Picking the trials to evaluate: best by validation W-Robust, or from the Pareto front."""
from __future__ import annotations

from orchestrator.trials import pareto_front, select_trials


def trial(run, clean, pgd, error=None, checkpoint="ck"):
    return {"run": run, "metrics": {"method": "darht", "checkpoint": checkpoint, "error": error, "final": {
        "best_val_clean": clean, "best_val_pgd": pgd, "best_val_w_robust": (clean + pgd) / 2}}}


def test_pareto_front_by_hand():
    points = [(0.9, 0.1), (0.8, 0.3), (0.7, 0.2), (0.6, 0.4), (0.9, 0.1), (0.5, 0.4)]
    # (0.7, 0.2) is dominated by (0.8, 0.3); (0.5, 0.4) by (0.6, 0.4); equal points do not dominate each other.
    assert pareto_front(points) == {0, 1, 3, 4}


def test_single_objective_takes_the_best_finished_trials():
    trials = [trial("a", 0.9, 0.1), trial("b", 0.8, 0.4), trial("c", 0.95, 0.5, error="boom"),
              trial("d", 0.7, 0.3), trial("e", 0.99, 0.99, checkpoint=None)]
    assert [t.run for t in select_trials(trials, "single", top_n=2)] == ["darht-b", "darht-a"]


def test_multi_objective_takes_the_front_ranked_by_w_robust():
    trials = [trial("a", 0.9, 0.1), trial("b", 0.8, 0.4), trial("c", 0.7, 0.3), trial("d", 0.6, 0.45)]
    assert [t.run for t in select_trials(trials, "multi", top_n=5)] == ["darht-b", "darht-d", "darht-a"]
