"""Connecting to Ray: inside `ray job submit` (RAY_ADDRESS set) or next to a `ray start` cluster
`ray.init()` attaches; otherwise it starts an embedded local Ray. An already initialized Ray
(tests, notebooks) is reused."""
from __future__ import annotations

import math
import os

import ray

from trainers.configs import ConfigError

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")


def init_ray() -> None:
    if not ray.is_initialized():
        ray.init(log_to_driver=True, configure_logging=True, logging_level="WARNING")


def check_fits(field: str, per_worker: dict[str, float], workers: int, autoscaling: bool) -> int:
    """How many such jobs fit the cluster at once; a job that can never fit is a config error
    (unless an autoscaler may add nodes)."""
    total = ray.cluster_resources()
    fits = math.inf
    for resource, amount in per_worker.items():
        need = amount * workers
        have = total.get(resource, 0.0)
        if need > have + 1e-9:
            if autoscaling:
                return 1
            raise ConfigError(field, f"needs {need:g} {resource} but the cluster has {have:g}; "
                              "lower the request or set autoscaling: true on a cluster that can grow")
        if need > 0:
            fits = min(fits, have // need)
    return max(1, int(fits if fits != math.inf else 1))
