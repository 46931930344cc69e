"""The autoscaler at work on this project's sweep, with Ray's fake multi-node provider
(`provider: type: fake_multinode`, RAY_FAKE_CLUSTER=1): the autoscaler runs on the head as on a
cloud cluster, and "launching a node" starts another raylet on this machine.

The node types come from clusters/aws.yaml: the head keeps its resources (CPU 0, train_driver),
each GPU worker type keeps its name, min_workers (0) and upscaling settings, and stands in its
GPUs with a custom resource of the same count (this machine has no GPU, and a logical "GPU" would
make Ray Train pick NCCL) plus one logical CPU per stand-in GPU; max_workers is capped at 2.
The sweep is the tiny one on CPUs: its trial and evaluation requests, which never fit the CPU-0
head, are what start a worker from zero, and the idle worker is removed after
idle_timeout_minutes. Measured figures are printed (pytest -s) and recorded in clusters/README.md.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
import ray
import torch
import yaml
from ray.util.state import list_actors

from orchestrator.config import load_sweep_config
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.sweep import run_sweep
from trainers.checkpoint import save_model
from trainers.data import load_dataset
from trainers.models import DataCfg, build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestrator"))
from tiny import tiny_sweep  # noqa: E402

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
STANDIN = "fake_gpu"
IDLE_TIMEOUT_MINUTES = 0.1
MARKER = "ROBUST_DISTILL_FAKE_CLUSTER"
"""An environment variable every process of the fake cluster inherits: cleanup finds them by it
(`ray stop` would stop every Ray on the machine, not only this one)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_cluster_config(aws: dict, gcs_address: str) -> dict:
    """An autoscaling config for the fake provider with the node types of a cloud config."""
    head = aws["available_node_types"][aws["head_node_type"]]
    types = {"ray.head.default": {"resources": dict(head["resources"]), "node_config": {}, "max_workers": 0}}
    for name, node_type in aws["available_node_types"].items():
        if name == aws["head_node_type"]:
            continue
        gpus = node_type["resources"]["GPU"]
        types[name] = {"resources": {"CPU": gpus, STANDIN: gpus}, "node_config": {},
                       "min_workers": node_type["min_workers"], "max_workers": min(node_type["max_workers"], 2)}
    return {"cluster_name": "fake-" + aws["cluster_name"], "max_workers": min(aws["max_workers"], 2),
            "upscaling_speed": aws["upscaling_speed"], "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": gcs_address},
            "available_node_types": types, "head_node_type": "ray.head.default", "auth": {}, "docker": {},
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": []}


def kill_marked(marker: str) -> None:
    """SIGKILL every process whose environment carries MARKER=marker."""
    victims = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == marker:
                victims.append(proc)
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    psutil.wait_procs(victims, timeout=30)


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch):
    """A head started like clusters/aws.yaml's (CPU 0, train_driver, --autoscaling-config), no workers."""
    ray.shutdown()  # the session's private Ray: two on one machine confuse Train's cleaner
    aws = yaml.safe_load((ROOT / "clusters" / "aws.yaml").read_text())
    port = free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    config = tmp_path / "fake_cluster.yaml"
    config.write_text(yaml.safe_dump(fake_cluster_config(aws, address)))
    head = dict(aws["available_node_types"][aws["head_node_type"]]["resources"])
    marker = uuid.uuid4().hex
    temp_dir = f"/tmp/rdfake-{marker[:8]}"  # short: Ray's socket paths live under it
    # The cluster authenticates as this process does: off, unless a local Ray started here earlier
    # (another test) turned token authentication on for the process, which Ray does for every new
    # local instance. A driver in token mode cannot use a cluster without it: its trial actors are
    # cancelled before they start.
    auth = os.environ.get("RAY_AUTH_MODE", "disabled")
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": auth,
           MARKER: marker}
    start = subprocess.run(
        [RAY, "start", "--head", f"--port={port}", f"--autoscaling-config={config}",
         f"--num-cpus={head.pop('CPU')}", f"--resources={json.dumps(head)}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        context = ray.init(address=address, log_to_driver=False)
        # The state API takes RAY_ADDRESS ('local' in the tests) over its address argument.
        monkeypatch.setenv("RAY_API_SERVER_ADDRESS", f"http://{context.dashboard_url}")
        yield f"http://{context.dashboard_url}"
    finally:
        ray.shutdown()
        kill_marked(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)


def untrained_teacher(folder: Path) -> Path:
    info = load_dataset("digits").info
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), info.mean, info.std),
                        width=4, hidden=16)
    return save_model(folder, model.eval(), dataset="digits")


def worker_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"] and not n["Resources"].get("train_driver")]


