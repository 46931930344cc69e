"""The stages of a sweep: (1) pretrain missing teachers, (2) Ray Tune + Optuna over distillation
trials, each a Ray Train run, (3) evaluate the best trials and baselines on the test split with
the actor pool, (4) the report. Each trial is a Tune function trainable (the trial's driver) that
builds a TorchTrainer and calls fit(); Ray Train V2 refuses the older Tuner(TorchTrainer) shape
(docs/clusters.md#how-the-project-uses-ray)."""
from __future__ import annotations

import json
from functools import partial
from typing import Any

import optuna
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from orchestrator.console import TrialProgress, say, trial_label
from orchestrator.evaluation import Target, execute, load_suite, plan
from orchestrator.pretraining import PretrainConfig, pretrain
from orchestrator.ray_env import check_fits, check_shared_storage, driver_resources, init_ray
from orchestrator.ray_train import run_training
from orchestrator.results import ResultsStore
from orchestrator.sanity import sanity_params
from orchestrator.storage import Storage
from orchestrator.sweep_config import SweepConfig, trial_config, validate
from orchestrator.tensorboard import flat_hparams
from search_spaces import SPACES
from trainers.configs import ConfigError, from_dict, to_dict

SINGLE_METRIC = "best_val_w_robust"
MULTI_METRICS = ["best_val_clean", "best_val_pgd"]


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
    checkpoint = None if result.checkpoint is None else _uri(result.checkpoint) + "/best"
    ResultsStore(storage).append([trial_row(cfg.name, trial_id, config, result.metrics, checkpoint,
                                            None if result.error is None else str(result.error))])
    if result.error is not None:
        raise result.error


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled parameters, flat (TensorBoard HParams and the report's parameter column)."""
    params = flat_hparams({k: v for k, v in config.items() if k not in ("overrides", "teacher_names")})
    params["teachers"] = "+".join(config["teacher_names"])
    return params


def trial_row(sweep: str, trial_id: str, config: dict[str, Any], final: dict[str, Any], checkpoint: str | None,
              error: str | None, stopped: bool = False) -> dict[str, Any]:
    return {"key": f"trial/{sweep}/{trial_id}", "kind": "trial", "sweep": sweep, "run": trial_id,
            "metrics": {"method": config["overrides"]["method"]["name"], "teachers": config["teacher_names"],
                        "params": trial_params(config), "final": final, "checkpoint": checkpoint, "error": error,
                        "stopped": stopped}}


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


def run_sweep(cfg: SweepConfig, *, resume: bool = False) -> list[dict[str, Any]]:
    """All four stages; returns the evaluated rows' summary (see orchestrator.reporting)."""
    validate(cfg)
    storage = Storage(cfg.storage)
    resume = _claim(cfg, storage, resume)
    init_ray()
    res = cfg.resources
    check_shared_storage(cfg.storage, shared=cfg.storage_shared, autoscaling=res.autoscaling)
    check_fits("resources.trial", res.trial.per_worker(), res.trial.num_workers, res.autoscaling)
    check_fits("resources.pretrain", res.pretrain.per_worker(), res.pretrain.num_workers, res.autoscaling)
    e = cfg.evaluation
    check_fits("evaluation", {"CPU": e.cpus_per_actor, **({"GPU": e.gpus_per_actor} if e.gpus_per_actor else {})},
               1, res.autoscaling)
    storage.write_bytes(json.dumps(to_dict(cfg), sort_keys=True).encode(), *_record(cfg))
    specs = load_suite(e.suite)
    say(f"== {cfg.name}: 1/4 teachers ({len(cfg.teachers)})")
    rows = pretrain(PretrainConfig(storage=cfg.storage, storage_shared=cfg.storage_shared, resources=res.pretrain,
                                   autoscaling=res.autoscaling, teachers=cfg.teachers))
    store = ResultsStore(storage)
    store.append([{"key": f"teachers/{cfg.name}", "kind": "teachers", "sweep": cfg.name,
                   "metrics": {"teachers": [r["metrics"] for r in rows]}}])
    teacher_paths = {r["metrics"]["name"]: r["metrics"]["path"] for r in rows}
    say(f"== {cfg.name}: 2/4 search ({cfg.search.num_samples} trials, {cfg.search.max_concurrent} at a time)")
    search(cfg, storage, teacher_paths, resume)
    say(f"== {cfg.name}: 3/4 evaluation ({e.suite} suite, test split)")
    targets = select_trials(store.read(kind="trial", sweep=cfg.name), cfg) + [
        Target(teacher_paths.get(b, b), f"teacher:{b}" if b in teacher_paths else b) for b in e.baselines]
    tasks = plan(targets, data=cfg.data.dataset_kwargs(), split="test", specs=specs, shard_size=e.shard_size,
                 seed=e.seed, batch_size=e.batch_size)
    execute(tasks, store, sweep=cfg.name, actors=e.actors, cpus_per_actor=e.cpus_per_actor,
            gpus_per_actor=e.gpus_per_actor, sanity=sanity_params(e.sanity_points))
    return tasks


def _claim(cfg: SweepConfig, storage: Storage, resume: bool) -> bool:
    """Whether to resume. A sweep's config is recorded when it starts (run_sweep, once the cluster
    is known to fit it); running the same config again continues it (and only re-reports a
    finished one), a different config under the same name is refused, so nothing in an existing
    storage path is overwritten."""
    record = _record(cfg)
    config = json.dumps(to_dict(cfg), sort_keys=True)
    started = storage.exists("tune", cfg.name)
    if storage.exists(*record) and storage.read_bytes(*record).decode() != config:
        raise ConfigError("name", f"a different sweep named {cfg.name!r} exists in {storage.uri}; choose another "
                          "name (--name) or storage")
    if resume and not started:
        raise ConfigError("name", f"no sweep {cfg.name!r} in {storage.uri} to resume")
    if started and not storage.exists(*record):
        raise ConfigError("name", f"{storage.uri_of('tune', cfg.name)} exists but was not written by this sweep; "
                          "choose another name (--name) or storage")
    if started:
        say(f"== {cfg.name}: continuing the sweep found in {storage.uri}")
    return started


def _record(cfg: SweepConfig) -> tuple[str, str]:
    return "sweeps", f"{cfg.name}.json"


def search(cfg: SweepConfig, storage: Storage, teacher_paths: dict[str, str], resume: bool) -> None:
    setup = {"sweep": to_dict(cfg), "teacher_paths": teacher_paths}
    trainable = tune.with_resources(tune.with_parameters(trial_driver, setup=setup), driver_resources())
    path = storage.uri_of("tune", cfg.name)
    # A restored Tuner runs the callbacks saved with its first run: they hold no state of their own.
    callbacks = [StoppedTrialRows(storage.uri, cfg.name),
                 TrialProgress(cfg.search.num_samples, partial(finished_trials, storage.uri, cfg.name))]
    if resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, tune_config=_tune_config(cfg), run_config=tune.RunConfig(
            name=cfg.name, storage_path=storage.uri_of("tune"), verbose=0, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=1)))
    tuner.fit()


