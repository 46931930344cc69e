"""A tiny sweep end to end on a private Ray: teachers pretrained, two Tune + Optuna trials (each a
Ray Train run), evaluation on the actor pool, the report rebuilt from the store alone, TensorBoard
events per trial; then resume and re-run semantics."""
from __future__ import annotations

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orchestrator import sweep as sweep_entry
from orchestrator.cli import run_cli
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.sweep_config import load_sweep_config
from orchestrator.sweeping import run_sweep
from orchestrator.teacher_registry import TeacherRegistry
from tiny import tiny_sweep

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def finished_sweep(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(str(root / "store"))))
    cfg = load_sweep_config(str(path))
    run_sweep(cfg)
    return cfg, path, Storage(cfg.storage)


def test_trials_teachers_and_evaluation_rows(finished_sweep):
    cfg, _, storage = finished_sweep
    store = ResultsStore(storage)
    trials = store.read(kind="trial", sweep="tiny")
    assert len(trials) == 2
    for t in trials:
        assert t["metrics"]["error"] is None and t["metrics"]["checkpoint"].endswith("/best")
        assert 0 <= t["metrics"]["final"]["best_val_w_robust"] <= 1
    assert {r["metrics"]["name"] for r in TeacherRegistry(storage).rows()} == {"t_at", "t_nat"}
    epochs = store.read(kind="epoch", sweep="tiny")
    assert {r["run"] for r in epochs} == {f"{t['metrics']['method']}-{t['run']}" for t in trials}
    plan = store.read(kind="plan", sweep="tiny")[0]["metrics"]["tasks"]
    assert {e["run"] for e in plan} == {"teacher:t_at", next(e["run"] for e in plan if e["run"] != "teacher:t_at")}
    assert {e["attack"] for e in plan} == {"FGSM", "PGD-10"}


def test_report_is_rebuilt_from_the_store_alone(finished_sweep, capsys):
    cfg, _, storage = finished_sweep
    assert run_cli(__import__("orchestrator.report", fromlist=["main"]).main,
                   ["--sweep", "tiny", "--storage", storage.uri]) == 0
    out = capsys.readouterr().out
    assert "teacher:t_at" in out and "PGD-10" in out and "worst case" in out and "tensorboard --logdir" in out
    folder = storage.local("reports", "tiny")
    for name in ("report.md", "evaluation.csv", "trials.csv", "pareto.png", "w_robust.png"):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_run_per_trial_with_hparams(finished_sweep):
    cfg, _, storage = finished_sweep
    trials = ResultsStore(storage).read(kind="trial", sweep="tiny")
    for t in trials:
        acc = EventAccumulator(str(storage.local("tensorboard", "tiny", t["run"])))
        acc.Reload()
        assert {"val/w_robust", "val/clean", "val/pgd", "train/loss"} <= set(acc.Tags()["scalars"])
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")


def test_same_config_continues_and_a_different_one_is_refused(finished_sweep, capsys):
    cfg, path, storage = finished_sweep
    store = ResultsStore(storage)
    before = {r["key"] for r in store.read()}
    trial_files = sorted(p.name for p in storage.local("results").iterdir())
    changed = path.with_name("changed.yaml")
    raw = yaml.safe_load(path.read_text())
    raw["search"]["num_samples"] = 3
    changed.write_text(yaml.safe_dump(raw))
    assert run_cli(sweep_entry.main, ["--config", str(changed)]) == 2
    assert "a different sweep named 'tiny'" in capsys.readouterr().err
    assert sorted(p.name for p in storage.local("results").iterdir()) == trial_files
    assert run_cli(sweep_entry.main, ["--config", str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "continuing the sweep" in out and "teacher:t_at" in out
    assert {r["key"] for r in store.read()} == before
    assert len(store.read(kind="trial", sweep="tiny")) == 2


def test_resume_of_an_unknown_sweep_is_refused(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(str(tmp_path / "store"), name="never")))
    assert run_cli(sweep_entry.main, ["--config", str(path), "--resume"]) == 2
    assert "no sweep 'never'" in capsys.readouterr().err
