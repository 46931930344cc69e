"""Shared test setup: one private Ray instance per test session (started only by tests that ask
for it, restarted if a test had to stop it), single-threaded torch for small, stable CPU tests."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
# A plain `ray.init()` (the entry points' own, in this process or in a subprocess) would attach to a
# cluster another process started on this machine (`ray start`, ray.cluster_utils); tests get
# their own, as a user's laptop does.
os.environ.setdefault("RAY_ADDRESS", "local")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ray_session():
    """A private 2-CPU Ray with the dashboard on (Train V2 needs it to free the workers of stopped
    trials); shared by every test module that asks for it."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=True)
    return ray


def pytest_sessionfinish(session, exitstatus):
    import ray

    if ray.is_initialized():
        ray.shutdown()
