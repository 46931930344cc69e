"""`--resume` after the driver is killed mid-search: finished trials are not rerun, the unfinished
one restarts from its last checkpoint, nothing is duplicated in the store
(docs/clusters.md#resume-and-fault-tolerance)."""
from __future__ import annotations

import datetime as dt

import pytest
import ray
import yaml

from orchestrator.cli import run_command
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from killed_sweep import kill_sweep_when
from tiny import tiny_sweep

pytestmark = pytest.mark.timeout(900)


def test_killed_sweep_resumes_from_checkpoints(tmp_path):
    ray.shutdown()  # the killed driver starts its own Ray; two on one machine confuse Train's cleaner
    spec = tiny_sweep(str(tmp_path / "store"), name="killed")
    spec["student"]["epochs"] = 4
    spec["search"]["max_concurrent"] = 1
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(spec))
    store = ResultsStore(Storage(tmp_path / "store"))
    kill_sweep_when(config, lambda: any(r["epoch"] >= 2 for r in store.read(kind="epoch", sweep="killed")),
                    "the sweep never reached a third epoch", timeout=400)
    killed_at = dt.datetime.now(dt.timezone.utc)
    before = {r["key"]: r["written_at"] for r in store.read(kind="epoch", sweep="killed")}
    assert store.read(kind="trial", sweep="killed") == []  # killed inside the first trial

    assert run_command("sweep", ["--config", str(config), "--resume"]) == 0
    trials = store.read(kind="trial", sweep="killed")
    assert len(trials) == 2 and all(t["metrics"]["error"] is None for t in trials)
    epochs = store.read(kind="epoch", sweep="killed")
    runs = {r["run"] for r in epochs}
    assert len(runs) == 2 and len(epochs) == 2 * 4
    # The interrupted trial continued from a checkpoint, not from scratch. A hard kill can land
    # between an epoch's checkpoint upload and Train recording it, so the newest epoch may be
    # redone (docs/clusters.md#resume-and-fault-tolerance); its row is then replaced under the
    # same key, never duplicated.
    assert len(before) >= 3 and all(written < killed_at for written in before.values())
    newest = max(before, key=lambda k: next(r["epoch"] for r in epochs if r["key"] == k))
    redone = [k for k, written in before.items() if next(r for r in epochs if r["key"] == k)["written_at"] != written]
    assert set(redone) <= {newest}, redone
    ray.shutdown()
