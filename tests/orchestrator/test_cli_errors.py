"""Bad input to any entry point: one line on stderr naming the field or file, exit code 2, no
traceback, and nothing in the storage path is written or overwritten."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import run_command
from search_spaces import preset_path
from trainers.checkpoint import save_model
from trainers.models import DataCfg, build_model

DEMO = yaml.safe_load(preset_path("demo").read_text())
README = str(Path(__file__).resolve().parents[2] / "README.md")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def run_and_check(command, argv, capsys, storage: Path, *needles: str) -> str:
    before = snapshot(storage)
    assert run_command(command, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert snapshot(storage) == before
    return err


def write_sweep(tmp_path: Path, mutate) -> str:
    cfg = copy.deepcopy(DEMO)
    mutate(cfg)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


SWEEP_CASES = {
    "unknown field": (lambda c: c.update(serach={}), ["serach", "search"]),
    "wrong type": (lambda c: c["search"].update(num_samples="eight"), ["search.num_samples", "int"]),
    "unknown architecture": (lambda c: c["teachers"][0]["train"]["model"].update(arch="resnet-18"), ["resnet18"]),
    "unknown method": (lambda c: c["search"]["options"].update(method=["darht", "rslda"]), ["rslad"]),
    "unknown dataset": (lambda c: c["data"].update(name="cifar11"), ["cifar10"]),
    "unknown teacher": (lambda c: c["search"]["options"]["rslad"].update(teacher=["nope"]), ["nope"]),
    "empty space": (lambda c: c["search"]["options"].update(method=[]), ["search.options"]),
    "bad method option": (lambda c: c["search"]["options"]["darht"].update(mc_samples=[0]), ["mc_samples"]),
    "bad option name": (lambda c: c["search"]["options"]["darht"].update(mc_sample=[2]), ["mc_sample", "mc_samples"]),
    "bad attack option": (lambda c: c["search"]["options"]["rslad"].update(attack={"stpes": 5}),
                          ["search.options.rslad.attack.stpes", "'steps'"]),
    "unknown method block": (lambda c: c["search"]["options"].update(rsald={"teacher": ["t"]}),
                             ["search.options.rsald", "'rslad'"]),
    "unknown suite": (lambda c: c["evaluation"].update(suite="papr"), ["evaluation.suite", "'papr'", "paper"]),
    "suite file not YAML": (lambda c: c["evaluation"].update(suite=README), ["evaluation.suite", "not valid YAML"]),
    "suite file not a list": (lambda c: c["evaluation"].update(suite=str(preset_path("demo"))),
                              ["evaluation.suite", "list of attacks"]),
    "unknown model argument": (lambda c: c["student"]["model"].update(kwargs={"widht": 8}),
                               ["student.model.kwargs.widht", "'width'"]),
}


@pytest.mark.parametrize("case", sorted(SWEEP_CASES))
def test_sweep_config_errors(case, tmp_path, capsys):
    mutate, needles = SWEEP_CASES[case]
    storage = tmp_path / "store"
    (storage / "keep").mkdir(parents=True)
    (storage / "keep" / "file.txt").write_text("untouched")
    config = write_sweep(tmp_path, mutate)
    run_and_check("sweep", ["--config", config, "--storage", str(storage)], capsys, storage, *needles)


def test_sweep_missing_config_file(tmp_path, capsys):
    run_and_check("sweep", ["--config", str(tmp_path / "nope.yaml")], capsys, tmp_path, "nope.yaml")


def test_unknown_cli_flag_is_one_line(capsys, tmp_path):
    run_and_check("sweep", ["--bogus"], capsys, tmp_path, "--bogus")


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory) -> Path:
    model = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), (0.3,), (0.37,)), width=4, hidden=8)
    return save_model(tmp_path_factory.mktemp("ck") / "model", model, dataset="digits")


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory) -> Path:
    model = build_model("small_cnn", num_classes=5, data_cfg=DataCfg((3, 8, 8), (0.5,) * 3, (0.25,) * 3), width=4)
    return save_model(tmp_path_factory.mktemp("ck") / "model", model, dataset="synthetic")


@pytest.mark.parametrize("which, needles", [("other dataset", ["teachers", "for 'synthetic', not 'digits'"]),
                                             ("missing", ["nope"])])
def test_sweep_teacher_checkpoint_errors_come_before_anything_is_written(which, needles, tmp_path, capsys,
                                                                        synthetic_checkpoint):
    checkpoint = str(synthetic_checkpoint) if which == "other dataset" else str(tmp_path / "nope")
    config = write_sweep(tmp_path, lambda c: c["teachers"][0].update(checkpoint=checkpoint))
    storage = tmp_path / "store"
    run_and_check("sweep", ["--config", config, "--storage", str(storage)], capsys, storage, *needles)
    assert not storage.exists()


def test_evaluate_unknown_attack(tmp_path, capsys, digits_checkpoint):
    suite = tmp_path / "suite.yaml"
    suite.write_text("- {name: pgdd}\n")
    run_and_check("evaluate", ["--checkpoints", str(digits_checkpoint), "--suite", str(suite), "--storage",
                             str(tmp_path / "s"), "--local"], capsys, tmp_path, "pgdd", "pgd")


def test_evaluate_unknown_suite(tmp_path, capsys, digits_checkpoint):
    run_and_check("evaluate", ["--checkpoints", str(digits_checkpoint), "--suite", "papr", "--storage",
                             str(tmp_path / "s"), "--local"], capsys, tmp_path, "papr")


def test_evaluate_eps_above_one(tmp_path, capsys, digits_checkpoint):
    run_and_check("evaluate", ["--checkpoints", str(digits_checkpoint), "--suite", "quick", "--eps", "8",
                             "--storage", str(tmp_path / "s"), "--local"], capsys, tmp_path, "eps")


def test_evaluate_attack_eps_above_one(tmp_path, capsys, digits_checkpoint):
    suite = tmp_path / "suite.yaml"
    suite.write_text("- {name: pgd, params: {eps: 8}}\n")
    run_and_check("evaluate", ["--checkpoints", str(digits_checkpoint), "--suite", str(suite), "--storage",
                             str(tmp_path / "s"), "--local"], capsys, tmp_path, "eps")


@pytest.mark.parametrize("suite_text, needles", [
    ("- {name: pgd, params: {steps: 20}}\n- {name: pgd, params: {steps: 100}}\n",
     ("suite[1]", "'pgd' is the name of suite[0] too", "distinct label")),
    ("- {name: pgd, label: clean}\n", ("suite[0]", "'clean' is a row of the report")),
])
def test_evaluate_attacks_reported_under_one_name(suite_text, needles, tmp_path, capsys, digits_checkpoint):
    """Rows are grouped by the attack's name: two attacks under one name would be averaged."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text)
    run_and_check("evaluate", ["--checkpoints", str(digits_checkpoint), "--suite", str(suite), "--storage",
                             str(tmp_path / "s"), "--local"], capsys, tmp_path, *needles)


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    run_and_check("evaluate", ["--checkpoints", str(tmp_path / "missing"), "--storage", str(tmp_path / "s"),
                             "--local"], capsys, tmp_path, "missing")


