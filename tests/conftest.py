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


def _train_digits_cnn(seed: int, steps: int = 200) -> torch.nn.Module:
    from trainers.data import as_float, load_dataset
    from trainers.models import DataCfg, build_model

    data = load_dataset("digits")
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), data.info.mean, data.info.std),
                        width=8, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = as_float(data.train.x), data.train.y
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@pytest.fixture(scope="session")
def train_digits_cnn():
    """`train(seed, steps=200)`: a small CNN trained naturally on digits (Adam, batches of 128; 200
    steps take ~2 s and reach ~97 % clean), in eval mode: the normal model checks stay silent on."""
    return _train_digits_cnn


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
