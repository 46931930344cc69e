"""parameter_domains finds every parameter a space can suggest, with Optuna's own distribution for
it: checked against the union of the distributions of many trials Optuna samples itself."""
from __future__ import annotations

from functools import partial
from typing import Any

import optuna
import pytest

from orchestrator.config import load_sweep_config
from search_spaces import preset_names, preset_path
from search_spaces.distill import space
from search_spaces.domains import parameter_domains

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampled_union(fn: Any, n: int = 400) -> dict[str, Any]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    union: dict[str, Any] = {}
    for _ in range(n):
        trial = study.ask()
        fn(trial)
        union.update(trial.distributions)
        study.tell(trial, 0.0)
    return union


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_space_whole(preset):
    options = load_sweep_config(str(preset_path(preset))).search.options.plain()
    fn = partial(space, options=options)
    assert parameter_domains(fn) == sampled_union(fn)


@pytest.mark.parametrize("options, some", [
    ({"method": ["darht", "b_mtard", "rslad"], "teachers": {"candidates": ["a", "b", "c", "d"], "count": [1, 2, 4]},
      "darht": {"mc_samples": [1, 4, 16], "dropout": {"low": 0.0, "high": 0.3}, "train": {"epochs": [2, 3]}},
      "b_mtard": {"robust_teacher": ["a", "b"], "clean_teacher": ["c", "d"], "beta": {"low": 0.5, "high": 2.0}},
      "rslad": {"teacher": ["a"]}, "train": {"optim": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}}},
     {"darht/mc_samples", "darht/train/epochs", "b_mtard/beta", "b_mtard/clean_teacher", "teachers/1", "teachers/2"}),
    ({"method": "darht", "teachers": {"candidates": ["a", "b", "c"], "count": {"low": 1, "high": 3}}},
     {"teachers/count", "teachers/1", "teachers/2"}),
])
def test_conditional_parameters_of_every_branch(options, some):
    fn = partial(space, options=options)
    found = parameter_domains(fn)
    assert found == sampled_union(fn)
    assert some <= set(found)


def test_a_condition_nested_under_a_choice_made_inside_another_branch():
    def nested(trial):
        if trial.suggest_categorical("a", ["x", "y"]) == "y":
            if trial.suggest_categorical("b", [1, 2, 3]) == 3:
                trial.suggest_float("c", 0.0, 1.0)
            trial.suggest_int("d", 1, 8, log=True)

    assert parameter_domains(nested) == sampled_union(nested)
    assert set(parameter_domains(nested)) == {"a", "b", "c", "d"}
