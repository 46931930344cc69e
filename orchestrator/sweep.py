"""The main job, `python -m orchestrator.sweep`: a sweep config (orchestrator.config) validated
before anything starts, then its four stages: (1) pretrain the missing teachers, (2) the search
(orchestrator.search), (3) evaluate the best trials and the baselines on the test split with the
actor pool, (4) the report."""
from __future__ import annotations

import json
from typing import Any

import optuna
import yaml

from orchestrator.config import PretrainConfig, SweepConfig
from orchestrator.console import say
from orchestrator.evaluate import Target, execute, load_suite, plan
from orchestrator.pretrain import check_checkpoint_teachers, pretrain
from orchestrator.ray_env import check_fits, check_shared_storage, init_ray
from orchestrator.replicate import replicate
from orchestrator.results import ResultsStore
from orchestrator.sanity import sanity_params
from orchestrator.search import search, trial_config
from orchestrator.storage import Storage
from orchestrator.teacher_registry import TeacherRegistry
from orchestrator.trials import select_trials
from search_spaces import SPACES
from trainers.config import ConfigError, check, to_dict
from trainers.loop import preflight
from trainers.methods import method_config


def sample_trials(cfg: SweepConfig, n: int = 24) -> list[dict[str, Any]]:
    """Draw configurations from the space without training (validation and dry runs)."""
    space = SPACES[cfg.search.space]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        try:
            out.append(space(trial, cfg.search.options.plain()))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError("search.options", f"the space cannot be sampled: {err}") from None
        study.tell(trial, 0.0)
    return out


def validate(cfg: SweepConfig) -> None:
    """Everything that can be checked without training: methods, teachers, options, datasets."""
    teacher_names = {t.name for t in cfg.teachers}
    samples = sample_trials(cfg)
    for sample in samples:
        for name in sample["teacher_names"]:
            check(name in teacher_names, "search.options", f"teacher {name!r} is not in teachers "
                  f"({', '.join(sorted(teacher_names)) or 'none'})")
        method = sample["overrides"]["method"]
        try:
            method_config(method)
        except ConfigError as err:
            raise err.under(f"search.options.{method['name']}") from None
    check_checkpoint_teachers(list(cfg.teachers))
    try:
        load_suite(cfg.evaluation.suite)
    except ConfigError as err:
        raise err.under("evaluation") from None
    for i, name in enumerate(cfg.evaluation.baselines):
        check(name in teacher_names or "/" in name, f"evaluation.baselines[{i}]",
              f"{name!r} is neither a teacher of this sweep nor a checkpoint path")
    datasets = {t.train.data.name for t in cfg.teachers} | {cfg.student.data.name}
    check(len(datasets) == 1, "data", f"teachers and students must share one dataset, got {sorted(datasets)}")
    info = cfg.data.load().info
    for i, teacher in enumerate(cfg.teachers):
        try:
            preflight(teacher.train, info)
        except ConfigError as err:
            raise err.under(f"teachers[{i}].train") from None
    for sample in samples:
        trial = trial_config(cfg, sample, {n: n for n in sample["teacher_names"]})
        try:
            preflight(trial, info)
        except ConfigError as err:
            raise err.under("student") from None
    for i, method in enumerate(cfg.compare.baseline_methods()):
        try:
            preflight(trial_config(cfg, {"overrides": {"method": method}, "teacher_names": []}, {}), info)
        except ConfigError as err:
            raise err.under(f"compare.baselines[{i}]") from None


