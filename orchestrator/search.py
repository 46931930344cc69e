"""Stage 2 of a sweep: Ray Tune + Optuna over distillation trials. Each trial is a Tune function
trainable (the trial's driver) that builds a TorchTrainer and calls fit(); Ray Train V2 refuses
the older Tuner(TorchTrainer) shape (docs/clusters.md#how-the-project-uses-ray)."""
from __future__ import annotations

from functools import partial
from typing import Any

import optuna
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from orchestrator.config import SweepConfig
from orchestrator.console import TrialProgress, trial_label
from orchestrator.ray_env import driver_resources
from orchestrator.ray_train import run_training
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.study import PublishJournal, fetch, new_study, publish
from orchestrator.tensorboard import write_experiment
from orchestrator.trials import MULTI_METRICS, SINGLE_METRIC, trial_params, trial_row
from search_spaces import SPACES
from search_spaces.domains import parameter_domains
from trainers import TrainConfig
from trainers.config import ConfigError, from_dict, merge_dicts, to_dict


def trial_driver(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One Tune trial: a Ray Train distillation run with the sampled configuration."""
    cfg = from_dict(SweepConfig, setup["sweep"])
    trial_id = tune.get_context().get_trial_id()
    sample = {"overrides": config["overrides"], "teacher_names": config["teacher_names"]}
    train = trial_config(cfg, sample, setup["teacher_paths"], name=trial_label(config, trial_id))
    storage = Storage(cfg.storage)
    params = trial_params(config)
    result = run_training(train, name=f"train-{trial_id}", storage=storage, resources=cfg.resources.trial,
                          tensorboard_dir=storage.uri_of("tensorboard", cfg.name, trial_id),
                          hparams=params, results_uri=storage.uri, sweep=cfg.name, callbacks=[TuneReportCallback()])
    checkpoint = None if result.checkpoint is None else checkpoint_uri(result.checkpoint) + "/best"
    ResultsStore(storage).append([trial_row(cfg.name, trial_id, config, result.metrics, checkpoint,
                                            None if result.error is None else str(result.error))])
    if result.error is not None:
        raise result.error


def finished_trials(storage_uri: str, sweep: str) -> int:
    return len(ResultsStore(Storage(storage_uri)).keys(kind="trial", sweep=sweep))


class StoppedTrialRows(tune.Callback):
    """A trial the scheduler stops early (ASHA) is ended by Tune before its driver writes its row;
    the sweep's driver writes it from the trial's last report, so the report lists every trial."""

    def __init__(self, storage_uri: str, sweep: str) -> None:
        self.storage_uri, self.sweep = storage_uri, sweep

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        store = ResultsStore(Storage(self.storage_uri))
        if f"trial/{self.sweep}/{trial.trial_id}" in store.keys(kind="trial", sweep=self.sweep):
            return
        last = dict(trial.last_result or {})
        checkpoint = last.pop("checkpoint_path", None)
        final = {k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        store.append([trial_row(self.sweep, trial.trial_id, trial.config, final,
                                checkpoint and checkpoint + "/best", None, stopped=True)])


class SweepSearch(OptunaSearch):
    """OptunaSearch that records on each Optuna trial its Tune trial id (its TensorBoard run and
    report row) and its teacher set, so the stored study reads on its own (optuna-dashboard, the
    report's importances). `_ot_trials` is OptunaSearch's map from Tune to Optuna trials (Ray 2.60)."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is not None:
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr("tune_trial_id", trial_id)
            ot_trial.set_user_attr("teachers", "+".join(config["teacher_names"]))
        return config


def search(cfg: SweepConfig, storage: Storage, teacher_paths: dict[str, str], resume: bool) -> None:
    """Run the sweep's search: one over the whole space (budget shared), or one per method, each
    with num_samples trials and a study of its own (budget per_method), one after the other."""
    setup = {"sweep": to_dict(cfg), "teacher_paths": teacher_paths}
    trainable = tune.with_resources(tune.with_parameters(trial_driver, setup=setup), driver_resources())
    # TensorBoard's one HParams experiment for the sweep: every parameter any trial can have.
    write_experiment(storage, ("tensorboard", cfg.name), parameter_domains(_space(cfg, cfg.search.options.plain())),
                     free=("teachers",))
    searches = study_options(cfg)
    progress = TrialProgress(cfg.search.num_samples * len(searches), partial(finished_trials, storage.uri, cfg.name))
    for study, options in searches:
        *parents, leaf = study.split("/")
        path = storage.uri_of("tune", *parents, leaf)
        # A restored Tuner runs the callbacks saved with its first run: they hold no state of their own.
        callbacks = [StoppedTrialRows(storage.uri, cfg.name), PublishJournal(storage.uri, study), progress]
        if resume and storage.exists("tune", *parents, leaf):
            fetch(storage, study)
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, tune_config=_tune_config(cfg, storage, study, options), run_config=tune.RunConfig(
                name=leaf, storage_path=storage.uri_of("tune", *parents), verbose=0, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=1)))
        try:
            tuner.fit()
        finally:
            publish(storage.uri, study)


