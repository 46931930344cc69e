"""A driver killed (SIGKILL) in the middle of a write leaves the storage readable: no partial
results rows, report files or registry checkpoints under their final names. Each case runs the
real write in a subprocess that kills itself at one point: halfway through writing the bytes, or
after writing them but before publishing (the rename)."""
from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.evaluate import evaluate_checkpoints
from orchestrator.report import build_report
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from orchestrator.teacher_registry import TeacherRegistry, TeacherSpec
from trainers.checkpoint import load_model, save_model
from trainers.models import DataCfg, build_model

DATA_CFG = DataCfg((1, 8, 8), (0.3,), (0.37,))
SPEC = TeacherSpec(name="t")

# The child kills itself at the chosen point of the write named by WHAT: the storage's local
# filesystem halfway through a file or just before its rename; the registry after its first folder
# is uploaded or just before its index row is appended.
CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import pyarrow.fs as pafs
    from orchestrator.results import ResultsStore
    from orchestrator.storage import Storage
    root, point, what = sys.argv[1:4]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class Half:
        def __init__(self, stream): self.stream = stream
        def __enter__(self): return self
        def __exit__(self, *exc): self.stream.close()
        def write(self, data):
            self.stream.write(data[: len(data) // 2]); self.stream.flush(); die()

    class Killing(pafs.LocalFileSystem):
        def move(self, src, dest):
            if point == "rename": die()
            return super().move(src, dest)
        def open_output_stream(self, path, *args, **kwargs):
            stream = super().open_output_stream(path, *args, **kwargs)
            return Half(stream) if point == "write" else stream

    storage = Storage(root)
    if what == "append":
        storage.fs = Killing()
        ResultsStore(storage).append([{"key": f"k{i}", "kind": "epoch", "metrics": {"i": i}} for i in range(500)])
    elif what == "report":
        from orchestrator.report import build_report
        storage.fs = Killing()
        build_report(storage, "ev")
    elif what == "register":
        from orchestrator.teacher_registry import TeacherRegistry, TeacherSpec
        upload = Storage.upload_dir
        def upload_then_die(self, *args):
            upload(self, *args)
            if point == "write": die()
        Storage.upload_dir = upload_then_die
        if point == "rename":
            ResultsStore.append = lambda self, rows: die()
        TeacherRegistry(storage).register(TeacherSpec(name="t"), Path(sys.argv[4]), {"val_clean": 0.5})
    print("not killed")
""")


def visible_files(root: Path) -> dict[str, str]:
    """Files a reader sees (temporary names start with a dot), with their hashes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def run_child(root: Path, point: str, what: str, *extra: str) -> None:
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), point, what, *extra], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)


def artifacts(folder: Path, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=10, data_cfg=DATA_CFG, width=4, hidden=8)
    for tag in ("best", "last"):
        save_model(folder / tag, model, dataset="digits")
    return folder


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """A storage with an evaluation `ev`, its report, and one registered teacher."""
    root = tmp_path_factory.mktemp("store")
    storage = Storage(root)
    checkpoint = artifacts(tmp_path_factory.mktemp("ck"), 0) / "best"
    evaluate_checkpoints([str(checkpoint)], storage=storage, name="ev", suite="quick", local=True, sanity=None)
    build_report(storage, "ev")
    TeacherRegistry(storage).register(SPEC, artifacts(tmp_path_factory.mktemp("teacher"), 1), {"val_clean": 0.9})
    return root


def copy_store(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


@pytest.mark.parametrize("point", ["write", "rename"])
def test_results_append(point, evaluated, tmp_path):
    root = copy_store(evaluated, tmp_path / "store")
    before_rows, before_files = ResultsStore(Storage(root)).read(), visible_files(root)
    run_child(root, point, "append")
    assert visible_files(root) == before_files
    assert ResultsStore(Storage(root)).read() == before_rows  # no partial part file is read


@pytest.mark.parametrize("point", ["write", "rename"])
def test_report_write(point, evaluated, tmp_path):
    root = copy_store(evaluated, tmp_path / "store")
    before = visible_files(root)
    assert "reports/ev/report.md" in before
    run_child(root, point, "report")
    assert visible_files(root) == before


@pytest.mark.parametrize("point", ["write", "rename"])
def test_teacher_registry_write(point, evaluated, tmp_path):
    root = copy_store(evaluated, tmp_path / "store")
    registry = TeacherRegistry(Storage(root))
    old = registry.lookup(SPEC)
    old_sha = load_model(old["metrics"]["path"])[1]["weights_sha256"]
    before = visible_files(root)
    run_child(root, point, "register", str(artifacts(tmp_path / "new", 2)))
    assert {k: v for k, v in visible_files(root).items() if k in before} == before  # nothing old touched
    assert registry.lookup(SPEC) == old  # and still the registered teacher, whole
    assert load_model(old["metrics"]["path"])[1]["weights_sha256"] == old_sha


@pytest.mark.parametrize("point", ["write", "rename"])
def test_a_new_teacher_killed_before_its_row_is_not_registered(point, tmp_path):
    root = tmp_path / "store"
    run_child(root, point, "register", str(artifacts(tmp_path / "new", 3)))
    assert TeacherRegistry(Storage(root)).rows() == []
