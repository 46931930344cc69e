"""The project on a multi-node Ray cluster simulated on this machine (ray.cluster_utils.Cluster:
one raylet per node, each with its own resources), shaped like clusters/*.yaml: a head that
advertises CPU 0 and `train_driver`, and two 1-CPU worker nodes (docs/clusters.md).

  - a 2-worker distillation spreads over both workers and gives the same metrics as on one node;
  - a sweep's trial drivers run on the head, its training workers and evaluation actors on the
    workers;
  - a worker node killed in the middle of a trial: the trial resumes from its last checkpoint on
    the remaining node, and every trial / epoch / eval row is in the store exactly once;
  - a local storage path that is not marked shared is refused before anything is written.

All nodes of the simulated cluster share this machine's disk, so the Ray tests mark their local
storage `storage_shared: true`, as a user does for a path every node mounts.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import torch
import yaml
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from orchestrator.cli import run_command
from orchestrator.config import DistillConfig
from orchestrator.distill import distill
from orchestrator.ray_env import check_shared_storage, driver_resources
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.config import load_sweep_config
from orchestrator.sweep import run_sweep
from tiny import tiny_sweep, tiny_train
from trainers.checkpoint import save_model
from trainers.config import ConfigError, from_dict
from trainers.data import load_dataset
from trainers.models import DataCfg, build_model

pytestmark = pytest.mark.timeout(600)
# GCS declares a node dead after health_check_failure_threshold missed checks: 5 x 3 s by default,
# shortened here so the node-kill test spends its time on the resume, not on the detection.
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                   "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
TRAIN_WORKER, TRIAL_DRIVER, EVAL_ACTOR = "RayTrainWorker", "ImplicitFunc", "EvalActor"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SimCluster:
    cluster: Cluster
    dashboard: str
    head: str
    workers: dict[str, object]
    """node id -> the node handle (for remove_node)."""

    def actors(self, class_name: str, alive_only: bool = False) -> dict[str, str]:
        """actor id -> node id of the actors of a class (dead ones too unless alive_only). Ray
        reports a class by its name or its qualified name ('wrap_function.<locals>.ImplicitFunc')."""
        filters = [("state", "=", "ALIVE")] if alive_only else []
        actors = list_actors(address=self.dashboard, filters=filters, limit=10_000, timeout=60)
        return {a.actor_id: a.node_id for a in actors if a.class_name.rsplit(".", 1)[-1] == class_name}

    def new_actor_nodes(self, class_name: str, before: dict[str, str]) -> list[str]:
        """Node ids of the actors of a class that are not in `before`, sorted."""
        return sorted(node for actor, node in self.actors(class_name).items() if actor not in before)


@pytest.fixture(scope="module")
def sim_cluster():
    ray.shutdown()  # the session's private Ray: two on one machine confuse Train's cleaner
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "resources": {"train_driver": 8}, "include_dashboard": True,
        "dashboard_port": free_port(), "_system_config": FAST_NODE_DEATH})
    workers = [cluster.add_node(num_cpus=1, resources={f"node_{name}": 1}) for name in "ab"]
    cluster.wait_for_nodes()
    context = ray.init(address=cluster.address, log_to_driver=False)
    dashboard = f"http://{context.dashboard_url}"
    try:
        with pytest.MonkeyPatch.context() as env:
            # The state API takes RAY_ADDRESS ('local' in the tests) over its address argument.
            env.setenv("RAY_API_SERVER_ADDRESS", dashboard)
            yield SimCluster(cluster, dashboard, cluster.head_node.node_id, {node.node_id: node for node in workers})
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, str]:
    """Two untrained tiny CNN checkpoints (placement and bookkeeping do not need good teachers)."""
    info = load_dataset("digits").info
    folder = tmp_path_factory.mktemp("teachers")
    paths = {}
    for seed, name in enumerate(("t_at", "t_nat")):
        torch.manual_seed(seed)
        model = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), info.mean, info.std),
                            width=4, hidden=16)
        paths[name] = str(save_model(folder / name, model.eval(), dataset="digits"))
    return paths


def sweep_yaml(tmp_path: Path, teachers: dict[str, str], name: str, *, epochs: int, actors: int,
               shared: bool = True) -> Path:
    """The tiny sweep: one trial, teachers given as checkpoints (nothing to pretrain), no baselines."""
    spec = tiny_sweep(str(tmp_path / "store"), name=name, num_samples=1)
    spec["teachers"] = [{"name": n, "checkpoint": p} for n, p in teachers.items()]
    spec["student"]["epochs"] = epochs
    spec["evaluation"].update(baselines=[], actors=actors)
    spec["storage_shared"] = shared
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def distill_config(store: Path, name: str, teacher: str) -> DistillConfig:
    return from_dict(DistillConfig, {"name": name, "storage": str(store), "storage_shared": True,
                                     "resources": {"num_workers": 2, "cpus_per_worker": 1},
                                     "train": tiny_train({"name": "rslad", "attack": {"steps": 2}}, teachers=[teacher])})


def raw_key_counts(storage: Storage) -> dict[str, int]:
    """How many rows the store holds per key, before the reader's newest-per-key deduplication."""
    counts: dict[str, int] = {}
    for file in storage.list_files("results", suffix=".parquet"):
        for key in pq.read_table(file, columns=["key"]).column("key").to_pylist():
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_local_storage_is_refused_on_a_multi_node_cluster(sim_cluster, teachers, tmp_path, capsys):
    store = tmp_path / "store"
    config = sweep_yaml(tmp_path, teachers, "unshared", epochs=1, actors=2, shared=False)
    distill_yaml = tmp_path / "distill.yaml"
    distill_yaml.write_text(yaml.safe_dump({"name": "d", "storage": str(store), "train": tiny_train(
        {"name": "rslad", "attack": {"steps": 2}}, teachers=[teachers["t_at"]])}))
    pretrain_yaml = tmp_path / "pretrain.yaml"
    pretrain_yaml.write_text(yaml.safe_dump({"storage": str(store), "teachers": [
        {"name": "t", "train": tiny_train({"name": "natural"})}]}))
    for entry, argv in (("sweep", ["--config", str(config)]), ("distill", ["--config", str(distill_yaml)]),
                        ("pretrain", ["--config", str(pretrain_yaml)])):
        assert run_command(entry, argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "storage must be shared" in err, err
        assert "the cluster has 3 nodes" in err and "s3://" in err and "storage_shared: true" in err, err
        assert not store.exists(), f"{entry} wrote to the storage before refusing it"
    check_shared_storage(str(store), shared=True, autoscaling=False)
    for uri in ("s3://bucket/runs", "gs://bucket/runs"):
        check_shared_storage(uri, shared=False, autoscaling=False)
    with pytest.raises(ConfigError, match="storage must be shared"):
        check_shared_storage(f"file://{store}", shared=False, autoscaling=False)


def test_two_worker_distillation_spans_two_nodes_with_single_node_metrics(sim_cluster, teachers, tmp_path):
    before = sim_cluster.actors(TRAIN_WORKER)
    two = distill(distill_config(tmp_path / "store", "two_nodes", teachers["t_at"]))
    nodes = sim_cluster.new_actor_nodes(TRAIN_WORKER, before)
    assert nodes == sorted(sim_cluster.workers), nodes
    # The reference: the same run with both workers on one 2-CPU node (Train packs its group there).
    single = sim_cluster.cluster.add_node(num_cpus=2, resources={"node_c": 1})
    sim_cluster.cluster.wait_for_nodes()
    try:
        before = sim_cluster.actors(TRAIN_WORKER)
        one = distill(distill_config(tmp_path / "store", "one_node", teachers["t_at"]))
        assert sim_cluster.new_actor_nodes(TRAIN_WORKER, before) == [single.node_id] * 2
    finally:
        sim_cluster.cluster.remove_node(single)
    timing = {"epoch_time", "images_per_s", "wall_time", "path"}
    assert {k for k in two if k not in timing} == {k for k in one if k not in timing}
    assert {k: v for k, v in two.items() if k not in timing} == {k: v for k, v in one.items() if k not in timing}
    assert {"test_clean", "test_pgd", "best_val_w_robust"} <= set(two)


def test_sweep_drivers_on_the_head_training_and_evaluation_on_workers(sim_cluster, teachers, tmp_path):
    assert driver_resources() == {"train_driver": 0.01}
    before = {cls: sim_cluster.actors(cls) for cls in (TRIAL_DRIVER, TRAIN_WORKER, EVAL_ACTOR)}
    tasks = run_sweep(load_sweep_config(str(sweep_yaml(tmp_path, teachers, "placed", epochs=1, actors=2))))
    assert tasks
    assert sim_cluster.new_actor_nodes(TRIAL_DRIVER, before[TRIAL_DRIVER]) == [sim_cluster.head]
    train_nodes = sim_cluster.new_actor_nodes(TRAIN_WORKER, before[TRAIN_WORKER])
    assert len(train_nodes) == 1 and set(train_nodes) <= set(sim_cluster.workers), train_nodes
    eval_nodes = sim_cluster.new_actor_nodes(EVAL_ACTOR, before[EVAL_ACTOR])
    assert eval_nodes == sorted(sim_cluster.workers), eval_nodes  # one actor per 1-CPU worker
    trials = ResultsStore(Storage(tmp_path / "store")).read(kind="trial", sweep="placed")
    assert len(trials) == 1 and trials[0]["metrics"]["error"] is None


class NodeKiller(threading.Thread):
    """Kills the worker node running the trial's training worker (its raylet and every process
    of its actors) once Train has registered the trial's first checkpoint (the controller's
    snapshot in storage) and its epoch row is in; then waits for the restarted worker."""

    def __init__(self, sim: SimCluster, store: Path, sweep: str, deadline_s: float) -> None:
        super().__init__(daemon=True)
        self.sim, self.store, self.sweep = sim, store, sweep
        self.deadline = time.time() + deadline_s
        self.killed_at: float | None = None
        self.killed_node: str | None = None
        self.seen: dict[str, str] = {}
        """The training workers that existed when the node was killed."""
        self.restarted_at: float | None = None
        self.checkpoint_epoch: int | None = None
        """The epoch of the checkpoint the restarted worker resumes from."""

    def checkpointed_epoch(self) -> int | None:
        """The epoch of the newest checkpoint Train has registered, once that epoch's row is in."""
        snapshots = list(self.store.glob("ray/train-*/checkpoint_manager_snapshot.json"))
        latest = snapshots and json.loads(snapshots[0].read_text()).get("latest_checkpoint_result")
        if not latest:
            return None
        epoch = latest["metrics"]["epoch"]
        rows = ResultsStore(Storage(self.store)).read(kind="epoch", sweep=self.sweep)
        return epoch if any(r["epoch"] == epoch for r in rows) else None

    def kill(self, node: str) -> None:
        pids = [a.pid for a in list_actors(address=self.sim.dashboard, filters=[("node_id", "=", node),
                                                                                  ("state", "=", "ALIVE")], timeout=60)]
        self.killed_node, self.killed_at = node, time.time()
        self.sim.cluster.remove_node(self.sim.workers[node], allow_graceful=False)
        for pid in pids:  # a lost machine takes its processes along at once
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def run(self) -> None:
        while time.time() < self.deadline and self.restarted_at is None:
            alive = self.sim.actors(TRAIN_WORKER, alive_only=True)
            if self.killed_at is None and alive and (epoch := self.checkpointed_epoch()) is not None:
                self.seen, self.checkpoint_epoch = self.sim.actors(TRAIN_WORKER), epoch
                self.kill(next(iter(alive.values())))
            elif self.killed_at is not None and set(alive) - set(self.seen):
                self.restarted_at = time.time()
            time.sleep(0.1)


def test_worker_node_killed_mid_trial_resumes_on_the_other_node(sim_cluster, teachers, tmp_path):
    epochs = 3
    store = tmp_path / "store"
    killer = NodeKiller(sim_cluster, store, "killed", deadline_s=300)
    killer.start()
    # One evaluation actor: after the kill the cluster has one 1-CPU worker left.
    tasks = run_sweep(load_sweep_config(str(sweep_yaml(tmp_path, teachers, "killed", epochs=epochs, actors=1))))
    killer.join(timeout=5)
    assert killer.killed_at is not None, "the trial finished before its node could be killed"
    survivor = next(n for n in sim_cluster.workers if n != killer.killed_node)
    restarted = sim_cluster.new_actor_nodes(TRAIN_WORKER, killer.seen)
    assert restarted == [survivor], restarted

    storage = Storage(store)
    results = ResultsStore(storage)
    (trial,) = results.read(kind="trial", sweep="killed")
    assert trial["metrics"]["error"] is None and trial["metrics"]["checkpoint"]
    epoch_rows = results.read(kind="epoch", sweep="killed")
    assert sorted(r["epoch"] for r in epoch_rows) == list(range(epochs))
    eval_keys = {r["key"] for r in results.read(kind="eval", sweep="killed")}
    assert eval_keys == {t.key for t in tasks} | {t.clean_key for t in tasks}
    counts = raw_key_counts(storage)
    assert all(counts[k] == 1 for k in eval_keys | {trial["key"]}), counts
    # Resumed from the checkpoint, not from scratch: the checkpointed epochs keep their one row from
    # before the kill; only the epoch the kill interrupted can have been written again (same key,
    # the reader keeps the newest).
    saved = [r for r in epoch_rows if r["epoch"] <= killer.checkpoint_epoch]
    assert all(counts[r["key"]] == 1 and r["written_at"].timestamp() < killer.killed_at for r in saved), saved
    assert sum(counts[r["key"]] for r in epoch_rows) <= epochs + 1, counts
    assert killer.restarted_at is not None
    resumed = [r["written_at"].timestamp() for r in epoch_rows if r["written_at"].timestamp() > killer.restarted_at]
    assert resumed, "no epoch finished on the remaining node"
    print(f"\nnode killed after epoch {killer.checkpoint_epoch}: training worker running again on the other "
          f"node {killer.restarted_at - killer.killed_at:.1f} s later, its first epoch row "
          f"{min(resumed) - killer.killed_at:.1f} s after the kill")
