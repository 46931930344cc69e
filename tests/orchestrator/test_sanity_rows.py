"""Sanity rows of an evaluation: one per checkpoint (and per teacher of a student, for its
curve), stored next to the suite's rows, reused by a re-run, shown by orchestrator.evaluate and
in the report; the pool's result equals the single-process one. The points only Square breaks
are re-attacked once the suite's rows are stored; the protocol check reads the checkpoint's
training eps."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from attacks.sanity import SanityParams, confirm_correct
from orchestrator.cli import run_command
from orchestrator.eval_pool import run_local, run_pool
from orchestrator.evaluate import Target, execute, load_suite, plan
from orchestrator.summary import read_masks
from orchestrator.report import build_report
from orchestrator.results import ResultsStore, unpack_mask
from orchestrator.sanity import plan_confirmations, plan_sanity
from orchestrator.sanity_report import CHECKS, format_verdicts, read_verdicts
from orchestrator.storage import Storage
from trainers.checkpoint import load_model, save_model
from trainers.data import as_float, load_dataset

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]
SMALL = SanityParams(points=40, curve_steps=5, unbounded_steps=20, strong_steps=20, strong_restarts=1,
                     transfer_steps=5)
SELECTED = {"extra": {"selection": "val_w_robust", "threat_eps": 0.2}, "metrics": {"is_best": True, "epoch": 3}}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, train_digits_cnn):
    """A teacher and a student that records it (as the training loop does), both 'best' checkpoints."""
    root = tmp_path_factory.mktemp("ck")
    teacher = save_model(root / "teacher" / "best", train_digits_cnn(1, steps=60), dataset="digits", **SELECTED)
    student = save_model(root / "student" / "best", train_digits_cnn(0, steps=60), dataset="digits",
                         extra={**SELECTED["extra"], "teachers": [str(teacher)]}, metrics=SELECTED["metrics"])
    return student, teacher


def tasks_for(student):
    return plan([Target(str(student), "student")], data={"name": "digits"}, split="test", specs=load_suite("quick"),
                shard_size=200, seed=0, batch_size=64)


def test_rows_stored_reused_and_reported(checkpoints, tmp_path):
    storage = Storage(tmp_path)
    store = ResultsStore(storage)
    tasks = tasks_for(checkpoints[0])
    assert execute(tasks, store, sweep="ev", local=True, sanity=SMALL) == len(tasks)
    rows = store.read(kind="sanity")
    assert sorted(r["run"] for r in rows) == ["student", "teacher:teacher/best"]
    assert all(r["key"].startswith("sanity/") and r["n"] == 40 for r in rows)
    assert all(isinstance(r["metrics"]["library_warnings"], list) for r in store.read(kind="eval"))
    written = {r["key"]: r["written_at"] for r in rows}
    # A re-run reuses the rows; other check parameters make new ones.
    assert execute(tasks, store, sweep="ev", local=True, sanity=SMALL) == 0
    assert {r["key"]: r["written_at"] for r in store.read(kind="sanity")} == written
    assert plan_sanity(tasks, store, sweep="ev2", params=SanityParams(points=41)) != []

    verdicts = read_verdicts(store, "ev")
    assert [(v["run"], v["role"]) for v in verdicts] == [("student", "model"), ("teacher:teacher/best", "teacher")]
    student = {f.check: f for f in verdicts[0]["flags"]}
    assert tuple(student) == CHECKS
    assert student["protocol"].status == "ok" and "best val_w_robust on the validation split (epoch 4)" in \
        student["protocol"].reason and "eps 0.2 (the training eps)" in student["protocol"].reason
    assert student["transfer"].status in ("ok", "warn") and student["black_box"].status == "skip"  # quick: no Square
    assert verdicts[1]["curve"]["eps"] == [0.0, 0.05, 0.1, 0.2, 0.4]
    printed = format_verdicts(verdicts)
    assert f"sanity student: {verdicts[0]['verdict'].upper()}" in printed

    text = build_report(storage, "ev")
    assert "## Sanity checks" in text and "![robustness curves](robustness_curves.png)" in text
    assert f"| student | **{verdicts[0]['verdict']}** |" in text
    folder = tmp_path / "reports" / "ev"
    assert (folder / "robustness_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "student,model,protocol,ok," in (folder / "sanity.csv").read_text()
    # An evaluation, not a sweep: no trials table, no TensorBoard command pointing at nothing.
    assert text.startswith("# Evaluation `ev`") and "## Test-split robustness\n" in text
    assert "All trials" not in text and "tensorboard" not in text and "over all test points" in text
    assert sorted(p.name for p in folder.iterdir()) == ["evaluation.csv", "report.md", "robustness_curves.png",
                                                        "sanity.csv", "w_robust.png"]


def test_sanity_can_be_turned_off(checkpoints, tmp_path):
    store = ResultsStore(Storage(tmp_path))
    execute(tasks_for(checkpoints[0]), store, sweep="ev", local=True, sanity=None)
    assert store.read(kind="sanity") == [] and read_verdicts(store, "ev") == []
    assert "Sanity checks" not in build_report(Storage(tmp_path), "ev")


def test_pool_equals_single_process(ray_session, checkpoints, tmp_path):
    """The model checks and the re-attack of the points only Square broke (planned from the rows of
    a suite with Square)."""
    store = ResultsStore(Storage(tmp_path))
    suite = tmp_path / "suite.yaml"
    suite.write_text("- {name: fgsm, label: FGSM}\n- {name: square, label: Square-200, params: {n_queries: 200}}\n")
    tasks = plan([Target(str(checkpoints[0]), "student")], data={"name": "digits"}, split="test",
                 specs=load_suite(str(suite)), shard_size=400, seed=0, batch_size=64)
    execute(tasks, store, sweep="ev", local=True, sanity=None)
    params = replace(SMALL, confirm_points=4, confirm_steps=10, confirm_restarts=1)
    checks = plan_sanity(tasks, store, sweep="ev", params=params) + plan_confirmations(tasks, store, sweep="ev",
                                                                                          params=params)
    local = {t.key: r for t, r in run_local(checks)}
    pooled = {t.key: r for t, r in run_pool(checks, actors=1)}
    assert set(local) == set(pooled) and len(local) == 3
    for key in local:
        if key.startswith("confirm/"):
            local[key]["metrics"].pop("seconds"), pooled[key]["metrics"].pop("seconds")
            assert (local[key]["survived"], local[key]["metrics"]) == (pooled[key]["survived"], pooled[key]["metrics"])
            continue
        for field in ("flags", "indices", "whitebox", "transfer", "facts"):
            assert local[key][field] == pooled[key][field], (key, field)


def test_evaluate_prints_verdicts_from_a_fresh_directory(checkpoints, tmp_path):
    """Default paths (relative storage `runs`), the single-process path, a tiny checkpoint."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "orchestrator.evaluate", "--checkpoints", str(checkpoints[0]), "--suite", "quick",
           "--local", "--sanity-points", "30"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("sanity student/best: ") for line in lines), out.stdout
    assert any(line.startswith("sanity teacher:teacher/best: ") for line in lines), out.stdout
    rows = ResultsStore(Storage(tmp_path / "runs")).read(kind="sanity")
    assert len(rows) == 2 and {r["n"] for r in rows} == {30}


