"""The method comparison end to end: a per-method search, then the best configuration of the method
and a baseline without distillation trained again with fresh seeds. The driver is killed during
the comparison's training and the sweep run again: every seed's row is in the store exactly once,
every seed run is evaluated on all test points, and the report opens with the comparison."""
from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
import ray
import yaml

from orchestrator.cli import run_command
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from killed_sweep import kill_sweep_when
from tiny import tiny_sweep

pytestmark = pytest.mark.timeout(900)
SEEDS = 2
LABELS = ["rslad", "pgd_at-no-distill"]


def raw_keys(storage: Storage, kind: str) -> Counter:
    """How many rows of a kind the store's files hold per key (before newest-per-key)."""
    counts: Counter = Counter()
    for path in storage.list_files("results", suffix=".parquet"):
        table = pq.read_table(path, columns=["key", "kind"])
        counts.update(k for k, kd in zip(table["key"].to_pylist(), table["kind"].to_pylist()) if kd == kind)
    return counts


def test_a_comparison_killed_mid_training_resumes_with_every_seed_once(tmp_path):
    ray.shutdown()  # the killed driver starts its own Ray
    spec = tiny_sweep(str(tmp_path / "store"), name="cmp", num_samples=1)
    spec["search"].update(budget="per_method", max_concurrent=1)
    spec["search"]["options"]["method"] = ["rslad"]
    spec["student"]["epochs"] = 2
    spec["compare"] = {"seeds": SEEDS, "baselines": [{"name": "pgd_at", "attack": {"steps": 2}}]}
    spec["evaluation"].update(top_n=0, sanity_points=0)
    config = tmp_path / "cmp.yaml"
    config.write_text(yaml.safe_dump(spec))
    storage = Storage(tmp_path / "store")
    store = ResultsStore(storage)
    kill_sweep_when(config, lambda: bool(store.keys(kind="replicate", sweep="cmp")),
                    "the comparison never finished a run", timeout=600)
    done_before = store.keys(kind="replicate", sweep="cmp")
    assert 1 <= len(done_before) < len(LABELS) * SEEDS

    assert run_command("sweep", ["--config", str(config)]) == 0
    expected = {f"replicate/cmp/{label}/{seed}" for label in LABELS for seed in range(1, SEEDS + 1)}
    assert set(raw_keys(storage, "replicate")) == expected  # seeds 1..N: never the search's seed 0
    assert all(n == 1 for n in raw_keys(storage, "replicate").values())  # finished seeds were not rerun
    assert all(n == 1 for n in raw_keys(storage, "trial").values()) and len(raw_keys(storage, "trial")) == 1
    evaluated = {r["run"] for r in store.read(kind="eval", sweep="cmp") if r["attack"] == "clean" and r["n"] == 397}
    assert {f"{label}/seed{seed}" for label in LABELS for seed in range(1, SEEDS + 1)} <= evaluated
    report = (tmp_path / "store" / "reports" / "cmp" / "report.md").read_text()
    assert report.index("## Method comparison") < report.index("## Test-split robustness")
    for label in LABELS:
        assert f"| {label} | " in report and f"({SEEDS}) |" in report
    assert "has the highest W-Robust (worst case)" in report and f"N = {SEEDS}" in report
    assert "Search budget: rslad 1 trial(s)" in report
    assert (tmp_path / "store" / "reports" / "cmp" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    ray.shutdown()
