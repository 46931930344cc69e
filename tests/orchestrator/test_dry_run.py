"""`python -m orchestrator.sweep --dry-run`: the resolved config and the plan (teachers to train or
reuse, trials, evaluation, resources), from a new folder with the default storage, with nothing
trained, written or started."""
from __future__ import annotations

import subprocess
import sys

import yaml

from orchestrator.config import SweepConfig, load_sweep_config
from search_spaces import preset_path
from trainers.config import from_dict, to_dict


def test_dry_run_prints_the_plan_and_the_resolved_config_and_writes_nothing(tmp_path):
    sets = ["search.num_samples=4", "teachers[1].train.epochs=12"]
    run = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "--dry-run", *(a for s in sets for a in ("--set", s))],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert out.startswith("== demo: dry run (nothing is trained, written or started)\nresolved config:\n")
    assert "Ray logs:" not in out and "Traceback" not in run.stderr  # Ray was not started
    assert list(tmp_path.iterdir()) == []  # not even the default storage folder
    plan = out[out.index("\nthreat model:"):]
    assert "threat model: L-inf eps 0.2 on digits" in plan
    assert f"storage: {tmp_path / 'runs'} (a new sweep)" in plan
    assert "cnn_pgd_at           small_cnn      pgd_at     to train (12 epochs)" in plan
    assert "vit_natural          vit_tiny       natural    to train (36 epochs)" in plan
    assert "search: 4 trials, 2 at a time" in plan and "first points: method=darht; method=b_mtard" in plan
    assert "suite demo (FGSM, PGD-20, CW-inf, APGD-CE, Square-1000)" in plan
    assert "baselines cnn_pgd_at, mlp_pgd_at, vit_natural" in plan
    # The printed config is the one the sweep would run, and a config file as it stands.
    printed = yaml.safe_load(out[out.index("resolved config:\n") + len("resolved config:\n"):out.index("\nthreat model:")])
    cfg = from_dict(SweepConfig, printed)
    assert to_dict(cfg) == printed
    assert cfg.search.num_samples == 4 and cfg.teachers[1].train.epochs == 12
    assert cfg.storage == str(tmp_path / "runs")
    expected = load_sweep_config(str(preset_path("demo")), {"storage": str(tmp_path / "runs")}, sets)
    assert to_dict(cfg) == to_dict(expected)


def test_dry_run_refuses_what_the_sweep_would_refuse(tmp_path):
    run = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "--dry-run", "--resume"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.strip() == f"error: name: no sweep 'demo' in {tmp_path / 'runs'} to resume"
    assert list(tmp_path.iterdir()) == []
