"""Robustness evaluation of checkpoints with an attack suite, sharded over the actor pool
(`python -m orchestrator.evaluate`, and stage 3 of a sweep).

Plan (checkpoint x attack x shard) tasks, skip those already in the results store (keyed by the
weights' hash, the attack and its parameters, the shard and the seed), run the rest on the pool,
append one row per task as it finishes, then summarize from the stored per-point masks:
clean, robust and W-Robust per attack, and the per-point worst case over the suite.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from attacks import AttackSpec
from attacks.autoattack import VERSION as AUTOATTACK_VERSION
from orchestrator import console
from orchestrator.eval_pool import EvalTask, run_local, run_pool
from orchestrator.ray_env import init_ray
from orchestrator.results import ResultsStore
from orchestrator.sanity import SanityParams, plan_confirmations, plan_sanity, sanity_line, sanity_row
from orchestrator.storage import Storage, localize
from orchestrator.summary import plan_entries
from orchestrator.teacher_registry import TeacherRegistry
from trainers.checkpoint import checkpoint_dir, read_document, verify_checkpoint
from trainers.config import ConfigError, absolute_path
from trainers.data import load_dataset

SUITES = Path(__file__).with_name("suites.yaml")


def load_suite(name_or_path: str) -> list[AttackSpec]:
    """A named suite from suites.yaml, or a YAML file with a list of {name, label, params}."""
    presets = yaml.safe_load(SUITES.read_text())
    if name_or_path in presets:
        entries, where = presets[name_or_path], f"suite {name_or_path!r}"
    elif Path(name_or_path).is_file():
        try:
            entries, where = yaml.safe_load(Path(name_or_path).read_text()), name_or_path
        except (yaml.YAMLError, UnicodeDecodeError):
            raise ConfigError("suite", f"{name_or_path}: not valid YAML (expected a list of attacks)") from None
    else:
        raise ConfigError("suite", f"{name_or_path!r} is neither a suite ({', '.join(presets)}) nor a YAML file")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("suite", f"{where}: expected a non-empty list of attacks")
    specs = []
    names: dict[str, int | None] = {"clean": None, "worst case": None}  # index in the suite; None: the report's
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - {"name", "label", "params"} or "name" not in entry:
            raise ConfigError(f"suite[{i}]", "expected {name, label?, params?}")
        try:
            spec = AttackSpec(entry["name"], dict(entry.get("params") or {}), entry.get("label", ""))
        except ValueError as err:
            raise ConfigError(f"suite[{i}]", str(err)) from None
        if spec.display in names:  # results are grouped by name: two attacks under one would be averaged
            other = names[spec.display]
            taken = "a row of the report" if other is None else f"the name of suite[{other}] too"
            raise ConfigError(f"suite[{i}]", f"{spec.display!r} is {taken}; give each attack a distinct label")
        names[spec.display] = i
        specs.append(spec)
    return specs


@dataclass(frozen=True)
class Target:
    """A checkpoint to evaluate and the name it is reported under."""

    path: str
    run: str


def plan(targets: list[Target], *, data: dict[str, Any], split: str, specs: list[AttackSpec],
         shard_size: int, seed: int, batch_size: int, eps: float | None = None) -> list[EvalTask]:
    """Validate everything and list the tasks; raises ConfigError/CheckpointError before any work.
    Every checkpoint is opened and its weights checked against its sidecar and architecture here,
    on the driver: rows are keyed by the sidecar's hash, so a damaged file must never reach them."""
    for field_name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if value < 1:
            raise ConfigError(field_name, f"must be >= 1, got {value}")
    dataset = load_dataset(**data)
    info, n = dataset.info, len(dataset.split(split))
    eps = info.eps if eps is None else eps
    if not 0 < eps <= 1:
        raise ConfigError("eps", f"must be in (0, 1] (images are in [0, 1]), got {eps}")
    specs = [s.with_defaults(eps=eps) for s in specs]
    tasks = []
    for target in targets:
        sidecar = verify_checkpoint(localize(target.path))
        if sidecar.get("dataset") != info.name or sidecar.get("num_classes") != info.num_classes:
            raise ConfigError("checkpoints", f"{target.path} is a {sidecar.get('num_classes')}-class model for "
                              f"{sidecar.get('dataset')!r}; evaluating on {info.name!r} ({info.num_classes} classes)")
        for spec in specs:
            for shard, start in enumerate(range(0, n, shard_size)):
                tasks.append(EvalTask(target.path, sidecar["weights_sha256"], target.run, data, split, shard, start,
                                      min(start + shard_size, n), spec, seed, batch_size, eps))
    return list({t.key + t.run: t for t in tasks}.values())


