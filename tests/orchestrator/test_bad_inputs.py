"""Bad input, table-driven, against a storage folder that already holds results: a teacher
registry, a distillation run, an evaluation with its report. Every case must exit with code 2,
print one line naming the field or file, no traceback, and leave every file under the storage
folder byte-for-byte unchanged (hashed before and after) - including names that try to leave it.

The folder is built in-process with the same code the jobs use (trainers.fit, the registry, the
evaluation on one process), so no Ray is needed: every case here is refused before Ray starts."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator.cli import run_command
from orchestrator.evaluate import evaluate_checkpoints
from orchestrator.report import build_report
from orchestrator.storage import Storage
from orchestrator.teacher_registry import TeacherRegistry, TeacherSpec
from tiny import tiny_train
from trainers import TrainConfig, fit
from trainers.checkpoint import save_model
from trainers.config import from_dict
from trainers.models import DataCfg, build_model


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """A populated storage folder and the bad files the cases point at."""
    base = tmp_path_factory.mktemp("bad-inputs")
    storage = Storage(base / "store")
    spec = TeacherSpec(name="t_at", train=from_dict(TrainConfig, tiny_train({"name": "pgd_at", "attack": {"steps": 1}},
                                                                           validation={"pgd_steps": 1,
                                                                                       "max_examples": 32})))
    teacher_run = base / "teacher-run"
    result = fit(spec.train.replace(output_dir=str(teacher_run)))
    registry = TeacherRegistry(storage)
    teacher = registry.register(spec, teacher_run, result.final)["metrics"]["path"]
    student_run = base / "student-run"
    fit(from_dict(TrainConfig, tiny_train({"name": "rslad", "attack": {"steps": 1}}, teachers=[teacher],
                                          output_dir=str(student_run),
                                          validation={"pgd_steps": 1, "max_examples": 32})))
    storage.replace_dir(student_run, "runs", "d1")
    checkpoint = storage.local("runs", "d1", "best")
    evaluate_checkpoints([str(checkpoint)], storage=storage, name="ev1", suite="quick", local=True, sanity=None)
    build_report(storage, "ev1")

    bad = base / "bad"
    damaged = {}
    for kind in ("truncated", "header", "other_arch", "pickle", "not_a_checkpoint"):
        folder = bad / kind
        folder.mkdir(parents=True)
        damaged[kind] = str(folder)
        if kind == "not_a_checkpoint":
            (folder / "notes.txt").write_text("not weights")
            continue
        for name in ("model.json", "model.safetensors"):
            (folder / name).write_bytes((checkpoint / name).read_bytes())
    weights = (checkpoint / "model.safetensors").read_bytes()
    (bad / "truncated" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    (bad / "header" / "model.safetensors").write_bytes(b"\xff" * 8 + weights[8:])
    other = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), (0.3,), (0.37,)), width=6, hidden=8)
    save_model(bad / "other_arch", other, dataset="digits")
    sidecar = json.loads((bad / "other_arch" / "model.json").read_text())
    sidecar["model"] = json.loads((checkpoint / "model.json").read_text())["model"]  # claims the student's arch
    (bad / "other_arch" / "model.json").write_text(json.dumps(sidecar))
    torch.save({"w": torch.zeros(3)}, bad / "pickle" / "model.safetensors")
    torch.save({"w": torch.zeros(3)}, bad / "weights.pt")

    distill_cfg = base / "distill.yaml"
    distill_cfg.write_text(yaml.safe_dump({"name": "d2", "storage": str(storage.uri),
                                           "train": tiny_train({"name": "rslad"}, teachers=["t_at"])}))
    pretrain_cfg = base / "pretrain.yaml"
    pretrain_cfg.write_text(yaml.safe_dump({"storage": str(storage.uri), "teachers": [{"name": "t_at",
                                                                                      "train": spec.train.model_dump()}]}))
    (base / "folder.yaml").mkdir()
    return {"S": storage.uri, "CK": str(checkpoint), "FILE": str(checkpoint / "model.json"), "PT": str(bad / "weights.pt"),
            "DISTILL": str(distill_cfg), "PRETRAIN": str(pretrain_cfg), "DIR": str(base / "folder.yaml"),
            **{k.upper(): v for k, v in damaged.items()}}


D = ["--config", "{DISTILL}"]
P = ["--config", "{PRETRAIN}"]
E = ["--checkpoints", "{CK}", "--storage", "{S}", "--local", "--suite", "quick", "--sanity-points", "0"]
SW = ["--storage", "{S}"]

CASES: dict[str, tuple[str, list[str], list[str]]] = {
    # names that become paths
    "sweep name ..": ("sweep", [*SW, "--name", ".."], ["name", "'..'"]),
    "sweep name up and over": ("sweep", [*SW, "--name", "../x"], ["name", "'../x'"]),
    "sweep name empty": ("sweep", [*SW, "--name", ""], ["name", "''"]),
    "sweep name with slash": ("sweep", [*SW, "--name", "a/b"], ["name", "'a/b'"]),
    "sweep name hidden": ("sweep", [*SW, "--name", ".hidden"], ["name"]),
    "sweep name absolute": ("sweep", [*SW, "--name", "/tmp/x"], ["name"]),
    "sweep teacher name ..": ("sweep", [*SW, "--set", "teachers[0].name=.."], ["teachers[0].name", "'..'"]),
    "distill name ..": ("distill", [*D, "--set", "name=.."], ["name", "'..'"]),
    "distill name leaves storage": ("distill", [*D, "--set", "name=../../etc"], ["name"]),
    "distill name empty": ("distill", [*D, "--set", "name=''"], ["name", "''"]),
    "pretrain teacher name ..": ("pretrain", [*P, "--set", "teachers[0].name=.."], ["teachers[0].name"]),
    "evaluate name ..": ("evaluate", [*E, "--name", ".."], ["--name", "'..'"]),
    "evaluate name empty": ("evaluate", [*E, "--name", ""], ["--name", "''"]),
    "evaluate name with slash": ("evaluate", [*E, "--name", "x/../../y"], ["--name"]),
    "report sweep ..": ("report", ["--storage", "{S}", "--sweep", ".."], ["--sweep", "'..'"]),
    "report sweep empty": ("report", ["--storage", "{S}", "--sweep", ""], ["--sweep"]),
    # storage
    "sweep storage empty": ("sweep", ["--storage", ""], ["storage", "empty"]),
    "sweep storage is a file": ("sweep", ["--storage", "{FILE}"], ["storage", "model.json", "is a file"]),
    "distill storage empty": ("distill", [*D, "--storage", ""], ["storage", "empty"]),
    "distill storage is a file": ("distill", [*D, "--storage", "{FILE}"], ["storage", "is a file"]),
    "pretrain storage is a file": ("pretrain", [*P, "--storage", "{FILE}"], ["storage", "is a file"]),
    "evaluate storage is a file": ("evaluate", [*E, "--storage", "{FILE}"], ["storage", "is a file"]),
    "report storage is a file": ("report", ["--storage", "{FILE}", "--sweep", "ev1"], ["storage", "is a file"]),
    # config files
    "sweep config is a folder": ("sweep", [*SW, "--config", "{DIR}"], ["folder.yaml", "is a folder"]),
    "sweep unknown preset": ("sweep", [*SW, "--config", "dmeo"], ["--config", "'dmeo'", "did you mean 'demo'"]),
    "sweep missing config file": ("sweep", [*SW, "--config", "missing.yaml"], ["missing.yaml", "does not exist"]),
    "distill config is a folder": ("distill", ["--config", "{DIR}"], ["folder.yaml", "is a folder"]),
    "pretrain config missing": ("pretrain", ["--config", "nope.yaml"], ["nope.yaml"]),
    "sweep --set without =": ("sweep", [*SW, "--set", "search.num_samples"], ["--set", "KEY=VALUE"]),
    "sweep unknown flag": ("sweep", [*SW, "--bogus"], ["--bogus"]),
    # dataset options
    "sweep root for digits": ("sweep", [*SW, "--set", "data.root=/tmp"], ["data", "root", "embedded"]),
    "sweep val_size too large": ("sweep", [*SW, "--set", "data.val_size=5000"], ["data.val_size", "5000"]),
    "sweep val_size zero": ("sweep", [*SW, "--set", "data.val_size=0"], ["data.val_size"]),
    "distill root for digits": ("distill", [*D, "--set", "train.data.root=/tmp"], ["data", "root"]),
    "pretrain val_size too large": ("pretrain", [*P, "--set", "teachers[0].train.data.val_size=99999"],
                                    ["data.val_size"]),
    "evaluate root for digits": ("evaluate", [*E, "--name", "e2", "--root", "/tmp"], ["data", "root", "embedded"]),
    # sizes
    "sweep eval batch size 0": ("sweep", [*SW, "--set", "evaluation.batch_size=0"], ["evaluation.batch_size"]),
    "sweep eval shard size 0": ("sweep", [*SW, "--set", "evaluation.shard_size=0"], ["evaluation.shard_size"]),
    "sweep eval cpus 0": ("sweep", [*SW, "--set", "evaluation.cpus_per_actor=0"], ["evaluation.cpus_per_actor"]),
    "sweep train batch size 0": ("sweep", [*SW, "--set", "student.data.batch_size=0"], ["batch_size"]),
    "sweep no trials": ("sweep", [*SW, "--set", "search.num_samples=0"], ["search.num_samples"]),
    "sweep eps out of range": ("sweep", [*SW, "--set", "eps=2"], ["eps"]),
    "evaluate batch size 0": ("evaluate", [*E, "--name", "ev1", "--batch-size", "0"], ["--batch-size"]),
    "evaluate shard size 0": ("evaluate", [*E, "--name", "e2", "--shard-size", "0"], ["--shard-size"]),
    "evaluate actors 0": ("evaluate", [*E, "--name", "e2", "--actors", "0"], ["--actors"]),
    "evaluate cpus 0": ("evaluate", [*E, "--name", "e2", "--cpus-per-actor", "0"], ["--cpus-per-actor"]),
    "evaluate trial size 0": ("evaluate", [*E, "--name", "e2", "--trials", "3", "--trial-size", "0"], ["--trial-size"]),
    "evaluate sanity points -1": ("evaluate", [*E[:-1], "-1", "--name", "e2"], ["--sanity-points"]),
    "evaluate eps 0": ("evaluate", [*E, "--name", "e2", "--eps", "0"], ["eps"]),
    # checkpoints: evaluate
    "evaluate truncated weights": ("evaluate", [*E, "--name", "ev1", "--checkpoints", "{TRUNCATED}"],
                                   ["truncated", "SHA-256"]),
    "evaluate corrupt header": ("evaluate", [*E, "--name", "ev1", "--checkpoints", "{HEADER}"], ["header"]),
    "evaluate other architecture": ("evaluate", [*E, "--name", "ev1", "--checkpoints", "{OTHER_ARCH}"],
                                    ["other_arch", "do not fit"]),
    "evaluate pickle renamed": ("evaluate", [*E, "--name", "ev1", "--checkpoints", "{PICKLE}"], ["pickle"]),
    "evaluate .pt file": ("evaluate", [*E, "--name", "e2", "--checkpoints", "{PT}"], ["weights.pt", "a file, not a checkpoint"]),
    "evaluate folder not a checkpoint": ("evaluate", [*E, "--name", "e2", "--checkpoints", "{NOT_A_CHECKPOINT}"],
                                         ["not_a_checkpoint", "model.json not found"]),
    "evaluate unknown teacher": ("evaluate", [*E, "--name", "e2", "--checkpoints", "nope"], ["--checkpoints", "'nope'"]),
    "evaluate another plan, same name": ("evaluate", [*E[:-3], "paper", "--sanity-points", "0", "--name", "ev1"],
                                         ["--name", "'ev1'", "another name"]),
    "evaluate unknown suite": ("evaluate", [*E[:-3], "papr", "--sanity-points", "0", "--name", "e2"], ["papr"]),
    # checkpoints: teachers of a distillation or a sweep
    "distill teacher truncated": ("distill", [*D, "--set", "train.teachers=[{TRUNCATED}]"], ["train.teachers[0]", "SHA-256"]),
    "distill teacher header": ("distill", [*D, "--set", "train.teachers=[{HEADER}]"], ["train.teachers[0]"]),
    "distill teacher other arch": ("distill", [*D, "--set", "train.teachers=[{OTHER_ARCH}]"],
                                   ["train.teachers[0]", "do not fit"]),
    "distill teacher pickle": ("distill", [*D, "--set", "train.teachers=[{PICKLE}]"], ["train.teachers[0]"]),
    "distill teacher not a checkpoint": ("distill", [*D, "--set", "train.teachers=[{NOT_A_CHECKPOINT}]"],
                                         ["train.teachers[0]", "model.json not found"]),
    "distill teacher .pt": ("distill", [*D, "--set", "train.teachers=[{PT}]"], ["train.teachers[0]", "weights.pt"]),
    "distill unknown teacher": ("distill", [*D, "--set", "train.teachers=[nope]"], ["train.teachers", "'nope'"]),
    "sweep teacher checkpoint truncated": ("sweep", [*SW, "--set", "teachers[0].checkpoint={TRUNCATED}"],
                                           ["teachers", "SHA-256"]),
    "sweep teacher checkpoint other arch": ("sweep", [*SW, "--set", "teachers[0].checkpoint={OTHER_ARCH}"],
                                            ["teachers", "do not fit"]),
    "pretrain unknown --only": ("pretrain", [*P, "--only", "nosuch"], ["teachers", "nosuch"]),
}


def fill(argv: list[str], world: dict[str, str]) -> list[str]:
    return [a.format(**world) for a in argv]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(case, world, capsys, monkeypatch, tmp_path):
    command, argv, needles = CASES[case]
    monkeypatch.chdir(tmp_path)  # a relative default storage would land here, not in the project
    store = Path(world["S"])
    before = tree_hashes(store)
    assert run_command(command, fill(argv, world)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle.format(**world) in err, err
    assert tree_hashes(store) == before
    assert list(tmp_path.iterdir()) == []  # nor anything next to it


def test_the_table_covers_every_entry_point_and_fifty_inputs():
    assert len(CASES) >= 50
    assert {c for c, _, _ in CASES.values()} == {"sweep", "pretrain", "distill", "evaluate", "report"}


CONSOLE_SCRIPT = str(Path(sys.executable).with_name("robust-distill"))


@pytest.mark.parametrize("case", ["distill name ..", "evaluate truncated weights", "sweep storage is a file",
                                  "evaluate another plan, same name"])
def test_console_script_from_a_new_folder(case, world, tmp_path):
    command, argv, needles = CASES[case]
    store = Path(world["S"])
    before = tree_hashes(store)
    done = subprocess.run([CONSOLE_SCRIPT, command, *fill(argv, world)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(n.format(**world) in done.stderr for n in needles), done.stderr
    assert tree_hashes(store) == before and list(tmp_path.iterdir()) == []
