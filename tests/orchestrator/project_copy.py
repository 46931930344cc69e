"""A fresh copy of the project (the files git would commit) to run entry points in, the way a new
user runs them from a clone: a subprocess whose working directory is the copy, default paths."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RAY_NOISE = ("Traceback", "core_worker.cc", "(raylet)", "PreemptionWatcher", "RayTrainWorker", "TrainController",
             "View detailed results", "Configuration for experiment", "Token authentication is enabled")


def copy_project(destination: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def run_entry(project: Path, module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in the copy; the copy's packages shadow the installed ones."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=project, capture_output=True, text=True,
                          timeout=timeout)
