"""The report's parameter importances: fANOVA over the sweep's stored study ranks what decides the
objective (checked against a variance decomposition computed here), per method for the
conditional parameters with a trial's teacher choices as one `teachers` parameter, says when the
trials are too few, and lands in the report with its figure."""
from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution as Cat
from optuna.distributions import FloatDistribution as Float
from optuna.trial import create_trial

from orchestrator.importance import FIGURE, importance_groups, importance_markdown, importance_png
from orchestrator.report import build_report
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.study import load_study, new_study
from orchestrator.trials import SINGLE_METRIC, trial_row

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # set_metric_names
PNG = b"\x89PNG\r\n\x1a\n"


def study_of(trials: list[tuple[dict, dict, list[float], dict]], metrics: list[str] = [SINGLE_METRIC]) -> optuna.Study:
    """An in-memory study of (params, distributions, values, user attributes) trials."""
    study = optuna.create_study(directions=["maximize"] * len(metrics))
    study.set_metric_names(metrics)
    for params, dists, values, attrs in trials:
        study.add_trial(create_trial(params=params, distributions=dists, values=values, user_attrs=attrs))
    return study


def test_the_parameter_that_decides_the_objective_ranks_first():
    rng = np.random.default_rng(0)
    dists = {"x": Cat(["a", "b", "c"]), "noise_f": Float(0.0, 1.0), "noise_c": Cat([1, 2])}
    trials = []
    for _ in range(40):
        params = {"x": str(rng.choice(["a", "b", "c"])), "noise_f": float(rng.uniform()), "noise_c": int(rng.choice([1, 2]))}
        trials.append((params, dists, [{"a": 0.2, "b": 0.5, "c": 0.9}[params["x"]]], {}))
    (group,) = importance_groups(study_of(trials))
    ranked = list(group.importances[SINGLE_METRIC].items())
    assert ranked[0][0] == "x" and ranked[0][1] > 0.9
    assert group.trials == 40 and group.params == 3 and group.needed == 20


def test_importances_match_the_variance_decomposition():
    """y = 2 x1 + x2 on a grid: each parameter's share of the variance, Var(2 x1) : Var(x2), is
    computed here from the design. (Categorical shares are only approximate: fANOVA integrates
    over the cube of their one-hot columns.)"""
    grid = np.linspace(0.025, 0.975, 15)
    dists = {"x1": Float(0.0, 1.0), "x2": Float(0.0, 1.0)}
    design = [({"x1": float(a), "x2": float(b)}, dists, [2 * a + b], {}) for a, b in itertools.product(grid, grid)]
    parts = {"x1": np.var([2 * t[0]["x1"] for t in design]), "x2": np.var([t[0]["x2"] for t in design])}
    expected = {name: v / sum(parts.values()) for name, v in parts.items()}
    (group,) = importance_groups(study_of(design))
    assert group.importances[SINGLE_METRIC] == pytest.approx(expected, abs=0.01)


def darht_and_rslad_trials(n: int) -> list[tuple[dict, dict, list[float], dict]]:
    """DARHT trials whose objective is decided by the teacher set (count 2: `teachers/2`; count 3:
    one set, so no set parameter), RSLAD trials decided by the learning rate."""
    rng = np.random.default_rng(1)
    sets = {"a+b": 0.3, "a+c": 0.5, "b+c": 0.4, "a+b+c": 0.8}
    trials = []
    for i in range(n):
        lr = float(rng.uniform(1e-3, 1e-2))
        base = {"method": ["darht", "rslad"][i % 2], "train/optim/lr": lr}
        dists = {"method": Cat(["darht", "rslad"]), "train/optim/lr": Float(1e-3, 1e-2, log=True)}
        if base["method"] == "darht":
            count = int(rng.choice([2, 3]))
            teachers = "a+b+c" if count == 3 else str(rng.choice(["a+b", "a+c", "b+c"]))
            params = {**base, "teachers/count": count, "darht/mc_samples": int(rng.choice([1, 4]))}
            dists |= {"teachers/count": Cat([2, 3]), "darht/mc_samples": Cat([1, 4])}
            if count == 2:
                params["teachers/2"], dists["teachers/2"] = teachers, Cat(["a+b", "a+c", "b+c"])
            value = sets[teachers]
        else:
            teachers = str(rng.choice(["a", "b"]))
            params, dists = {**base, "rslad/teacher": teachers}, dists | {"rslad/teacher": Cat(["a", "b"])}
            value = 100 * lr
        trials.append((params, dists, [value], {"teachers": teachers}))
    return trials