def execute(tasks: list[EvalTask], store: ResultsStore, *, sweep: str, actors: int = 1, cpus_per_actor: float = 1.0,
            gpus_per_actor: float = 0.0, local: bool = False, sanity: SanityParams | None = SanityParams(),
            name_field: str = "name", extend: bool = False) -> int:
    """Run the tasks whose rows are not in the store yet, and the sanity checks of every evaluated
    checkpoint (orchestrator.sanity) unless `sanity` is None; returns how many suite tasks ran.
    The plan is stored once: the same evaluation resumes, another under the same name (the
    `name_field` of the error) is refused before anything is written; with `extend` (a sweep given
    more comparison seeds) a plan holding every task of the stored one replaces it."""
    threat = {"dataset": tasks[0].data["name"], "split": tasks[0].split, "eps": tasks[0].eps} if tasks else {}
    metrics = {"tasks": plan_entries(tasks), **threat}
    earlier = store.read(kind="plan", sweep=sweep)
    same = bool(earlier) and _canonical(earlier[0]["metrics"]) == _canonical(metrics)
    if earlier and not same and not (extend and _extends(earlier[0]["metrics"], metrics)):
        raise ConfigError(name_field, f"an evaluation named {sweep!r} of other checkpoints, attacks or data exists in "
                          f"{store.storage.uri}; give this one another name")
    if not same:
        store.append([{"key": f"plan/{sweep}", "kind": "plan", "sweep": sweep, "metrics": metrics}])
    checks = [] if sanity is None else plan_sanity(tasks, store, sweep=sweep, params=sanity)
    done = store.keys(kind="eval")
    pending = checks + [t for t in tasks if t.key not in done]  # a clean row lands with its shard's first attack row
    pool = dict(local=local, actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor)
    _run(pending, store, done, sweep=sweep, **pool)
    if sanity is not None:  # re-attacks the points only Square broke: reads the suite's rows, so after them
        _run(plan_confirmations(tasks, store, sweep=sweep, params=sanity), store, done, sweep=sweep, **pool)
    return len(pending) - len(checks)


def _run(pending: list, store: ResultsStore, done: set[str], *, sweep: str, local: bool, actors: int,
         cpus_per_actor: float, gpus_per_actor: float) -> None:
    """Run tasks (locally or on the pool) and append each one's rows as it finishes."""
    if not pending:
        return
    if not local:
        init_ray()
    results: Iterable = run_local(pending) if local else run_pool(
        pending, actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor)
    with console.progress(len(pending), "evaluation", "tasks") as bar:
        for task, res in results:
            bar.update(1)
            if not isinstance(task, EvalTask):  # the sanity checks' tasks
                store.append([sanity_row(task, res, sweep)])
                console.say(sanity_line(task, res))
                continue
            rows = [_row(task, res, sweep)]
            if task.clean_key not in done:
                done.add(task.clean_key)
                rows.append({**rows[0], "key": task.clean_key, "attack": "clean", "attack_params": {},
                             "correct": res["clean_correct"], "mask": res["clean"]})
            store.append(rows)
            bar.set_postfix_str(f"{task.run} {task.spec.display} shard {task.shard} ({res['seconds']:.1f} s)",
                                refresh=False)


def _canonical(metrics: dict[str, Any]) -> str:
    return json.dumps(metrics, sort_keys=True, default=float)


def _extends(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """`new` keeps the threat model and every task of `old`, adding some."""
    tasks = {_canonical(t) for t in new["tasks"]}
    return ({k: v for k, v in old.items() if k != "tasks"} == {k: v for k, v in new.items() if k != "tasks"}
            and all(_canonical(t) in tasks for t in old["tasks"]))


def _row(task: EvalTask, res: dict[str, Any], sweep: str) -> dict[str, Any]:
    return {"key": task.key, "kind": "eval", "sweep": sweep, "run": task.run, "split": task.split,
            "attack": task.spec.display, "attack_params": {"name": task.spec.name, **task.spec.params},
            "shard": task.shard, "n": res["n"], "correct": res["robust_correct"], "mask": res["robust"],
            "metrics": {"checkpoint": task.checkpoint, "checkpoint_id": task.checkpoint_id, "seed": task.shard_seed,
                        "start": task.start, "stop": task.stop, "batch_size": task.batch_size,
                        "seconds": res["seconds"], "autoattack_version": AUTOATTACK_VERSION,
                        "library_warnings": res.get("warnings", [])}}


def evaluate_checkpoints(refs: list[str], *, storage: Storage, name: str, suite: str = "paper", split: str = "test",
                         root: str | None = None, eps: float | None = None, shard_size: int = 1000,
                         batch_size: int = 256, seed: int = 0, actors: int = 2, cpus_per_actor: float = 1.0,
                         gpus_per_actor: float = 0.0, local: bool = False,
                         sanity: SanityParams | None = SanityParams()) -> tuple[int, int]:
    """Evaluate checkpoints (paths, or teachers by registry name) under the rows of `name`;
    returns (tasks run, tasks planned)."""
    registry = TeacherRegistry(storage)
    targets = [Target(registry.resolve(ref, "--checkpoints"), "/".join(Path(ref).parts[-2:]) if Path(ref).exists()
                      else ref) for ref in refs]
    datasets = {read_document(checkpoint_dir(localize(t.path)), "model").get("dataset") for t in targets}
    if len(datasets) != 1:
        raise ConfigError("checkpoints", f"checkpoints are for different datasets {sorted(map(str, datasets))}")
    data = {"name": datasets.pop(), **({"root": absolute_path(root)} if root else {})}
    tasks = plan(targets, data=data, split=split, specs=load_suite(suite), shard_size=shard_size,
                 seed=seed, batch_size=batch_size, eps=eps)
    ran = execute(tasks, ResultsStore(storage), sweep=name, actors=actors, cpus_per_actor=cpus_per_actor,
                  gpus_per_actor=gpus_per_actor, local=local, sanity=sanity, name_field="--name")
    return ran, len(tasks)


if __name__ == "__main__":
    from orchestrator.entry import main

    main("evaluate")
