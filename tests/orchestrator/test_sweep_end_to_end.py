"""The sweep the way the README runs it: `python -m orchestrator.sweep --config tiny.yaml` as a
subprocess whose working directory is a fresh copy of the project, with the default relative
storage `runs`. Asserted on what the user is promised: the console (stage headers, one line per
teacher and trial, no Ray noise), every trial in the report, the top-N students and the baselines
evaluated on the test split, one TensorBoard run per trial in one HParams experiment as TensorBoard
serves it, every trial in the stored Optuna study, trial / epoch / final rows in the store; then
the report rebuilt from the store alone, and resume / re-run semantics."""
from __future__ import annotations

from functools import partial

import optuna
import pytest
import ray
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orchestrator.cli import run_command
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.teacher_registry import TeacherRegistry
from project_copy import RAY_NOISE, copy_project, run_entry
from search_spaces.distill import space
from search_spaces.domains import parameter_domains
from tensorboard_view import columns, hparams_view
from tiny import tiny_sweep
from trainers.checkpoint import read_document

pytestmark = pytest.mark.timeout(600)
TRIALS = 2
DIGITS_TEST_POINTS = 397
EPS = 0.25


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    ray.shutdown()  # the sweep starts its own Ray; two on one machine confuse Train's cleaner
    project = copy_project(tmp_path_factory.mktemp("clone"))
    # eps 0.25, not digits' default 0.2: the sweep's threat model reaches training and evaluation
    (project / "tiny.yaml").write_text(yaml.safe_dump({**tiny_sweep(None, num_samples=TRIALS), "eps": EPS}))
    run = run_entry(project, "orchestrator.sweep", "--config", "tiny.yaml")
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return project, run, Storage(project / "runs")


def trial_rows(storage: Storage) -> list[dict]:
    return ResultsStore(storage).read(kind="trial", sweep="tiny")


def test_console_shows_stages_teachers_and_trials_without_ray_noise(finished_sweep):
    _, run, storage = finished_sweep
    out = run.stdout
    for stage in ("1/4 teachers", "2/4 search", "3/4 evaluation", "4/4 report"):
        assert f"== tiny: {stage}" in out
    assert out.count("Ray logs: ") == 1
    assert {line.split()[1] for line in out.splitlines() if line.startswith("teacher ")} == {"t_at", "t_nat"}
    trial_lines = [line for line in out.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == TRIALS and all(" done " in line and "W-Robust" in line for line in trial_lines)
    for noise in RAY_NOISE:
        assert noise not in out + run.stderr, noise


def test_every_trial_is_in_the_store_and_the_report(finished_sweep):
    project, run, storage = finished_sweep
    trials = trial_rows(storage)
    assert len(trials) == TRIALS
    store = ResultsStore(storage)
    report = (project / "runs" / "reports" / "tiny" / "report.md").read_text()
    for t in trials:
        label = f"{t['metrics']['method']}-{t['run']}"
        assert t["metrics"]["error"] is None and t["metrics"]["checkpoint"].endswith("/best")
        assert 0 <= t["metrics"]["final"]["best_val_w_robust"] <= 1
        assert [r["epoch"] for r in store.read(kind="epoch", sweep="tiny", run=label)] == [0]
        assert len(store.read(kind="final", sweep="tiny", run=label)) == 1
        assert f"| {t['run']} | {t['metrics']['method']} |" in report
    assert {r["metrics"]["name"] for r in TeacherRegistry(storage).rows()} == {"t_at", "t_nat"}
    assert "## Teachers" in report and "| t_at | small_cnn | pgd_at |" in report
    assert "not comparable with the papers'" in report and "eps = 0.25 on `digits`" in report
    assert report in run.stdout


def test_top_students_and_baselines_are_evaluated_on_all_test_points(finished_sweep):
    _, _, storage = finished_sweep
    store = ResultsStore(storage)
    best = max(trial_rows(storage), key=lambda t: t["metrics"]["final"]["best_val_w_robust"])
    student = f"{best['metrics']['method']}-{best['run']}"
    plan = store.read(kind="plan", sweep="tiny")[0]["metrics"]
    assert plan["dataset"] == "digits" and plan["split"] == "test" and plan["eps"] == pytest.approx(EPS)
    assert read_document(best["metrics"]["checkpoint"], "model")["threat_eps"] == pytest.approx(EPS)
    assert {e["run"] for e in plan["tasks"]} == {"teacher:t_at", student}
    evals = store.read(kind="eval", sweep="tiny")
    for run in ("teacher:t_at", student):
        attacks = {r["attack"]: r["n"] for r in evals if r["run"] == run}
        assert attacks == {"clean": DIGITS_TEST_POINTS, "FGSM": DIGITS_TEST_POINTS, "PGD-10": DIGITS_TEST_POINTS}


def test_one_tensorboard_run_per_trial_with_scalars_and_hparams(finished_sweep):
    project, _, storage = finished_sweep
    logdir = project / "runs" / "tensorboard" / "tiny"
    runs = sorted(p.name for p in logdir.iterdir() if p.is_dir())
    assert runs == sorted(t["run"] for t in trial_rows(storage))
    for run in runs:
        acc = EventAccumulator(str(logdir / run))
        acc.Reload()
        assert {"val/w_robust", "val/clean", "val/pgd", "train/loss"} <= set(acc.Tags()["scalars"])
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert_one_hparams_experiment(project)


def assert_one_hparams_experiment(project):
    """TensorBoard's HParams view: every parameter the space can suggest a column, every trial a
    session with its own parameters."""
    options = yaml.safe_load((project / "tiny.yaml").read_text())["search"]["options"]
    experiment, groups = hparams_view(project / "runs" / "tensorboard" / "tiny")
    assert set(columns(experiment)) == set(parameter_domains(partial(space, options=options))) | {"teachers"}
    trials = {t["run"]: t["metrics"]["params"] for t in trial_rows(Storage(project / "runs"))}
    sessions = {s["name"]: g["hparams"] for g in groups for s in g["sessions"]}
    assert set(sessions) == set(trials)
    for run, params in trials.items():
        assert sessions[run] == {k: v if isinstance(v, str) else float(v) for k, v in params.items()}


def assert_every_trial_in_the_optuna_study(project):
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(project / "runs" / "optuna" / "tiny.log")))
    study = optuna.load_study(study_name="tiny", storage=journal)
    trials = {t["run"]: t for t in trial_rows(Storage(project / "runs"))}
    assert {t.user_attrs["tune_trial_id"] for t in study.trials} == set(trials) and len(study.trials) == TRIALS
    for t in study.trials:
        row = trials[t.user_attrs["tune_trial_id"]]["metrics"]
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.values == [pytest.approx(row["final"]["best_val_w_robust"])]
        assert t.params["method"] == row["method"] and t.user_attrs["teachers"] == "+".join(row["teachers"])
        assert {k: v for k, v in row["params"].items() if k != "teachers"} == t.params


