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
from orchestrator.eval_pool import EvalPool, run_local
from orchestrator.evaluate import Target, plan
from trainers.checkpoint import save_model
from trainers.data import load_dataset
from trainers.models import DataCfg, build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=50)
    p.add_argument("--steps", type=int, default=200, help="PGD steps (the work per task)")
    args = p.parse_args()
    torch.set_num_threads(1)
    info = load_dataset("digits").info
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), info.mean, info.std))
        ckpt = save_model(f"{tmp}/cnn", model.eval(), dataset="digits")
        specs = [AttackSpec("pgd", {"steps": args.steps}, f"PGD-{args.steps}"), AttackSpec("cw_inf", {}, "CW-inf")]
        tasks = plan([Target(str(ckpt), "cnn")], data={"name": "digits"}, split="test", specs=specs,
                     shard_size=args.shard_size, seed=0, batch_size=64)
        ray.init(num_cpus=args.actors, log_to_driver=False)
        start = time.perf_counter()
        local = {t.key: r["robust"] for t, r in run_local(tasks)}
        one = time.perf_counter() - start
        start = time.perf_counter()
        with EvalPool(args.actors) as pool:
            list(pool.run(tasks[:args.actors]))  # start-up: processes, imports, model and data loading
            started = time.perf_counter()
            pooled = {t.key: r["robust"] for t, r in pool.run(tasks)}
            end = time.perf_counter()
        ray.shutdown()
    assert pooled == local, "the pool's results differ from the single process's"
    print_table(f"{len(tasks)} evaluation tasks (digits test split, small_cnn, PGD-{args.steps} + CW-inf, shards "
                f"of {args.shard_size}); results identical",
                [("one process", one, ""), (f"actor pool, {args.actors} actors", end - started, "warm actors"),
                 (f"actor pool, {args.actors} actors, cold", end - start, "incl. actor start-up")], "one process")


if __name__ == "__main__":
    main()
