"""The evaluation actor pool with N actors vs one process on the same (checkpoint x attack x
shard) tasks; the results must be identical, the pool faster.

    python -m benchmarks.eval_pool [--actors 2] [--shard-size 100]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import ray
import torch

from attacks import AttackSpec
from benchmarks.common import print_table
from orchestrator.eval_pool import run_local, run_pool
from orchestrator.evaluation import Target, plan
from trainers.checkpoint import save_model
from trainers.data import load_dataset
from trainers.models import DataCfg, build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(1)
    info = load_dataset("digits").info
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), info.mean, info.std))
        ckpt = save_model(f"{tmp}/cnn", model.eval(), dataset="digits")
        specs = [AttackSpec("pgd", {"steps": 50}, "PGD-50"), AttackSpec("cw_inf", {}, "CW-inf")]
        tasks = plan([Target(str(ckpt), "cnn")], data={"name": "digits"}, split="test", specs=specs,
                     shard_size=args.shard_size, seed=0, batch_size=64)
        ray.init(num_cpus=args.actors, log_to_driver=False)
        start = time.perf_counter()
        local = {t.key: r["robust"] for t, r in run_local(tasks)}
        one = time.perf_counter() - start
        list(run_pool(tasks[:args.actors], actors=args.actors))  # start the actors (not timed below)
        start = time.perf_counter()
        pooled = {t.key: r["robust"] for t, r in run_pool(tasks, actors=args.actors)}
        many = time.perf_counter() - start
        ray.shutdown()
    assert pooled == local, "the pool's results differ from the single process's"
    print_table(f"{len(tasks)} evaluation tasks (digits test split, small_cnn, PGD-50 + CW-inf, shards of "
                f"{args.shard_size}); results identical", [("one process", one, ""),
                                                          (f"actor pool, {args.actors} actors", many,
                                                           "includes actor start-up and model loading")], "one process")


if __name__ == "__main__":
    main()
