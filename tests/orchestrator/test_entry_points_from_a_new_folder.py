"""`orchestrator.pretrain` then `orchestrator.distill` the way a user chains them: subprocesses in
a fresh folder, configs without a storage key (the relative default `runs`), the distillation
naming its teachers by registry name. Asserted on the outputs each promises, all under ./runs."""
from __future__ import annotations

import pytest
import ray
import yaml

from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.teacher_registry import TeacherRegistry
from project_copy import RAY_NOISE, copy_project, run_entry
from tiny import tiny_train
from trainers.checkpoint import load_model

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    ray.shutdown()  # each entry point starts its own Ray; two on one machine confuse Train's cleaner
    return copy_project(tmp_path_factory.mktemp("clone"))


def test_pretrain_then_distill_with_the_default_storage(project):
    (project / "teachers.yaml").write_text(yaml.safe_dump({"teachers": [
        {"name": "cnn_at", "train": tiny_train({"name": "pgd_at", "attack": {"steps": 2}})}]}))
    pretrain = run_entry(project, "orchestrator.pretrain", "--config", "teachers.yaml")
    assert pretrain.returncode == 0, (pretrain.stdout + pretrain.stderr)[-4000:]
    storage = Storage(project / "runs")
    (row,) = TeacherRegistry(storage).rows()
    version = row["metrics"]["version"]  # a registration is a new version folder
    assert row["metrics"]["path"] == str(project / "runs" / "teachers" / row["key"] / version / "best")
    assert "cnn_at" in pretrain.stdout and row["metrics"]["path"] in pretrain.stdout

    (project / "distill.yaml").write_text(yaml.safe_dump({"name": "rslad-tiny", "train": {
        **tiny_train({"name": "rslad", "attack": {"steps": 2}}), "teachers": ["cnn_at"]}}))
    distill = run_entry(project, "orchestrator.distill", "--config", "distill.yaml")
    assert distill.returncode == 0, (distill.stdout + distill.stderr)[-4000:]
    assert "test (best-on-val)" in distill.stdout
    assert f"checkpoints: {project / 'runs' / 'runs' / 'rslad-tiny'}" in distill.stdout
    _, sidecar = load_model(project / "runs" / "runs" / "rslad-tiny" / "best")
    assert sidecar["method"]["name"] == "rslad" and sidecar["teachers"] == [row["metrics"]["path"]]
    assert [r["epoch"] for r in ResultsStore(storage).read(kind="epoch", sweep="distill", run="rslad-tiny")] == [0]
    assert any((project / "runs" / "tensorboard" / "distill" / "rslad-tiny").glob("events.out.tfevents.*"))
    for run in (pretrain, distill):
        assert run.stdout.count("Ray logs: ") == 1
        for noise in RAY_NOISE:
            assert noise not in run.stdout + run.stderr, noise