def test_bad_sanity_points_is_a_one_line_error(checkpoints, tmp_path, capsys):
    argv = ["--checkpoints", str(checkpoints[0]), "--storage", str(tmp_path / "runs"), "--sanity-points", "-1"]
    assert run_command("evaluate", argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --sanity-points: must be >= 0") and len(err.splitlines()) == 1
    assert not (tmp_path / "runs" / "results").exists()


def test_checks_run_at_the_threat_models_eps_with_the_suites_ce_pgd(checkpoints, tmp_path):
    """A suite entry with its own eps, or a PGD on the CW loss, is not the short attack of the
    steps check: that is the suite's CE PGD at the evaluation's eps (PGD-10 when it has none)."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("- {name: pgd, label: PGD-wide, params: {eps: 0.4}}\n"
                     "- {name: pgd, label: PGD-CW, params: {loss: cw}}\n"
                     "- {name: pgd, label: PGD-20, params: {steps: 20}}\n")
    store = ResultsStore(Storage(tmp_path / "s"))
    target = [Target(str(checkpoints[0]), "student")]
    tasks = plan(target, data={"name": "digits"}, split="test", specs=load_suite(str(suite)), shard_size=400,
                 seed=0, batch_size=64, eps=0.1)
    student = next(t for t in plan_sanity(tasks, store, sweep="ev", params=SMALL) if t.run == "student")
    assert student.eps == 0.1 and student.weak.display == "PGD-20" and student.weak.params["eps"] == 0.1
    execute(tasks, store, sweep="ev", local=True, sanity=None)  # the report's threat model: the evaluation's eps
    assert store.read(kind="plan", sweep="ev")[0]["metrics"]["eps"] == 0.1
    no_ce = plan(target, data={"name": "digits"}, split="test", specs=load_suite(str(suite))[:2], shard_size=400,
                 seed=0, batch_size=64, eps=0.1)
    fallback = next(t for t in plan_sanity(no_ce, store, sweep="ev2", params=SMALL) if t.run == "student")
    assert fallback.eps == 0.1 and fallback.weak.key == '{"name": "pgd", "params": {"steps": 10}}'


def test_rows_of_a_validation_split_are_keyed_by_how_it_was_carved(checkpoints):
    """The test split is fixed; a validation split with another size or seed holds other points."""
    def keys(**data):
        tasks = plan([Target(str(checkpoints[0]), "student")], data={"name": "digits", **data}, split="val",
                     specs=load_suite("quick"), shard_size=400, seed=0, batch_size=64)
        return {t.key for t in tasks} | {t.clean_key for t in tasks}
    assert not keys(val_size=100, split_seed=0) & keys(val_size=100, split_seed=1)
    assert not keys(val_size=100, split_seed=0) & keys(val_size=120, split_seed=0)
    assert keys(val_size=100, split_seed=0) == keys(val_size=100, split_seed=0)


def test_points_only_square_breaks_are_reattacked_and_stored(checkpoints, tmp_path):
    """FGSM alone leaves many points that Square breaks: once the suite's rows are stored, a sample
    of them is re-attacked (a row with both counts and the survivors' mask, reused by a re-run)
    and the verdict counts the survivors."""
    suite = tmp_path / "suite.yaml"
    suite.write_text("- {name: fgsm, label: FGSM}\n- {name: square, label: Square-200, params: {n_queries: 200}}\n")
    store = ResultsStore(Storage(tmp_path / "s"))
    tasks = plan([Target(str(checkpoints[0]), "student")], data={"name": "digits"}, split="test",
                 specs=load_suite(str(suite)), shard_size=400, seed=0, batch_size=64)
    params = replace(SMALL, confirm_points=4, confirm_steps=10, confirm_restarts=1)
    execute(tasks, store, sweep="ev", local=True, sanity=params)
    (row,) = store.read(kind="sanity_confirm")
    masks = read_masks(store, "ev")["student"]
    only = torch.nonzero(masks["FGSM"] & ~masks["Square-200"]).flatten().tolist()
    m = row["metrics"]
    assert m["square_only"] == len(only) > 4 and m["reattacked"] == row["n"] == 4 and set(m["indices"]) <= set(only)
    data = load_dataset("digits")
    idx = torch.tensor(m["indices"])
    survived, broken = confirm_correct(load_model(checkpoints[0])[0], as_float(data.test.x[idx]), data.test.y[idx],
                                       eps=0.2, params=params, seed=0, batch_size=64)
    assert unpack_mask(row["mask"], 4).tolist() == survived.tolist() and m["broken_by"] == broken
    assert m["survived"] == row["correct"] == int(survived.sum())
    flag = {f.check: f for f in read_verdicts(store, "ev")[0]["flags"]}["black_box"]
    assert flag.reason.startswith(f"Square breaks {len(only)} points") and \
        f"{m['survived']} of the 4 survive APGD-T and PGD-CW-10x1 (a sample of 4" in flag.reason
    assert flag.status == ("warn" if flag.figures["confirmed"] > 0.002 * 397 else "ok")
    execute(tasks, store, sweep="ev", local=True, sanity=params)  # a re-run reuses the row
    assert [r["written_at"] for r in store.read(kind="sanity_confirm")] == [row["written_at"]]


def test_protocol_warns_on_a_checkpoint_trained_at_another_eps(tmp_path, train_digits_cnn):
    path = save_model(tmp_path / "ck" / "best", train_digits_cnn(0, steps=20), dataset="digits",
                      extra={**SELECTED["extra"], "threat_eps": 0.1}, metrics=SELECTED["metrics"])
    store = ResultsStore(Storage(tmp_path / "s"))
    tasks = plan([Target(str(path), "m")], data={"name": "digits"}, split="test", specs=load_suite("quick"),
                 shard_size=400, seed=0, batch_size=64)
    execute(tasks, store, sweep="ev", local=True, sanity=SMALL)
    protocol = {f.check: f for f in read_verdicts(store, "ev")[0]["flags"]}["protocol"]
    assert protocol.status == "warn" and protocol.figures["threat_eps"] == 0.1
    assert "evaluated at eps 0.2, but the checkpoint was trained at eps 0.1 (its threat_eps)" in protocol.reason
