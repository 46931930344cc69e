"""Teacher pretraining: every spec not yet in the registry runs as its own Ray Train job, as many
at once as the cluster fits; finished teachers are published to the registry."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray

from orchestrator.ray_env import check_fits, init_ray
from orchestrator.ray_train import Resources, fetch_artifacts, run_training
from orchestrator.storage import Storage
from orchestrator.teacher_registry import TeacherRegistry, TeacherSpec, localize
from trainers.checkpoint import checkpoint_dir, read_document
from trainers.configs import ConfigError, check
from trainers.loop import preflight


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    storage: str = "runs"
    """Storage URI (local path, s3://, gs://) holding the registry, Ray runs and TensorBoard."""
    resources: Resources = field(default_factory=Resources)
    autoscaling: bool = False
    """The cluster can add nodes: don't refuse requests larger than what is there now."""
    teachers: tuple[TeacherSpec, ...] = ()

    def __post_init__(self) -> None:
        names = [t.name for t in self.teachers]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "teachers", f"duplicate teacher names {dup}")


def teacher_run_name(spec: TeacherSpec) -> str:
    return f"teacher-{spec.name}-{spec.hash[:8]}"


def train_teacher(spec: TeacherSpec, storage_uri: str, resources: Resources, force: bool) -> dict[str, Any]:
    storage = Storage(storage_uri)
    name = teacher_run_name(spec)
    if force and storage.exists("ray", name):
        storage.fs.delete_dir(storage.path("ray", name))  # a stable name would otherwise resume it
    result = run_training(replace(spec.train, name=spec.name), name=name, storage=storage, resources=resources,
                          tensorboard_dir=storage.uri_of("tensorboard", "teachers", spec.name),
                          hparams={"teacher": spec.name, "arch": spec.train.model.arch, **spec.train.method})
    if result.error is not None:
        raise RuntimeError(f"teacher {spec.name} failed: {result.error}")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = fetch_artifacts(result, Path(tmp))
        return TeacherRegistry(storage).register(spec, artifacts, result.metrics)


def pretrain(cfg: PretrainConfig, *, force: bool = False, only: list[str] | None = None) -> list[dict[str, Any]]:
    """Train the missing teachers (all named ones with force); return every requested registry row."""
    unknown = sorted(set(only or []) - {t.name for t in cfg.teachers})
    if unknown:
        raise ConfigError("teachers", f"no teacher named {unknown} in the config")
    specs = [t for t in cfg.teachers if not only or t.name in only]
    external = [s for s in specs if s.checkpoint]
    for spec in external:
        sidecar = read_document(checkpoint_dir(localize(spec.checkpoint)), "model")
        if sidecar.get("dataset") != spec.train.data.name:
            raise ConfigError("teachers", f"{spec.name}: {spec.checkpoint} is a model for {sidecar.get('dataset')!r}, "
                              f"not {spec.train.data.name!r}")
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
            print(f"teacher {spec.name}: already in the registry ({spec.hash}), not retrained", flush=True)
    if pending:
        init_ray()
        parallel = check_fits("resources", cfg.resources.per_worker(), cfg.resources.num_workers, cfg.autoscaling)
        task = ray.remote(num_cpus=0)(train_teacher)
        waiting = [(spec, task.remote(spec, storage.uri, cfg.resources, force)) for spec in pending[:parallel]]
        queue = pending[parallel:]
        while waiting:
            done, _ = ray.wait([ref for _, ref in waiting], num_returns=1)
            spec = next(s for s, ref in waiting if ref == done[0])
            waiting = [(s, r) for s, r in waiting if r != done[0]]
            row = ray.get(done[0])
            print(f"teacher {spec.name}: registered ({row['key']}) val clean {row['metrics'].get('val_clean', float('nan')):.2%} "
                  f"test clean {row['metrics'].get('test_clean', float('nan')):.2%} pgd {row['metrics'].get('test_pgd', float('nan')):.2%}",
                  flush=True)
            if queue:
                nxt = queue.pop(0)
                waiting.append((nxt, task.remote(nxt, storage.uri, cfg.resources, force)))
    return [{"key": s.name, "metrics": {"name": s.name, "path": s.checkpoint}} for s in external] + [
        registry.lookup(s) for s in specs]