def run_sweep(cfg: SweepConfig, *, resume: bool = False) -> list[dict[str, Any]]:
    """Stages 1-3 (the caller builds the report from the store); returns the evaluation tasks."""
    validate(cfg)
    storage = Storage(cfg.storage)
    resume = _claim(cfg, storage, resume)
    if resume:
        say(f"== {cfg.name}: continuing the sweep found in {storage.uri}")
    init_ray()
    res = cfg.resources
    check_shared_storage(cfg.storage, shared=cfg.storage_shared, autoscaling=res.autoscaling,
                         autoscaling_field="resources.autoscaling")
    check_fits("resources.trial", res.trial.per_worker(), res.trial.num_workers, res.autoscaling)
    check_fits("resources.pretrain", res.pretrain.per_worker(), res.pretrain.num_workers, res.autoscaling)
    e = cfg.evaluation
    check_fits("evaluation", {"CPU": e.cpus_per_actor, **({"GPU": e.gpus_per_actor} if e.gpus_per_actor else {})},
               1, res.autoscaling)
    storage.write_bytes(json.dumps(to_dict(cfg), sort_keys=True).encode(), *_record(cfg))
    specs = load_suite(e.suite)
    stages = stage_count(cfg)
    say(f"== {cfg.name}: 1/{stages} teachers ({len(cfg.teachers)})")
    rows = pretrain(PretrainConfig(storage=cfg.storage, storage_shared=cfg.storage_shared, resources=res.pretrain,
                                   autoscaling=res.autoscaling, teachers=cfg.teachers))
    store = ResultsStore(storage)
    store.append([{"key": f"teachers/{cfg.name}", "kind": "teachers", "sweep": cfg.name,
                   "metrics": {"teachers": [r["metrics"] for r in rows]}}])
    teacher_paths = {r["metrics"]["name"]: r["metrics"]["path"] for r in rows}
    say(f"== {cfg.name}: 2/{stages} search ({cfg.search.num_samples} trials{' per method' if _per_method(cfg) else ''}, "
        f"{cfg.search.max_concurrent} at a time)")
    search(cfg, storage, teacher_paths, resume)
    compared = []
    if cfg.compare.seeds:
        say(f"== {cfg.name}: 3/{stages} comparison (the best of each method and the baselines, "
            f"{cfg.compare.seeds} training seeds each)")
        compared = replicate(cfg, storage, teacher_paths)
    say(f"== {cfg.name}: {stages - 1}/{stages} evaluation ({e.suite} suite, test split)")
    targets = select_trials(store.read(kind="trial", sweep=cfg.name), cfg.search.objective, e.top_n) + compared + [
        Target(teacher_paths.get(b, b), f"teacher:{b}" if b in teacher_paths else b) for b in e.baselines]
    tasks = plan(targets, data=cfg.data.dataset_kwargs(), split="test", specs=specs, shard_size=e.shard_size,
                 seed=e.seed, batch_size=e.batch_size, eps=cfg.student.eps)  # the sweep's one threat model
    execute(tasks, store, sweep=cfg.name, actors=e.actors, cpus_per_actor=e.cpus_per_actor,
            gpus_per_actor=e.gpus_per_actor, sanity=sanity_params(e.sanity_points), extend=True)
    return tasks


def stage_count(cfg: SweepConfig) -> int:
    """Teachers, search, [comparison], evaluation, report."""
    return 5 if cfg.compare.seeds else 4


def _per_method(cfg: SweepConfig) -> bool:
    return cfg.search.budget == "per_method"


