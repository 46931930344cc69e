"""`--resume` after the driver is killed mid-search: finished trials are not rerun, the unfinished
one restarts from its last checkpoint, nothing is duplicated in the store (ray.md section 7)."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
import ray
import yaml

from orchestrator import sweep as sweep_entry
from orchestrator.cli import run_cli
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
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
    driver = subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", "--config", str(config)],
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while not any(r["epoch"] >= 1 for r in store.read(kind="epoch", sweep="killed")):
            assert driver.poll() is None and time.time() < deadline, "the sweep never reached a second epoch"
            time.sleep(1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started (same session)
        driver.wait()
    killed_at = dt.datetime.now(dt.timezone.utc)
    time.sleep(3)
    before = {r["key"]: r["written_at"] for r in store.read(kind="epoch", sweep="killed")}
    assert store.read(kind="trial", sweep="killed") == []  # killed inside the first trial

    assert run_cli(sweep_entry.main, ["--config", str(config), "--resume"]) == 0
    trials = store.read(kind="trial", sweep="killed")
    assert len(trials) == 2 and all(t["metrics"]["error"] is None for t in trials)
    epochs = store.read(kind="epoch", sweep="killed")
    runs = {r["run"] for r in epochs}
    assert len(runs) == 2 and len(epochs) == 2 * 4
    # The interrupted trial continued from its checkpoint: its finished epochs were not redone.
    redone = [k for k, written in before.items() if next(r for r in epochs if r["key"] == k)["written_at"] != written]
    assert len(before) >= 2 and redone == [], redone
    assert all(written < killed_at for written in before.values())
    ray.shutdown()
