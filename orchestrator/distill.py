"""One distillation (or any training) run on Ray Train, with teachers taken from the registry or
from checkpoint paths; the final run folder lands in `<storage>/runs/<name>/`."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from orchestrator.ray_env import check_fits, check_shared_storage, init_ray
from orchestrator.config import DistillConfig
from orchestrator.ray_train import fetch_artifacts, raise_failure, run_training
from orchestrator.storage import Storage, localize
from orchestrator.teacher_registry import TeacherRegistry
from trainers.checkpoint import CheckpointError, verify_checkpoint
from trainers.config import ConfigError, config_hash, to_dict
from trainers.loop import preflight


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Run it; returns the final metrics (last epoch + test metrics of best and last)."""
    storage = Storage(cfg.storage)
    registry = TeacherRegistry(storage)
    train = cfg.train.replace(name=cfg.name, teachers=tuple(registry.resolve(t, "train.teachers")
                                                            for t in cfg.train.teachers))
    try:
        preflight(train, train.data.load().info)
    except ConfigError as err:
        raise err.under("train") from None
    for i, path in enumerate(train.teachers):
        try:
            verify_checkpoint(localize(path), expect_dataset=train.data.name)
        except CheckpointError as err:
            raise ConfigError(f"train.teachers[{i}]", str(err)) from None
    init_ray()
    check_shared_storage(cfg.storage, shared=cfg.storage_shared, autoscaling=cfg.autoscaling)
    check_fits("resources", cfg.resources.per_worker(), cfg.resources.num_workers, cfg.autoscaling)
    hparams = {"method": to_dict(train.method), "student": train.model.arch, "teachers": len(train.teachers)}
    result = run_training(train, name=f"distill-{cfg.name}-{config_hash(to_dict(train))[:8]}", storage=storage,
                          resources=cfg.resources, hparams=hparams,
                          tensorboard_dir=storage.uri_of("tensorboard", "distill", cfg.name),
                          results_uri=storage.uri, sweep="distill")
    raise_failure(result.error, f"distillation {cfg.name}")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = fetch_artifacts(result, Path(tmp))
        storage.replace_dir(artifacts, "runs", cfg.name)
    return {**result.metrics, "path": storage.uri_of("runs", cfg.name)}


if __name__ == "__main__":
    from orchestrator.entry import main

    main("distill")
