"""Connecting to Ray: inside `ray job submit` (RAY_ADDRESS set) or next to a `ray start` cluster
`ray.init()` attaches; otherwise it starts an embedded local Ray. An already initialized Ray
(tests, notebooks) is reused.

The console shows the project's own progress (orchestrator.console); what Ray's processes print
goes to Ray's log files, whose folder is printed once (`--verbose` forwards it to the console)."""
from __future__ import annotations

import logging
import math
import os

import ray

from trainers.config import ConfigError

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
# Train's controller polls its workers at this interval; the 2 s default adds seconds to every
# short run. Inherited by the processes of a Ray started here.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Tune's console reporter (experiment box, results tables); the sweep prints its own progress.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# The raylet warns when the worker processes started exceed 4x this number (default: the CPU
# count). A sweep legitimately runs trial drivers, Train controllers, workers and evaluation
# actors side by side, so on a 2-core machine the warning is noise.
os.environ.setdefault("RAY_worker_maximum_startup_concurrency", "16")
# A new local Ray turns token authentication on (kept) and logs a warning saying so (dropped).
logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
    lambda record: not record.getMessage().startswith("Token authentication is enabled"))


def driver_resources() -> dict[str, float]:
    """What a Tune trial's driver reserves: a sliver of the head's `train_driver` resource on the
    cluster YAMLs (which pin drivers to the CPU head), else a sliver of a CPU."""
    return {"train_driver": 0.01} if ray.cluster_resources().get("train_driver") else {"cpu": 0.01}


_console = {"ray_output": False}


def show_ray_output(show: bool) -> None:
    """Whether a Ray started later forwards its processes' output (per-epoch lines of every
    training run, Ray's own warnings) to this console; entry points set it from --verbose."""
    _console["ray_output"] = show


def init_ray() -> None:
    """Start or attach to Ray once per process."""
    if ray.is_initialized():
        return
    context = ray.init(log_to_driver=_console["ray_output"], configure_logging=True, logging_level="WARNING")
    print(f"Ray logs: {context.address_info['session_dir']}/logs", flush=True)


def check_shared_storage(storage: str, *, shared: bool, autoscaling: bool,
                         autoscaling_field: str = "autoscaling") -> None:
    """Refuse a local storage path on a cluster of several nodes (or one that adds nodes): every
    trial, worker and actor writes checkpoints and result rows from whichever node it runs on, and
    resumes read them back from another one, so all nodes must see the same files. `shared` is
    the user's word that the path is mounted on every node (NFS)."""
    if shared or ("://" in storage and not storage.startswith("file://")):
        return
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if nodes <= 1 and not autoscaling:
        return
    where = f"the cluster has {nodes} nodes" if nodes > 1 else f"the cluster adds nodes ({autoscaling_field}: true)"
    one_machine = f"; on one machine: --set {autoscaling_field}=false" if nodes <= 1 else ""
    raise ConfigError("storage", f"{storage} is a local path but {where}; storage must be shared by every node: "
                      "use s3://... or gs://..., or a path mounted on every node and set storage_shared: true"
                      + one_machine)


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