def test_per_method_importances_with_the_teacher_set_as_one_parameter():
    groups = {g.name: g for g in importance_groups(study_of(darht_and_rslad_trials(60)))}
    assert list(groups) == ["all trials", "darht", "rslad"]
    assert set(groups["all trials"].importances[SINGLE_METRIC]) == {"method", "teachers", "train/optim/lr"}
    darht = groups["darht"].importances[SINGLE_METRIC]
    assert set(darht) == {"teachers", "darht/mc_samples", "train/optim/lr"}  # no teachers/count, teachers/2
    assert next(iter(darht)) == "teachers" and darht["teachers"] > 0.8
    rslad = groups["rslad"].importances[SINGLE_METRIC]
    assert set(rslad) == {"teachers", "train/optim/lr"} and next(iter(rslad)) == "train/optim/lr"
    assert groups["darht"].trials == groups["rslad"].trials == 30


def test_too_few_trials_are_said_and_the_figure_drawn():
    groups = importance_groups(study_of(darht_and_rslad_trials(6)))
    text = "\n".join(importance_markdown(groups, "/runs/optuna/s.log"))
    assert "Too few trials to trust: 6 completed, 20 needed for 3 parameter(s)" in text
    assert "### darht: 3 completed trial(s)" in text
    assert "`optuna-dashboard /runs/optuna/s.log`" in text
    assert importance_png(groups).startswith(PNG)


def test_both_objectives_of_a_multi_objective_search():
    trials = [(p, d, [v, 1.0 - v], a) for p, d, (v,), a in darht_and_rslad_trials(30)]
    groups = importance_groups(study_of(trials, ["best_val_clean", "best_val_pgd"]))
    assert all(list(g.importances) == ["best_val_clean", "best_val_pgd"] for g in groups)
    assert "| parameter | best_val_clean | best_val_pgd |" in "\n".join(importance_markdown(groups, "x"))
    assert importance_png(groups).startswith(PNG)


def test_the_report_has_the_importances_of_the_stored_study(tmp_path):
    storage = Storage(tmp_path)
    study = optuna.load_study(study_name="sw", storage=new_study(storage, "sw", ["maximize"], [SINGLE_METRIC]))
    rows = []
    for i, (params, dists, values, attrs) in enumerate(darht_and_rslad_trials(8)):
        study.enqueue_trial(params)
        trial = study.ask(dists)
        trial.set_user_attr("teachers", attrs["teachers"])
        study.tell(trial, values[0])
        config = {"overrides": {"method": {"name": params["method"]}}, "teacher_names": attrs["teachers"].split("+"),
                  **params}
        rows.append(trial_row("sw", f"t{i}", config, {SINGLE_METRIC: values[0]}, None, None))
    ResultsStore(storage).append(rows)
    text = build_report(storage, "sw")
    assert "## All trials" in text and "## Parameter importances" in text
    assert f"optuna-dashboard {tmp_path / 'optuna' / 'sw.log'}" in text
    assert "Too few trials to trust: 8 completed" in text and f"![parameter importances]({FIGURE})" in text
    assert (tmp_path / "reports" / "sw" / FIGURE).read_bytes().startswith(PNG)
    assert len(load_study(storage, "sw").trials) == 8