def test_every_trial_is_in_the_stored_optuna_study(finished_sweep):
    project, run, _ = finished_sweep
    assert_every_trial_in_the_optuna_study(project)
    assert f"optuna-dashboard {project / 'runs' / 'optuna' / 'tiny.log'}" in run.stdout
    assert "## Parameter importances (validation split)" in run.stdout


def test_report_is_rebuilt_from_the_store_alone(finished_sweep):
    project, _, _ = finished_sweep
    folder = project / "runs" / "reports" / "tiny"
    for name in ("report.md", "evaluation.csv", "trials.csv", "pareto.png", "w_robust.png"):
        (folder / name).unlink()
    (folder / "importance.png").unlink(missing_ok=True)  # drawn when two trials differ in a parameter
    run = run_entry(project, "orchestrator.report", "--sweep", "tiny", timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "teacher:t_at" in run.stdout and "PGD-10" in run.stdout and "worst case" in run.stdout
    assert f"tensorboard --logdir {project / 'runs' / 'tensorboard' / 'tiny'}" in run.stdout
    for name in ("report.md", "evaluation.csv", "trials.csv", "pareto.png", "w_robust.png"):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_config_continues_and_a_different_one_is_refused(finished_sweep, capsys, monkeypatch):
    project, _, storage = finished_sweep
    monkeypatch.chdir(project)  # the config's storage is the relative default
    store = ResultsStore(storage)
    before = {r["key"] for r in store.read()}
    files = sorted(p.name for p in storage.local("results").iterdir())
    raw = yaml.safe_load((project / "tiny.yaml").read_text())
    raw["search"]["num_samples"] = 3
    (project / "changed.yaml").write_text(yaml.safe_dump(raw))
    assert run_command("sweep", ["--config", "changed.yaml"]) == 2
    assert "a different sweep named 'tiny'" in capsys.readouterr().err
    assert sorted(p.name for p in storage.local("results").iterdir()) == files
    assert run_command("sweep", ["--config", "tiny.yaml", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "continuing the sweep" in out and "teacher:t_at" in out and "in the registry, not retrained" in out
    assert {r["key"] for r in store.read()} == before
    assert len(trial_rows(storage)) == TRIALS
    assert_every_trial_in_the_optuna_study(project)
    assert_one_hparams_experiment(project)


def test_dry_run_of_the_finished_sweep_reuses_everything(finished_sweep):
    project, _, storage = finished_sweep
    files = sorted(str(p) for p in (project / "runs").rglob("*"))
    run = run_entry(project, "orchestrator.sweep", "--config", "tiny.yaml", "--dry-run", timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"storage: {project / 'runs'} (continues the sweep found there)" in run.stdout
    assert "t_at                 small_cnn      pgd_at     in the registry" in run.stdout
    assert "t_nat                small_cnn      natural    in the registry" in run.stdout
    assert "threat model: L-inf eps 0.25 on digits" in run.stdout
    assert sorted(str(p) for p in (project / "runs").rglob("*")) == files


def test_resume_of_an_unknown_sweep_is_refused(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(str(tmp_path / "store"), name="never")))
    assert run_command("sweep", ["--config", str(path), "--resume"]) == 2
    assert "no sweep 'never'" in capsys.readouterr().err
