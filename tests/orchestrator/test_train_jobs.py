"""Ray Train jobs on a private Ray: teacher pretraining with the registry (skip, --force), a
distillation run from registry teachers, and a 2-worker DDP run whose ranks report the same
metrics."""
from __future__ import annotations

import shutil
import sys

import pytest
import ray.train
from ray import cloudpickle
import yaml

from orchestrator.cli import run_command
from orchestrator.ray_train import Resources, run_training
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.teacher_registry import TeacherRegistry
from tiny import tiny_train
from trainers.checkpoint import load_model
from trainers.config import from_dict
from trainers.errors import UserError
from trainers.train_config import TrainConfig

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def teachers_config(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    path = root / "teachers.yaml"
    path.write_text(yaml.safe_dump({"storage": str(root / "store"), "teachers": [
        {"name": "cnn_at", "train": tiny_train({"name": "pgd_at", "attack": {"steps": 2}})},
        {"name": "cnn_nat", "train": tiny_train({"name": "natural"})}]}))
    assert run_command("pretrain", ["--config", str(path)]) == 0
    return path, Storage(root / "store")


def test_pretrain_registers_teachers_with_metrics(teachers_config):
    _, storage = teachers_config
    rows = {r["metrics"]["name"]: r for r in TeacherRegistry(storage).rows()}
    assert set(rows) == {"cnn_at", "cnn_nat"}
    for name, row in rows.items():
        m = row["metrics"]
        assert m["dataset"] == "digits" and m["arch"] == "small_cnn"
        for key in ("val_clean", "val_pgd", "test_clean", "test_pgd"):
            assert 0 <= m[key] <= 1, key
        model, sidecar = load_model(m["path"])
        assert sidecar["method"]["name"] == ("pgd_at" if name == "cnn_at" else "natural")
        assert sidecar["method"]["profile"] == "paper"


def test_pretrain_skips_registered_and_force_retrains(teachers_config, capsys):
    path, storage = teachers_config
    index = ResultsStore(storage, "teachers/index")
    before = len(storage.list_files("teachers/index"))
    assert run_command("pretrain", ["--config", str(path)]) == 0
    assert "not retrained" in capsys.readouterr().out
    assert len(storage.list_files("teachers/index")) == before
    assert run_command("pretrain", ["--config", str(path), "--force", "--only", "cnn_nat"]) == 0
    assert len(storage.list_files("teachers/index")) == before + 1
    assert {r["metrics"]["name"] for r in index.read(kind="teacher")} == {"cnn_at", "cnn_nat"}
    # the retrained teacher is a new version under a new path; the replaced one is gone
    row = next(r for r in TeacherRegistry(storage).rows() if r["metrics"]["name"] == "cnn_nat")
    assert storage.list_dirs("teachers", row["key"]) == [row["metrics"]["version"]]
    load_model(row["metrics"]["path"])


def test_distill_from_registry_teachers(teachers_config, tmp_path, capsys):
    _, storage = teachers_config
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(yaml.safe_dump({"name": "rslad-tiny", "storage": storage.uri, "train": {
        **tiny_train({"name": "rslad", "attack": {"steps": 2}}), "teachers": ["cnn_at"]}}))
    assert run_command("distill", ["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "test (best-on-val)" in out and "checkpoints:" in out
    model, sidecar = load_model(storage.local("runs", "rslad-tiny", "best"))
    assert sidecar["method"]["name"] == "rslad" and sidecar["teachers"]
    rows = ResultsStore(storage).read(kind="epoch", sweep="distill")
    assert [r["epoch"] for r in rows] == [0]


def test_a_user_error_in_a_train_worker_is_one_line(teachers_config, tmp_path):
    """A teacher damaged after the driver checked it fails inside the Ray Train worker; the
    driver raises it as one UserError line, the traceback stays in Ray's logs."""
    _, storage = teachers_config
    teacher = tmp_path / "teacher"
    shutil.copytree(TeacherRegistry(storage).resolve("cnn_at"), teacher)
    (teacher / "model.safetensors").write_bytes(b"not weights")
    cfg = from_dict(TrainConfig, {**tiny_train({"name": "rslad"}), "teachers": [str(teacher)]})
    with pytest.raises(UserError) as err:
        run_training(cfg, name="damaged-teacher", storage=Storage(tmp_path / "store"),
                     resources=Resources(max_failures=0))
    message = str(err.value)
    assert "\n" not in message and message.startswith("damaged-teacher: checkpoint ") and "SHA-256" in message


class CaptureReports(ray.train.UserCallback):
    """Records every rank's metrics of every report (Train V2 hands the callback all ranks)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(yaml.safe_dump([metrics]))


def test_two_workers_report_identical_metrics(ray_session, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the controller cannot import tests
    cfg = from_dict(TrainConfig, {**tiny_train({"name": "trades", "attack": {"steps": 2}}, epochs=2), "name": "ddp"})
    log = tmp_path / "reports.yaml"
    result = run_training(cfg, name="ddp-two-workers", storage=Storage(tmp_path / "store"),
                          resources=Resources(num_workers=2, cpus_per_worker=1), callbacks=[CaptureReports(str(log))])
    assert result.error is None
    reports = yaml.safe_load(log.read_text())
    assert len(reports) == 3  # two epochs and the final report
    for per_rank in reports:
        assert len(per_rank) == 2
        assert per_rank[0] == per_rank[1]
    assert "test_clean" in reports[-1][0] and "test_clean" not in reports[-2][0]
