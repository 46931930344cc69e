"""TensorBoard events are readable by TensorBoard's own reader, and its HParams view, as TensorBoard
serves it, shows a sweep as one experiment: every parameter the space can suggest is a column
with its domain, every trial a session with its values and metrics, also after the driver
rewrites the experiment on a resumed sweep."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from orchestrator.config import load_sweep_config
from orchestrator.storage import Storage
from orchestrator.tensorboard import (EXPERIMENT_FILE, HPARAM_METRICS, TensorBoardCallback, flat_hparams, scalar_tag,
                                      write_experiment)
from orchestrator.trials import trial_params
from search_spaces import preset_path
from search_spaces.distill import space
from search_spaces.domains import parameter_domains
from tensorboard_view import columns, hparams_view
from trainers.callbacks import FitResult

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_tags():
    assert scalar_tag("val_w_robust") == "val/w_robust"
    assert scalar_tag("test_last_pgd") == "test_last/pgd"
    assert scalar_tag("test_pgd") == "test/pgd"
    assert scalar_tag("lr") == "perf/lr"
    assert scalar_tag("w_0") == "train/w_0"


def test_flat_hparams():
    assert flat_hparams({"method": {"name": "darht", "mc": 4, "x": None}, "t": [1, 2]}) == {
        "method/name": "darht", "method/mc": 4, "t": "[1, 2]"}


def test_events_readable_with_scalars_and_a_session(tmp_path):
    cb = TensorBoardCallback(tmp_path, {"method": {"name": "darht", "mc_samples": 4}, "lr": 0.01})
    for epoch in range(3):
        cb.on_epoch_end(epoch, {"epoch": epoch, "loss": 1.0 / (epoch + 1), "val_clean": 0.5, "val_pgd": 0.2,
                                "val_w_robust": 0.35, "w_0": 0.6, "lr": 0.1, "is_best": True}, None)
    cb.on_fit_end(FitResult(history=[{}] * 3, final={"test_clean": 0.9, "test_pgd": 0.3}))
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/clean", "val/pgd", "val/w_robust", "train/w_0", "perf/lr", "test/clean", "test/pgd"} <= tags
    assert "train/is_best" not in tags and "train/epoch" not in tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3]
    assert [round(e.value, 4) for e in acc.Scalars("train/loss")] == [1.0, 0.5, 0.3333]
    plugin = acc.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["method/name"].string_value == "darht"
    assert session.hparams["method/mc_samples"].number_value == 4
    end = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_end_info"]).session_end_info
    assert end.status == 1  # STATUS_SUCCESS
    assert "_hparams_/experiment" not in plugin  # a trial never declares the experiment


def test_other_ranks_write_nothing(tmp_path):
    cb = TensorBoardCallback(tmp_path / "tb", {}, rank=1)
    cb.on_epoch_end(0, {"loss": 1.0}, None)
    assert not (tmp_path / "tb").exists()


def demo_options() -> dict[str, Any]:
    return load_sweep_config(str(preset_path("demo"))).search.options.plain()


def run_trials(logdir: Path, options: dict[str, Any], n: int, seed: int) -> dict[str, dict[str, Any]]:
    """`n` trials sampled from the space as Tune hands them to a trial (Optuna's parameters nested
    at '/', plus the space's constants), each written by the callback a trial's rank 0 runs."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = {}
    for i in range(n):
        trial = study.ask()
        config = {**space(trial, options)}
        for name, value in trial.params.items():
            *path, leaf = name.split("/")
            node = config
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
        study.tell(trial, 0.0)
        params, run = trial_params(config), f"trial_{seed}_{i}"
        cb = TensorBoardCallback(logdir / run, params)
        cb.on_epoch_end(0, {"val_w_robust": 0.1 + 0.01 * i, "val_clean": 0.9, "val_pgd": 0.3, "loss": 1.0}, None)
        cb.on_fit_end(FitResult(history=[{}], final={"test_clean": 0.9}))
        trials[run] = params
    return trials


def assert_one_sweep_experiment(logdir: Path, domains: dict[str, Any], trials: dict[str, dict[str, Any]]) -> None:
    experiment, groups = hparams_view(logdir)
    shown = columns(experiment)
    assert set(shown) == set(domains) | {"teachers"}
    for name, dist in domains.items():
        if isinstance(dist, CategoricalDistribution):
            assert shown[name]["domainDiscrete"] == [c if isinstance(c, str) else float(c) for c in dist.choices], name
        else:
            assert shown[name]["domainInterval"] == {"minValue": dist.low, "maxValue": dist.high}, name
    assert [m["name"]["tag"] for m in experiment["metricInfos"]] == list(HPARAM_METRICS)
    sessions = {s["name"]: (g, s) for g in groups for s in g["sessions"]}
    assert set(sessions) == set(trials)
    for run, params in trials.items():
        group, session = sessions[run]
        assert group["hparams"] == {k: v if isinstance(v, str) else float(v) for k, v in params.items()}
        assert session["status"] == "STATUS_SUCCESS"
        assert {m["name"]["tag"] for m in session["metricValues"]} == set(HPARAM_METRICS)


def test_the_hparams_view_shows_every_searched_parameter_and_every_trial(tmp_path):
    options = demo_options()
    domains = parameter_domains(partial(space, options=options))
    write_experiment(Storage(tmp_path), (), domains, free=("teachers",))
    trials = run_trials(tmp_path, options, n=8, seed=0)
    assert {params["method"] for params in trials.values()} == {"darht", "b_mtard", "rslad"}
    assert_one_sweep_experiment(tmp_path, domains, trials)


def test_a_resumed_sweep_rewrites_the_one_experiment_and_adds_its_sessions(tmp_path):
    options = demo_options()
    domains = parameter_domains(partial(space, options=options))
    write_experiment(Storage(tmp_path), (), domains, free=("teachers",))
    trials = run_trials(tmp_path, options, n=3, seed=1)
    write_experiment(Storage(tmp_path), (), domains, free=("teachers",))  # the driver, resuming
    trials |= run_trials(tmp_path, options, n=3, seed=2)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [EXPERIMENT_FILE]
    assert_one_sweep_experiment(tmp_path, domains, trials)


def test_runs_outside_a_sweep_show_the_union_of_their_parameters(tmp_path):
    """Teachers (and distill runs) write sessions only: TensorBoard's experiment is their union."""
    for name, hparams in {"a": {"arch": "small_cnn", "epochs": 30}, "b": {"arch": "vit", "dropout": 0.1}}.items():
        cb = TensorBoardCallback(tmp_path / name, hparams)
        cb.on_epoch_end(0, {"val_clean": 0.9}, None)
        cb.on_fit_end(FitResult(history=[{}], final={}))
    experiment, groups = hparams_view(tmp_path)
    assert set(columns(experiment)) == {"arch", "epochs", "dropout"}
    assert {s["name"] for g in groups for s in g["sessions"]} == {"a", "b"}


@pytest.mark.parametrize("options", [
    {"method": "darht", "teachers": {"compositions": {"homo": ["a", "b"], "hetero": ["a", "c"]}}},
    {"method": ["darht", "rslad"], "teachers": {"candidates": ["a", "b", "c"], "count": {"low": 1, "high": 3}},
     "darht": {"mc_samples": {"low": 1, "high": 16, "log": True}}, "rslad": {"teacher": ["a", "b"]}},
])
def test_the_experiment_declares_other_spaces_whole(tmp_path, options):
    domains = parameter_domains(partial(space, options=options))
    write_experiment(Storage(tmp_path), (), domains, free=("teachers",))
    assert_one_sweep_experiment(tmp_path, domains, run_trials(tmp_path, options, n=6, seed=3))