def test_evaluate_checkpoints_of_different_datasets(tmp_path, capsys, digits_checkpoint, synthetic_checkpoint):
    run_and_check("evaluate", ["--checkpoints", str(digits_checkpoint), str(synthetic_checkpoint), "--storage",
                             str(tmp_path / "s"), "--local"], capsys, tmp_path, "different datasets")


def test_evaluate_corrupt_checkpoint(tmp_path, capsys, digits_checkpoint):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(digits_checkpoint, bad)
    (bad / "model.json").write_text("{not json")
    run_and_check("evaluate", ["--checkpoints", str(bad), "--storage", str(tmp_path / "s"), "--local"],
                  capsys, tmp_path, "model.json")


def test_pretrain_duplicate_names(tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"storage": str(tmp_path / "s"), "teachers": [{"name": "a"}, {"name": "a"}]}))
    run_and_check("pretrain", ["--config", str(cfg)], capsys, tmp_path, "teachers", "duplicate")


def test_distill_unknown_teacher(tmp_path, capsys):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump({"storage": str(tmp_path / "s"), "train": {
        "method": {"name": "rslad"}, "teachers": ["no_such_teacher"]}}))
    run_and_check("distill", ["--config", str(cfg)], capsys, tmp_path, "no_such_teacher")


def test_distill_bad_method_parameter(tmp_path, capsys):
    cfg = tmp_path / "d.yaml"
    cfg.write_text(yaml.safe_dump({"storage": str(tmp_path / "s"), "train": {"method": {"name": "darht", "dropout": 1.5}}}))
    run_and_check("distill", ["--config", str(cfg)], capsys, tmp_path, "train.method.dropout")


def test_report_unknown_sweep_is_not_an_error(tmp_path, capsys):
    assert run_command("report", ["--sweep", "nothing", "--storage", str(tmp_path)]) == 0
    assert "no results" in capsys.readouterr().out


def test_relative_storage_is_refused_inside_a_submitted_job(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray's job supervisor sets
    run_and_check("sweep", ["--storage", "runs"], capsys, tmp_path, "storage: 'runs' is relative", "s3://")


CONSOLE_SCRIPT = str(Path(sys.executable).with_name("robust-distill"))


def test_console_script_dispatches_to_the_entry_points(tmp_path):
    listing = subprocess.run([CONSOLE_SCRIPT, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and all(c in listing.stdout for c in ("sweep", "pretrain", "distill", "evaluate", "report"))
    bare = subprocess.run([CONSOLE_SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and bare.stderr.startswith("error: robust-distill: a command is required")
    unknown = subprocess.run([CONSOLE_SCRIPT, "swep"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "unknown command 'swep'" in unknown.stderr
    # The default storage is relative to the working directory the user runs it in.
    rebuilt = subprocess.run([CONSOLE_SCRIPT, "report", "--sweep", "nothing"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert rebuilt.returncode == 0 and rebuilt.stdout.strip() == f"no results for sweep 'nothing' in {tmp_path / 'runs'}"
    bad = subprocess.run([CONSOLE_SCRIPT, "sweep", "--config", "missing.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: config file 'missing.yaml' does not exist"
    assert "Traceback" not in bad.stderr and not (tmp_path / "runs").exists()
