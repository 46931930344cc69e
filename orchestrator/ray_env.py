"""Connecting to Ray: inside `ray job submit` (RAY_ADDRESS set) or next to a `ray start` cluster
`ray.init()` attaches; otherwise it starts an embedded local Ray. An already initialized Ray
(tests, notebooks) is reused."""
from __future__ import annotations

import math
import os

import ray

from trainers.configs import ConfigError

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
# Train's controller polls its workers at this interval; the 2 s default adds seconds to every
# short run. Inherited by the processes of a Ray started here.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def driver_resources() -> dict[str, float]:
    """What a Tune trial's driver reserves: a sliver of the head's `train_driver` resource on the
    cluster YAMLs (which pin drivers to the CPU head), else a sliver of a CPU."""
    return {"train_driver": 0.01} if ray.cluster_resources().get("train_driver") else {"cpu": 0.01}


def init_ray() -> None:
    if not ray.is_initialized():
        ray.init(log_to_driver=True, configure_logging=True, logging_level="WARNING")


def check_fits(field: str, per_worker: dict[str, float], workers: int, autoscaling: bool) -> int:
    """How many such jobs fit the cluster at once; a job that can never fit is a config error.
    On an autoscaling cluster every job is submitted at once: pending requests are what make the
    autoscaler add nodes (raise RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S to cover node start-up)."""
    if autoscaling:
        return 1_000_000
    total = ray.cluster_resources()
    fits = math.inf
    for resource, amount in per_worker.items():
        need = amount * workers
        have = total.get(resource, 0.0)
        if need > have + 1e-9:
            raise ConfigError(field, f"needs {need:g} {resource} but the cluster has {have:g}; "
                              "lower the request or set autoscaling: true on a cluster that can grow")
        if need > 0:
            fits = min(fits, have // need)
    return max(1, int(fits if fits != math.inf else 1))
