"""The define-by-run distillation space: suggestions, conditional parameters, compositions,
per-method training overrides, fixed values; and the presets it serves."""
from __future__ import annotations

import optuna
import pytest

from search_spaces import preset_names, preset_path
from search_spaces.distill import space
from search_spaces.suggest import suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(options, n=30, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((space(trial, options), dict(trial.params)))
        study.tell(trial, 0.0)
    return out


def test_suggest_kinds():
    study = optuna.create_study()
    trial = study.ask()
    assert suggest(trial, "fixed", 3) == 3 and "fixed" not in trial.params
    assert suggest(trial, "one", ["only"]) == "only" and "one" not in trial.params
    assert suggest(trial, "cat", ["a", "b"]) in ("a", "b")
    assert isinstance(suggest(trial, "int", {"low": 1, "high": 4}), int)
    value = suggest(trial, "log", {"low": 1e-3, "high": 1e-1, "log": True})
    assert 1e-3 <= value <= 1e-1 and isinstance(value, float)
    with pytest.raises(ValueError, match="empty"):
        suggest(trial, "none", [])


def test_teacher_candidates_give_distinct_sets_of_the_sampled_size():
    options = {"method": "darht", "teachers": {"candidates": ["a", "b", "c"], "count": {"low": 1, "high": 3}},
               "darht": {"mc_samples": [1, 4]}}
    seen_counts = set()
    for result, params in sample(options):
        names = result["teacher_names"]
        assert len(names) == len(set(names)) == params["teachers/count"]
        # one possible set (all three) is a fixed value, not a suggestion
        assert params.get(f"teachers/{len(names)}", "a+b+c") == "+".join(names)
        assert result["overrides"]["method"]["mc_samples"] == params["darht/mc_samples"]
        seen_counts.add(len(names))
    assert seen_counts == {1, 2, 3}


def test_methods_are_conditional_and_keep_their_own_parameters():
    options = {"method": ["darht", "b_mtard", "rslad"],
               "teachers": {"compositions": {"het": ["a", "b"], "hom": ["a", "c"]}},
               "darht": {"dropout": {"low": 0.0, "high": 0.3}},
               "b_mtard": {"robust_teacher": ["a"], "clean_teacher": ["b", "c"], "beta": {"low": 0.5, "high": 2.0},
                           "train": {"epochs": 7}},
               "rslad": {"teacher": ["a"], "adv_weight": 0.8},
               "train": {"optim": {"lr": [0.01, 0.1]}, "epochs": 3}}
    methods = set()
    for result, params in sample(options):
        method = result["overrides"]["method"]
        methods.add(method["name"])
        assert result["overrides"]["optim"]["lr"] in (0.01, 0.1)
        assert all(not k.startswith(("darht/", "b_mtard/", "rslad/")) or k.startswith(method["name"] + "/")
                   for k in params)
        if method["name"] == "darht":
            assert result["teacher_names"] in (["a", "b"], ["a", "c"]) and 0 <= method["dropout"] <= 0.3
            assert result["overrides"]["epochs"] == 3
        elif method["name"] == "b_mtard":
            assert result["teacher_names"][0] == "a" and result["teacher_names"][1] in ("b", "c")
            assert result["overrides"]["epochs"] == 7 and "robust_teacher" not in method
        else:
            assert result["teacher_names"] == ["a"] and method == {"name": "rslad", "adv_weight": 0.8}
    assert methods == {"darht", "b_mtard", "rslad"}


def test_enqueued_points_are_evaluated_first():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for point in ({"method": "rslad"}, {"method": "darht"}):
        study.enqueue_trial(point)
    options = {"method": ["darht", "rslad"], "teachers": {"candidates": ["a", "b"], "count": 2},
               "rslad": {"teacher": ["a"]}}
    firsts = []
    for _ in range(2):
        trial = study.ask()
        firsts.append(space(trial, options)["overrides"]["method"]["name"])
        study.tell(trial, 0.0)
    assert firsts == ["rslad", "darht"]


def test_presets_are_listed_and_found():
    names = preset_names()
    assert {"demo", "cifar100_table2", "cifar100_table3", "cifar10_table5", "cifar10_table6"} <= set(names)
    assert all(preset_path(n).is_file() for n in names)
