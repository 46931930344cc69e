"""A sweep driver killed the hard way: `python -m orchestrator.sweep` in its own session, SIGKILLed
together with every process it started (its Ray) once the store shows the point to kill it at."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil


def kill_new_processes(existing: set[int]) -> None:
    """SIGKILL every process started since `existing` was taken, except this one."""
    me = os.getpid()
    victims = [p for p in psutil.process_iter() if p.pid not in existing and p.pid != me]
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)


def kill_sweep_when(config: Path, reached: Callable[[], bool], what: str, timeout: float) -> None:
    """Run the sweep of `config` until `reached()` holds, then kill it; fail, with the end of its
    log, if it exits or `timeout` seconds pass first (`what` names the point it never reached)."""
    existing = set(psutil.pids())
    log = config.with_suffix(".log")
    driver = subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", "--config", str(config)],
                              start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while not reached():
            assert driver.poll() is None and time.time() < deadline, f"{what}:\n" + log.read_text()[-3000:]
            time.sleep(1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        kill_new_processes(existing)  # the Ray the driver started: some of it runs in other sessions