def study_options(cfg: SweepConfig) -> list[tuple[str, dict[str, Any]]]:
    """(study name, search options) of each search: the sweep's name over every method, or
    `<sweep>/<method>` restricted to one method (its Tune experiment `tune/<sweep>/<method>`)."""
    options = cfg.search.options.plain()
    if cfg.search.budget == "shared":
        return [(cfg.name, options)]
    methods = options["method"] if isinstance(options["method"], list) else [options["method"]]
    return [(f"{cfg.name}/{method}", {**options, "method": method}) for method in methods]


def _space(cfg: SweepConfig, options: dict[str, Any]) -> Any:
    return partial(SPACES[cfg.search.space], options=options)


def _points(cfg: SweepConfig, options: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The configured first points of this search: all of them over every method; for one method's
    search those naming that method (or none), without the method, which is fixed there."""
    points = [dict(p) for p in cfg.search.points]
    if isinstance(options["method"], str) and cfg.search.budget == "per_method":
        points = [{k: v for k, v in p.items() if k != "method"} for p in points
                  if p.get("method", options["method"]) == options["method"]]
        points = [p for p in points if p]
    return points or None


def _tune_config(cfg: SweepConfig, storage: Storage, study: str, options: dict[str, Any]) -> tune.TuneConfig:
    s = cfg.search
    multi = s.objective == "multi"
    metrics = MULTI_METRICS if multi else [SINGLE_METRIC]
    journal = new_study(storage, study, directions=["maximize"] * len(metrics), metric_names=metrics)
    searcher = SweepSearch(space=_space(cfg, options), metric=metrics if multi else SINGLE_METRIC,
                           mode=["max", "max"] if multi else "max", sampler=_sampler(s.sampler, multi, cfg.student.seed),
                           points_to_evaluate=_points(cfg, options), storage=journal, study_name=study)
    scheduler = FIFOScheduler()
    if s.scheduler.kind == "asha":
        max_epochs = max(cfg.student.epochs, *_epoch_choices(s.options.train))
        scheduler = ASHAScheduler(time_attr="training_iteration", metric="val_w_robust", mode="max", max_t=max_epochs + 1,
                                  grace_period=s.scheduler.grace_period, reduction_factor=s.scheduler.reduction_factor)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=s.num_samples,
                           max_concurrent_trials=s.max_concurrent, trial_dirname_creator=lambda t: t.trial_id)


def _sampler(name: str, multi: bool, seed: int) -> Any:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2" or (name == "auto" and multi):
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _epoch_choices(train: dict[str, Any]) -> list[int]:
    epochs = train.get("epochs", [])
    if isinstance(epochs, dict):
        return [int(epochs["high"])]
    return [int(e) for e in epochs] if isinstance(epochs, list) else [int(epochs)]


def checkpoint_uri(checkpoint: Any) -> str:
    """Where a Ray Train checkpoint lives, as a path or an s3:// / gs:// URI."""
    fs = checkpoint.filesystem
    scheme = getattr(fs, "type_name", "local")
    return checkpoint.path if scheme == "local" else f"{'gs' if scheme == 'gcs' else scheme}://{checkpoint.path}"


def trial_config(cfg: SweepConfig, sample: dict[str, Any], teacher_paths: dict[str, str], name: str = "trial") -> TrainConfig:
    """The student config with a sampled trial's overrides and its teachers' checkpoint paths."""
    merged = merge_dicts(to_dict(cfg.student), sample["overrides"])
    merged["method"] = sample["overrides"]["method"]  # a method's parameters never mix with another's
    merged.update(name=name, teachers=[teacher_paths[t] for t in sample["teacher_names"]])
    try:
        return from_dict(TrainConfig, merged)
    except ConfigError as err:
        raise err.under("search.options.train") from None