def dry_run(cfg: SweepConfig, *, resume: bool = False) -> str:
    """What `run_sweep` would do, from the validated config and what the storage already holds:
    nothing is trained, written or started (no Ray). The resolved config first, the plan last."""
    validate(cfg)
    storage = Storage(cfg.storage)
    state = "continues the sweep found there" if _claim(cfg, storage, resume) else "a new sweep"
    info = cfg.data.load().info
    eps = cfg.student.eps if cfg.student.eps is not None else info.eps
    registry, e, res = TeacherRegistry(storage), cfg.evaluation, cfg.resources
    lines = [f"== {cfg.name}: dry run (nothing is trained, written or started)", "resolved config:",
             yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip(), "",
             f"threat model: L-inf eps {eps:.6g} on {info.name} (selection on the validation split, "
             "evaluation on the test split)", f"storage: {storage.uri} ({state})", f"teachers ({len(cfg.teachers)}):"]
    for t in cfg.teachers:
        status = (f"checkpoint {t.checkpoint}" if t.checkpoint else
                  "in the registry" if registry.lookup(t) else f"to train ({t.train.epochs} epochs)")
        lines.append(f"  {t.name:<20} {t.train.model.arch:<14} {t.train.method.name:<10} {status}")
    s = cfg.search
    lines += [f"search: {s.num_samples} trials{' per method' if _per_method(cfg) else ''}, {s.max_concurrent} at a time, objective {s.objective}, space "
              f"{s.space} over {', '.join(s.options.method)}; first points: "
              + ("; ".join(" ".join(f"{k}={v}" for k, v in p.items()) for p in s.points) or "none"),
              "  drawn from the space (examples): " + "; ".join(
                  f"{x['overrides']['method']['name']} with {'+'.join(x['teacher_names'])}"
                  for x in sample_trials(cfg, min(3, s.num_samples)))]
    c = cfg.compare
    if c.seeds:
        baselines = ", ".join(b["name"] for b in c.baseline_methods()) or "none"
        lines.append(f"comparison: the best configuration of each method and the baselines without distillation "
                     f"({baselines}) trained again with {c.seeds} fresh seeds each, ranked by W-Robust ({c.metric})")
    attacks = ", ".join(spec.label for spec in load_suite(e.suite))
    lines += [f"evaluation: the best {e.top_n} trial(s) + baselines {', '.join(e.baselines) or 'none'}; suite "
              f"{e.suite} ({attacks}); sanity checks on {e.sanity_points or 'no'} points; {e.actors} actor(s) x "
              f"{e.cpus_per_actor:g} CPU" + (f" + {e.gpus_per_actor:g} GPU" if e.gpus_per_actor else ""),
              f"resources: trial {_workers(res.trial)}; pretrain {_workers(res.pretrain)}; "
              f"autoscaling {str(res.autoscaling).lower()}"]
    return "\n".join(lines)


def _workers(r: Any) -> str:
    return f"{r.num_workers} worker(s) x " + " + ".join(f"{v:g} {k}" for k, v in r.per_worker().items())


def _claim(cfg: SweepConfig, storage: Storage, resume: bool) -> bool:
    """Whether to resume. A sweep's config is recorded when it starts (run_sweep, once the cluster
    is known to fit it); running the same config again continues it (and only re-reports a
    finished one), a different config under the same name is refused, so nothing in an existing
    storage path is overwritten."""
    record = _record(cfg)
    started = storage.exists("tune", cfg.name)
    if storage.exists(*record) and not _same_sweep(json.loads(storage.read_bytes(*record)), to_dict(cfg)):
        raise ConfigError("name", f"a different sweep named {cfg.name!r} exists in {storage.uri}; choose another "
                          "name (--name) or storage (more compare.seeds extend it; nothing else may change)")
    if resume and not started:
        raise ConfigError("name", f"no sweep {cfg.name!r} in {storage.uri} to resume")
    if started and not storage.exists(*record):
        raise ConfigError("name", f"{storage.uri_of('tune', cfg.name)} exists but was not written by this sweep; "
                          "choose another name (--name) or storage")
    return started


def _same_sweep(recorded: dict[str, Any], config: dict[str, Any]) -> bool:
    """The same sweep, or the same with more comparison seeds (which extends it)."""
    old, new = (dict(c, compare={**(c.get("compare") or {}), "seeds": 0}) for c in (recorded, config))
    old_seeds = (recorded.get("compare") or {}).get("seeds", 0)
    return old == new and config["compare"]["seeds"] >= old_seeds


def _record(cfg: SweepConfig) -> tuple[str, str]:
    return "sweeps", f"{cfg.name}.json"


if __name__ == "__main__":
    from orchestrator.entry import main

    main("sweep")
