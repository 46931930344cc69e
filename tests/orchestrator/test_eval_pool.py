"""The evaluation actor pool: results equal the single-process path exactly, finished shards are
never recomputed, rows carry the attack's parameters and per-point masks."""
from __future__ import annotations

import shutil

import pytest
import torch

from attacks import AttackSpec
from orchestrator.eval_pool import run_local, run_pool
from orchestrator.evaluate import Target, execute, load_suite, plan
from orchestrator.summary import read_summary
from orchestrator.results import ResultsStore, unpack_mask
from orchestrator.storage import Storage
from trainers.checkpoint import save_model
from trainers.data import load_dataset
from trainers.errors import UserError
from trainers.models import DataCfg, build_model

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A small CNN trained for a few seconds on digits (so attacks have something to break)."""
    data = load_dataset("digits")
    info = data.info
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), info.mean, info.std), width=8, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.train.x, data.train.y
    for _ in range(60):
        idx = torch.randint(0, len(y), (128,))
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_model(tmp_path_factory.mktemp("ck") / "cnn", model.eval(), dataset="digits")


def tasks_for(checkpoint, specs, shard_size=150):
    return plan([Target(str(checkpoint), "cnn")], data={"name": "digits"}, split="test", specs=specs,
                shard_size=shard_size, seed=3, batch_size=64)


def test_pool_equals_single_process_exactly(ray_session, trained_checkpoint):
    specs = [AttackSpec("pgd", {"steps": 5}, "PGD-5"), AttackSpec("square", {"n_queries": 50}, "Square-50")]
    tasks = tasks_for(trained_checkpoint, specs)
    assert len(tasks) == 2 * 3  # 397 test points in shards of 150
    local = {t.key: r for t, r in run_local(tasks)}
    pooled = {t.key: r for t, r in run_pool(tasks, actors=2)}
    assert set(local) == set(pooled)
    for key in local:
        assert local[key]["robust"] == pooled[key]["robust"], key
        assert local[key]["clean"] == pooled[key]["clean"], key
    robust = sum(r["robust_correct"] for r in local.values())
    assert 0 < robust < sum(r["clean_correct"] for r in local.values())


def test_rows_summary_and_rerun_skips_finished_shards(trained_checkpoint, tmp_path):
    store = ResultsStore(Storage(tmp_path))
    tasks = tasks_for(trained_checkpoint, load_suite("quick"))
    assert execute(tasks, store, sweep="ev", local=True) == len(tasks)
    rows = store.read(kind="eval")
    assert len(rows) == len(tasks) + 3  # one clean row per shard
    pgd = next(r for r in rows if r["attack"] == "PGD-10")
    assert pgd["attack_params"] == {"name": "pgd", "steps": 10, "eps": 0.2}
    assert pgd["n"] == 150 and pgd["correct"] == int(unpack_mask(pgd["mask"], 150).sum())
    assert execute(tasks, store, sweep="ev", local=True) == 0
    assert len(store.read(kind="eval")) == len(rows)
    summary = read_summary(store, "ev")[0]
    assert summary["clean"].total == 397
    pgd_count, fgsm_count = summary["attacks"]["PGD-10"]["robust"], summary["attacks"]["FGSM"]["robust"]
    worst = summary["attacks"]["worst case"]["robust"]
    assert worst.correct <= min(pgd_count.correct, fgsm_count.correct) <= summary["clean"].correct
    # A new attack on the same checkpoint runs only the new tasks.
    more = tasks_for(trained_checkpoint, load_suite("quick") + [AttackSpec("cw_inf", {"steps": 5}, "CW-5")])
    assert execute(more, store, sweep="ev2", local=True) == 3


def test_a_user_error_in_an_actor_is_one_line_and_not_retried(ray_session, trained_checkpoint, tmp_path):
    """A checkpoint damaged after the driver checked it: the actor's CheckpointError reaches the
    driver as one UserError line (not Ray's remote traceback), at once (no retries)."""
    damaged = tmp_path / "cnn"
    shutil.copytree(trained_checkpoint, damaged)
    tasks = tasks_for(damaged, [AttackSpec("pgd", {"steps": 1}, "PGD-1")], shard_size=400)
    weights = (damaged / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(UserError) as err:
        list(run_pool(tasks, actors=1, retries=2))
    assert type(err.value) is UserError and "\n" not in str(err.value)
    assert str(damaged) in str(err.value) and "SHA-256" in str(err.value)