def _tune_config(cfg: SweepConfig) -> tune.TuneConfig:
    s = cfg.search
    multi = s.objective == "multi"
    searcher = OptunaSearch(space=partial(SPACES[s.space], options=s.options), metric=MULTI_METRICS if multi else SINGLE_METRIC,
                            mode=["max", "max"] if multi else "max", sampler=_sampler(s.sampler, multi, cfg.student.seed),
                            points_to_evaluate=[dict(p) for p in s.points] or None)
    scheduler = FIFOScheduler()
    if s.scheduler.kind == "asha":
        max_epochs = max(cfg.student.epochs, *_epoch_choices(s.options))
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


def _epoch_choices(options: dict[str, Any]) -> list[int]:
    epochs = (options.get("train") or {}).get("epochs", [])
    if isinstance(epochs, dict):
        return [int(epochs["high"])]
    return [int(e) for e in epochs] if isinstance(epochs, list) else [int(epochs)]


def select_trials(trials: list[dict[str, Any]], cfg: SweepConfig) -> list[Target]:
    """The best N finished trials: by validation W-Robust, or from the Pareto front (multi)."""
    done = [t for t in trials if t["metrics"]["checkpoint"] and not t["metrics"]["error"]]
    done.sort(key=lambda t: -t["metrics"]["final"].get(SINGLE_METRIC, float("-inf")))
    if cfg.search.objective == "multi":
        front = pareto_front([(t["metrics"]["final"].get(MULTI_METRICS[0], 0.0), t["metrics"]["final"].get(MULTI_METRICS[1], 0.0))
                              for t in done])
        done = [t for i, t in enumerate(done) if i in front]
    return [Target(t["metrics"]["checkpoint"], f"{t['metrics']['method']}-{t['run']}") for t in done[:cfg.evaluation.top_n]]


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of points no other point dominates (both coordinates maximized)."""
    return {i for i, (a, b) in enumerate(points)
            if not any((c >= a and d >= b) and (c > a or d > b) for c, d in points)}


def _uri(checkpoint: Any) -> str:
    fs = checkpoint.filesystem
    scheme = getattr(fs, "type_name", "local")
    return checkpoint.path if scheme == "local" else f"{'gs' if scheme == 'gcs' else scheme}://{checkpoint.path}"