class Timeline(threading.Thread):
    """Polls the cluster and records when things first happened (seconds since `start`)."""

    def __init__(self, dashboard: str) -> None:
        super().__init__(daemon=True)
        self.dashboard, self.start_time, self.events = dashboard, time.time(), {}
        self.nodes: dict[str, tuple] = {}
        """node id -> (CPU, stand-in GPUs) of every worker node seen."""
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.placement: dict[str, set[str]] = {}
        """actor class -> the nodes its live actors were seen on."""

    def mark(self, event: str) -> None:
        self.events.setdefault(event, time.time() - self.start_time)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll()
            except Exception as err:  # a slow state API call on a loaded machine: try again
                self.errors.append(repr(err))
            self.stop.wait(0.25)

    def poll(self) -> None:
        nodes = worker_nodes()
        if nodes:
            self.mark("worker node up")
        if len(nodes) >= 2:
            self.mark("second worker node up")
        self.nodes.update({n["NodeID"]: (n["Resources"].get("CPU"), n["Resources"].get(STANDIN)) for n in nodes})
        alive = set()
        for actor in list_actors(address=self.dashboard, filters=[("state", "=", "ALIVE")], limit=10_000, timeout=20):
            name = actor.class_name.rsplit(".", 1)[-1]  # Ray may report 'wrap_function.<locals>.ImplicitFunc'
            alive.add(name)
            self.placement.setdefault(name, set()).add(actor.node_id)
        for cls, event in (("ImplicitFunc", "trial driver started"), ("RayTrainWorker", "training worker running")):
            if cls in alive:
                self.mark(event)


def test_pending_trials_start_workers_from_zero_and_idle_ones_go_away(fake_cluster, tmp_path):
    assert worker_nodes() == [], "the head alone: GPU worker types have min_workers 0"
    spec = tiny_sweep(str(tmp_path / "store"), name="autoscaled", num_samples=2)
    # A teacher given as a checkpoint: nothing to pretrain, so the trials make the first requests.
    spec["teachers"] = [{"name": "t_at", "checkpoint": str(untrained_teacher(tmp_path / "t_at"))}]
    spec["search"]["options"].update(method=["rslad"], teachers={"candidates": ["t_at"], "count": 1})
    spec["evaluation"].update(baselines=[], actors=1)
    spec["resources"]["autoscaling"] = True
    spec["storage_shared"] = True  # every fake node is this machine
    path = tmp_path / "autoscaled.yaml"
    path.write_text(yaml.safe_dump(spec))
    timeline = Timeline(fake_cluster)
    timeline.start()
    run_sweep(load_sweep_config(str(path)))
    timeline.mark("sweep finished")
    while worker_nodes() and time.time() - timeline.start_time < 400:
        time.sleep(0.25)
    timeline.mark("idle workers removed")
    timeline.stop.set()
    timeline.join()

    e = timeline.events
    trials = ResultsStore(Storage(tmp_path / "store")).read(kind="trial", sweep="autoscaled")
    assert len(trials) == 2 and all(t["metrics"]["error"] is None for t in trials)
    assert worker_nodes() == [], f"idle workers still up {e['idle workers removed'] - e['sweep finished']:.0f} s on"
    # Removed by the idle timeout: the last one was busy (evaluation) until the sweep finished.
    assert e["idle workers removed"] - e["sweep finished"] >= 0.8 * 60 * IDLE_TIMEOUT_MINUTES, e
    assert e["worker node up"] < e["sweep finished"]
    # Two pending trials, two nodes, both of the 1-GPU type: the best fit for a 1-CPU request.
    assert len(timeline.nodes) == 2 and set(timeline.nodes.values()) == {(1.0, 1.0)}, timeline.nodes
    assert e["second worker node up"] < e["sweep finished"]
    missed = {"trial driver started", "training worker running"} - set(e)
    assert not missed, (missed, e, timeline.errors[-3:], sorted(timeline.placement))
    assert e["trial driver started"] < e["worker node up"] < e["training worker running"], e
    head = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("train_driver")}
    assert timeline.placement["ImplicitFunc"] == head  # trial drivers on the CPU-0 head...
    assert timeline.placement["RayTrainWorker"] <= set(timeline.nodes)  # ...training on the new workers
    print(f"\nupscale: trial pending -> worker node up {e['worker node up'] - e['trial driver started']:.1f} s, "
          f"-> training worker running {e['training worker running'] - e['trial driver started']:.1f} s")
    print(f"downscale: idle workers removed {e['idle workers removed'] - e['sweep finished']:.1f} s after the sweep "
          f"finished (idle_timeout_minutes {IDLE_TIMEOUT_MINUTES})")
    print({k: round(v, 1) for k, v in sorted(e.items(), key=lambda kv: kv[1])})
