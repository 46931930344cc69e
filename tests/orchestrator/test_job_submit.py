"""`ray job submit --working-dir . -- python -m orchestrator.sweep --config ...` against a local
head started with `ray start --head` on 127.0.0.1 (docs/clusters.md#submitting-a-job)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from tiny import tiny_sweep

pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def local_head(tmp_path):
    """A `ray start` head; the session's private Ray is shut down first (two Ray instances on one
    machine confuse Train's placement-group cleaner)."""
    ray.shutdown()
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_AUTH_MODE": "token"}
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
    start = subprocess.run([RAY, "start", "--head", "--port=6390", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                            "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--dashboard-port=8267",
                            "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_sweep_runs_as_a_submitted_job(local_head, tmp_path):
    config = tmp_path / "tiny.yaml"
    spec = tiny_sweep(str(tmp_path / "store"), name="job", num_samples=1)
    spec["evaluation"]["baselines"] = []
    config.write_text(yaml.safe_dump(spec))
    job = subprocess.run([RAY, "job", "submit", "--address", "http://127.0.0.1:8267", "--working-dir", str(REPO),
                          "--runtime-env-json", '{"excludes": [".venv", ".git", "runs"]}',
                          "--", sys.executable, "-m", "orchestrator.sweep", "--config", str(config)],
                         env=local_head, capture_output=True, text=True, timeout=800)
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    assert "4/4 report" in job.stdout
    store = ResultsStore(Storage(tmp_path / "store"))
    assert len(store.read(kind="trial", sweep="job")) == 1
    assert store.read(kind="plan", sweep="job")
