"""One distillation (or any training) run on Ray Train, with teachers taken from the registry or
from checkpoint paths; the final run folder lands in `<storage>/runs/<name>/`."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.ray_env import check_fits, check_shared_storage, init_ray
from orchestrator.ray_train import Resources, fetch_artifacts, run_training
from orchestrator.storage import Storage, resolve_storage
from orchestrator.teacher_registry import TeacherRegistry
from trainers import TrainConfig
from trainers.configs import ConfigError, check, config_hash, resolve_fields, to_dict
from trainers.loop import preflight


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    name: str = "distill"
    """Run name: stable, so re-running an interrupted run resumes it."""
    storage: str = "runs"
    storage_shared: bool = False
    """A local storage path that every node mounts (NFS): allowed on a multi-node cluster."""
    resources: Resources = field(default_factory=Resources)
    autoscaling: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training config; `teachers` may name registry teachers instead of paths."""

    def __post_init__(self) -> None:
        resolve_fields(self, storage=resolve_storage)
        check(bool(self.name) and "/" not in self.name, "name", f"must be a non-empty name without '/', got {self.name!r}")


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Run it; returns the final metrics (last epoch + test metrics of best and last)."""
    storage = Storage(cfg.storage)
    registry = TeacherRegistry(storage)
    train = replace(cfg.train, name=cfg.name, teachers=tuple(registry.resolve(t) for t in cfg.train.teachers))
    try:
        preflight(train, train.data.load().info)
    except ConfigError as err:
        raise err.under("train") from None
    init_ray()
    check_shared_storage(cfg.storage, shared=cfg.storage_shared, autoscaling=cfg.autoscaling)
    check_fits("resources", cfg.resources.per_worker(), cfg.resources.num_workers, cfg.autoscaling)
    hparams = {"method": train.method, "student": train.model.arch, "teachers": len(train.teachers)}
    result = run_training(train, name=f"distill-{cfg.name}-{config_hash(to_dict(train))[:8]}", storage=storage,
                          resources=cfg.resources, hparams=hparams,
                          tensorboard_dir=storage.uri_of("tensorboard", "distill", cfg.name),
                          results_uri=storage.uri, sweep="distill")
    if result.error is not None:
        raise RuntimeError(f"distillation {cfg.name} failed: {result.error}")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = fetch_artifacts(result, Path(tmp))
        storage.replace_dir(artifacts, "runs", cfg.name)
    return {**result.metrics, "path": storage.uri_of("runs", cfg.name)}
