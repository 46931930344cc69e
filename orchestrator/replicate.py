"""The method comparison's training (a sweep's stage after the search, when `compare.seeds` is
set): the best configuration of each searched method and each baseline without distillation,
trained again with fresh seeds as parallel Ray Tune trials, one Ray Train run each.

A run is a cell (label, seed); its row `replicate/<sweep>/<label>/<seed>` lands when it finishes.
A killed stage resumes: only cells without a row run again, each from its Ray Train checkpoint
(its run name is stable); a sweep given more seeds trains only the new ones. Seeds are the
student's seed + 1, + 2, ...: the search trained the selected configuration with the student's
seed, and running that again would score the selected run a second time (its luck included)."""
from __future__ import annotations

from functools import partial
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.config import SweepConfig
from orchestrator.console import TrialProgress, say, trial_label
from orchestrator.evaluate import Target
from orchestrator.ray_env import driver_resources
from orchestrator.ray_train import run_training
from orchestrator.results import ResultsStore
from orchestrator.search import checkpoint_uri, trial_config
from orchestrator.storage import Storage
from orchestrator.trials import best_per_method, trial_params
from trainers.config import from_dict, to_dict

BASELINE_SUFFIX = "-no-distill"


def seeds(cfg: SweepConfig) -> list[int]:
    return [cfg.student.seed + k for k in range(1, cfg.compare.seeds + 1)]


def plan_cells(cfg: SweepConfig, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (configuration, seed) of the comparison: each method's best search trial, then each
    baseline (the student config with that training method and no teachers)."""
    methods = cfg.search.options.method
    best = best_per_method(trials, methods if isinstance(methods, list) else [methods])
    configs = [{"label": method, "source": t["run"], "overrides": t["metrics"]["overrides"],
                "teacher_names": t["metrics"]["teachers"]} for method, t in best.items()]
    configs += [{"label": b["name"] + BASELINE_SUFFIX, "source": "baseline", "overrides": {"method": b},
                 "teacher_names": []} for b in cfg.compare.baseline_methods()]
    return [{**c, "seed": seed} for c in configs for seed in seeds(cfg)]


def cell_key(sweep: str, cell: dict[str, Any]) -> str:
    return f"replicate/{sweep}/{cell['label']}/{cell['seed']}"


def replicate_driver(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One comparison run: train the cell's configuration with its seed, select on validation."""
    cfg, cell = from_dict(SweepConfig, setup["sweep"]), config["cell"]
    label = trial_label(config, "")
    train = trial_config(cfg, cell, setup["teacher_paths"], name=label).replace(seed=cell["seed"])
    storage = Storage(cfg.storage)
    result = run_training(train, name=f"compare-{cfg.name}-{label}", storage=storage, resources=cfg.resources.trial,
                          tensorboard_dir=storage.uri_of("tensorboard", cfg.name, "compare", cell["label"],
                                                         f"seed{cell['seed']}"),
                          hparams={**trial_params(cell), "seed": cell["seed"]}, results_uri=storage.uri,
                          sweep=cfg.name, callbacks=[TuneReportCallback()])
    checkpoint = result.checkpoint and f"{checkpoint_uri(result.checkpoint)}/best"
    ResultsStore(storage).append([{"key": cell_key(cfg.name, cell), "kind": "replicate", "sweep": cfg.name,
                                   "run": label, "metrics": {**cell, "final": result.metrics,
                                                             "checkpoint": checkpoint}}])


def replicate(cfg: SweepConfig, storage: Storage, teacher_paths: dict[str, str]) -> list[Target]:
    """Train the comparison's missing runs; return every run as an evaluation target."""
    store = ResultsStore(storage)
    cells = plan_cells(cfg, store.read(kind="trial", sweep=cfg.name))
    done = store.keys(kind="replicate", sweep=cfg.name)
    missing = [c for c in cells if cell_key(cfg.name, c) not in done]
    say(f"   {len(cells) // max(1, cfg.compare.seeds)} configurations x {cfg.compare.seeds} seeds; "
        f"{len(cells) - len(missing)} runs done, {len(missing)} to train")
    if missing:
        if storage.exists("tune_compare", cfg.name):  # an interrupted stage: its cells resume by run name
            storage.delete_dir("tune_compare", cfg.name)
        setup = {"sweep": to_dict(cfg), "teacher_paths": teacher_paths}
        trainable = tune.with_resources(tune.with_parameters(replicate_driver, setup=setup), driver_resources())
        finished = partial(_count, storage.uri, cfg.name)
        tuner = tune.Tuner(trainable, param_space={"cell": tune.grid_search(missing)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=cfg.search.max_concurrent,
                                                       trial_dirname_creator=lambda t: t.trial_id),
                           run_config=tune.RunConfig(name=cfg.name, storage_path=storage.uri_of("tune_compare"),
                                                     verbose=0, callbacks=[TrialProgress(len(cells), finished)],
                                                     failure_config=tune.FailureConfig(max_failures=1)))
        tuner.fit()
    rows = {r["key"]: r for r in store.read(kind="replicate", sweep=cfg.name)}
    return [Target(rows[k]["metrics"]["checkpoint"], _run_name(rows[k]["metrics"]))
            for k in (cell_key(cfg.name, c) for c in cells) if k in rows and rows[k]["metrics"]["checkpoint"]]


def _run_name(cell: dict[str, Any]) -> str:
    return f"{cell['label']}/seed{cell['seed']}"


def _count(storage_uri: str, sweep: str) -> int:
    return len(ResultsStore(Storage(storage_uri)).keys(kind="replicate", sweep=sweep))
