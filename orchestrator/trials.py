"""Trials as the results store and the report see them: their rows, the metrics that rank them
(validation W-Robust; clean and PGD for a Pareto front), and the choice of the best ones."""
from __future__ import annotations

from typing import Any

from orchestrator.evaluate import Target
from orchestrator.tensorboard import flat_hparams

SINGLE_METRIC = "best_val_w_robust"
MULTI_METRICS = ["best_val_clean", "best_val_pgd"]


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled parameters, flat (TensorBoard HParams and the report's parameter column)."""
    params = flat_hparams({k: v for k, v in config.items() if k not in ("overrides", "teacher_names")})
    params["teachers"] = "+".join(config["teacher_names"])
    return params


def trial_row(sweep: str, trial_id: str, config: dict[str, Any], final: dict[str, Any], checkpoint: str | None,
              error: str | None, stopped: bool = False) -> dict[str, Any]:
    return {"key": f"trial/{sweep}/{trial_id}", "kind": "trial", "sweep": sweep, "run": trial_id,
            "metrics": {"method": config["overrides"]["method"]["name"], "teachers": config["teacher_names"],
                        "overrides": config["overrides"],
                        "params": trial_params(config), "final": final, "checkpoint": checkpoint, "error": error,
                        "stopped": stopped}}


def select_trials(trials: list[dict[str, Any]], objective: str, top_n: int) -> list[Target]:
    """The best N finished trials: by validation W-Robust, or from the Pareto front (multi)."""
    done = [t for t in trials if t["metrics"]["checkpoint"] and not t["metrics"]["error"]]
    done.sort(key=lambda t: -t["metrics"]["final"].get(SINGLE_METRIC, float("-inf")))
    if objective == "multi":
        front = pareto_front([(t["metrics"]["final"].get(MULTI_METRICS[0], 0.0), t["metrics"]["final"].get(MULTI_METRICS[1], 0.0))
                              for t in done])
        done = [t for i, t in enumerate(done) if i in front]
    return [Target(t["metrics"]["checkpoint"], f"{t['metrics']['method']}-{t['run']}") for t in done[:top_n]]


def best_per_method(trials: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, Any]]:
    """Each method's best finished trial by validation W-Robust (methods without one are absent)."""
    done = [t for t in trials if t["metrics"]["checkpoint"] and not t["metrics"]["error"]
            and "overrides" in t["metrics"]]
    done.sort(key=lambda t: -t["metrics"]["final"].get(SINGLE_METRIC, float("-inf")))
    return {m: next(t for t in done if t["metrics"]["method"] == m) for m in methods
            if any(t["metrics"]["method"] == m for t in done)}


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of points no other point dominates (both coordinates maximized)."""
    return {i for i, (a, b) in enumerate(points)
            if not any((c >= a and d >= b) and (c > a or d > b) for c, d in points)}
