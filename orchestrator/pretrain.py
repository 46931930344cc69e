"""Teacher pretraining: every spec not yet in the registry runs as its own Ray Train job, as many
at once as the cluster fits; finished teachers are published to the registry."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from orchestrator.config import PretrainConfig
from orchestrator.console import progress, say, teacher_line
from orchestrator.ray_env import check_fits, check_shared_storage, init_ray
from orchestrator.config import Resources
from orchestrator.ray_train import fetch_artifacts, raise_failure, run_training
from orchestrator.storage import Storage, localize
from orchestrator.teacher_registry import TeacherRegistry, TeacherSpec
from trainers.checkpoint import CheckpointError, verify_checkpoint
from trainers.config import ConfigError, to_dict
from trainers.loop import preflight


def teacher_run_name(spec: TeacherSpec) -> str:
    return f"teacher-{spec.name}-{spec.hash[:8]}"


def train_teacher(spec: TeacherSpec, storage_uri: str, resources: Resources, force: bool) -> dict[str, Any]:
    storage = Storage(storage_uri)
    name = teacher_run_name(spec)
    if force and storage.exists("ray", name):
        storage.delete_dir("ray", name)  # a stable name would otherwise resume it
    result = run_training(spec.train.replace(name=spec.name), name=name, storage=storage, resources=resources,
                          tensorboard_dir=storage.uri_of("tensorboard", "teachers", spec.name),
                          hparams={"teacher": spec.name, "arch": spec.train.model.arch, **to_dict(spec.train.method)})
    raise_failure(result.error, f"teacher {spec.name}")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = fetch_artifacts(result, Path(tmp))
        return TeacherRegistry(storage).register(spec, artifacts, result.metrics)


def _train_all(pending: list[TeacherSpec], storage: Storage, cfg: PretrainConfig, force: bool) -> None:
    """Train the teachers as Ray tasks (each a Ray Train job), as many at once as the cluster fits."""
    parallel = check_fits("resources", cfg.resources.per_worker(), cfg.resources.num_workers, cfg.autoscaling)
    task = ray.remote(num_cpus=0)(train_teacher)
    started = time.time()
    waiting = [task.remote(spec, storage.uri, cfg.resources, force) for spec in pending[:parallel]]
    queue = pending[parallel:]
    with progress(len(pending), "teachers", "trained") as bar:
        while waiting:
            (ref,), waiting = ray.wait(waiting, num_returns=1)
            say(teacher_line(ray.get(ref)["metrics"], f"trained, {time.time() - started:.0f} s into the stage"))
            bar.update(1)
            if queue:
                waiting.append(task.remote(queue.pop(0), storage.uri, cfg.resources, force))


def check_checkpoint_teachers(specs: list[TeacherSpec]) -> None:
    """Teachers given as checkpoints must open (sidecar, weights' hash, tensors against the
    architecture) and be models of their config's dataset."""
    for spec in specs:
        if not spec.checkpoint:
            continue
        try:
            sidecar = verify_checkpoint(localize(spec.checkpoint))
        except CheckpointError as err:
            raise ConfigError("teachers", f"{spec.name}: {err}") from None
        if sidecar.get("dataset") != spec.train.data.name:
            raise ConfigError("teachers", f"{spec.name}: {spec.checkpoint} is a model for {sidecar.get('dataset')!r}, "
                              f"not {spec.train.data.name!r}")


def pretrain(cfg: PretrainConfig, *, force: bool = False, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Train the missing teachers (all named ones with force); return every requested registry row."""
    unknown = sorted(set(only or []) - {t.name for t in cfg.teachers})
    if unknown:
        raise ConfigError("teachers", f"no teacher named {unknown} in the config")
    specs = [t for t in cfg.teachers if not only or t.name in only]
    external = [s for s in specs if s.checkpoint]
    check_checkpoint_teachers(external)
    specs = [s for s in specs if not s.checkpoint]
    for i, spec in enumerate(specs):
        try:
            preflight(spec.train, spec.train.data.load().info)
        except ConfigError as err:
            raise err.under(f"teachers[{i}].train") from None
    storage = Storage(cfg.storage)
    registry = TeacherRegistry(storage)
    pending = [s for s in specs if force or registry.lookup(s) is None]
    for spec in specs:
        if spec not in pending:
            say(teacher_line(registry.lookup(spec)["metrics"], "in the registry, not retrained"))
    if pending:
        init_ray()
        check_shared_storage(cfg.storage, shared=cfg.storage_shared, autoscaling=cfg.autoscaling)
        _train_all(pending, storage, cfg, force)
    return [{"key": s.name, "metrics": {"name": s.name, "path": s.checkpoint}} for s in external] + [
        registry.lookup(s) for s in specs]


if __name__ == "__main__":
    from orchestrator.entry import main

    main("pretrain")
