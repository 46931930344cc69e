"""The sweep's Optuna study lives in the storage (`<storage>/optuna/<sweep>.log`, a journal) and
`optuna.load_study` finds every trial there, with its parameters, values, state, Tune trial id and
teacher set: after a plain run, after Tune interrupts and restores the experiment (Ray's
OptunaSearch pickled with its journal and restored), and for an object store's copy."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml
from ray import cloudpickle, tune

from orchestrator.config import load_sweep_config
from orchestrator.search import _tune_config
from orchestrator.storage import Storage
from orchestrator import study as study_module
from orchestrator.study import fetch, load_study, new_study, publish
from orchestrator.trials import SINGLE_METRIC
from tiny import tiny_sweep

pytestmark = pytest.mark.timeout(600)
optuna.logging.set_verbosity(optuna.logging.WARNING)
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Tune's workers cannot import tests/


def stored_study(path: Path, name: str) -> optuna.Study:
    """The study as any Optuna tool opens it."""
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=journal)


def sweep_config(tmp_path: Path, num_samples: int):
    spec = tiny_sweep(str(tmp_path / "store"), name="sw", num_samples=num_samples)
    spec["search"] |= {"max_concurrent": 1, "points": [{"method": "rslad"}]}
    (tmp_path / "sw.yaml").write_text(yaml.safe_dump(spec))
    return load_sweep_config(str(tmp_path / "sw.yaml"))


def objective(config: dict) -> dict:
    """A trial that trains nothing: its objective is a function of its parameters."""
    score = 0.5 if config["method"] == "rslad" else 0.1 * config["darht"].get("mc_samples", 1)
    return {SINGLE_METRIC: score}


class InterruptOnce(tune.Callback):
    """Interrupts the experiment (Ctrl-C: Tune saves its state and returns, as a stopped driver
    leaves it) once `after` trials have completed, if the flag file exists (it is removed)."""

    def __init__(self, flag: str, after: int) -> None:
        self.flag, self.after = flag, after

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        done = sum(t.status == "TERMINATED" for t in trials)
        if done >= self.after and Path(self.flag).exists():
            Path(self.flag).unlink()
            os.kill(os.getpid(), signal.SIGINT)


def test_tune_interrupted_and_restored_keeps_every_trial_in_the_stored_study(tmp_path, ray_session):
    cfg = sweep_config(tmp_path, num_samples=5)
    storage = Storage(cfg.storage)
    flag = tmp_path / "interrupt"
    flag.touch()
    tune_config = _tune_config(cfg, storage, cfg.name, cfg.search.options.plain())
    tuner = tune.Tuner(tune.with_resources(objective, {"cpu": 0.5}), tune_config=tune_config,
                       run_config=tune.RunConfig(name="sw", storage_path=storage.uri_of("tune"), verbose=0,
                                                 callbacks=[InterruptOnce(str(flag), after=2)]))
    first = tuner.fit()
    assert not flag.exists() and sum(r.metrics is not None and SINGLE_METRIC in r.metrics for r in first) < 5
    restored = tune.Tuner.restore(storage.uri_of("tune", "sw"), trainable=tune.with_resources(objective, {"cpu": 0.5}),
                                  resume_unfinished=True, resume_errored=True).fit()
    tune_trials = {r.metrics["trial_id"]: r.metrics[SINGLE_METRIC] for r in restored if r.metrics}
    assert len(tune_trials) == 5
    study = stored_study(tmp_path / "store" / "optuna" / "sw.log", "sw")
    assert study.metric_names == [SINGLE_METRIC]
    trials = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    assert len(study.trials) == 5 and set(trials) == set(tune_trials)
    for trial_id, value in tune_trials.items():
        t = trials[trial_id]
        assert t.state == optuna.trial.TrialState.COMPLETE and t.values == [pytest.approx(value)]
        assert t.params["method"] in ("darht", "rslad")
        assert t.user_attrs["teachers"] == ("t_at" if t.params["method"] == "rslad" else "t_at+t_nat")
    assert study.trials[0].params == {"method": "rslad"}  # the sweep's first point, enqueued once
    assert sum("fixed_params" in t.system_attrs for t in study.trials) == 1


def test_a_new_sweep_replaces_a_journal_left_without_an_experiment(tmp_path):
    storage = Storage(tmp_path)
    new_study(storage, "sw", ["maximize"], ["a"])
    stored_study(tmp_path / "optuna" / "sw.log", "sw").enqueue_trial({"x": 1})
    new_study(storage, "sw", ["maximize", "maximize"], ["a", "b"])
    study = stored_study(tmp_path / "optuna" / "sw.log", "sw")
    assert study.trials == [] and study.metric_names == ["a", "b"]


def test_an_object_store_gets_the_journal_copied(tmp_path, monkeypatch):
    """s3:// and gs:// have no appends: the driver writes a local journal and publishes it; a new
    driver (another machine, its temporary folder empty) starts from the published copy. pyarrow's
    in-memory mock:// filesystem stands in for the bucket."""
    storage = Storage("mock://bucket/store")
    assert not storage.is_local
    monkeypatch.setattr(study_module, "Storage", lambda uri: storage)  # one bucket for every opener
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "driver"))
    (tmp_path / "driver").mkdir()
    study = optuna.load_study(study_name="sw", storage=new_study(storage, "sw", ["maximize"], ["a"]))
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    publish(storage.uri, "sw")
    assert storage.exists("optuna", "sw.log")
    assert [t.values for t in load_study(storage, "sw").trials] == [[0.5]]
    shutil.rmtree(tmp_path / "driver")
    fetch(storage, "sw")
    (local,) = (tmp_path / "driver").rglob("sw.log")
    assert [t.values for t in stored_study(local, "sw").trials] == [[0.5]]
