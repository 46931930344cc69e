"""`python -m orchestrator.evaluate --checkpoints DIR [DIR ...] --suite paper`

Evaluate checkpoints (paths, or teachers by registry name) on a dataset split with an attack suite
(`paper`, `autoattack`, `rand`, `quick`, or a YAML list), sharded over a Ray actor pool. Rows go
to the results store; finished shards are never recomputed; prints clean, robust and W-Robust per
attack and the per-point worst case.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from orchestrator.cli import Parser, run_cli
from orchestrator.evaluation import (Target, execute, format_table, load_suite, plan, read_masks, read_summary,
                                     repeated_trials)
from orchestrator.results import ResultsStore
from orchestrator.sanity import sanity_params
from orchestrator.sanity_report import format_verdicts, read_verdicts
from orchestrator.storage import Storage
from orchestrator.teacher_registry import TeacherRegistry, localize
from trainers.checkpoint import checkpoint_dir, read_document
from trainers.configs import ConfigError, absolute_path


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="orchestrator.evaluate", description=__doc__.splitlines()[2])
    p.add_argument("--checkpoints", nargs="+", required=True, metavar="PATH_OR_NAME",
                   help="checkpoint directories, or teacher names from the registry")
    p.add_argument("--suite", default="paper", help="suite name or YAML file (default: paper)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--root", help="dataset root (CIFAR / Tiny ImageNet)")
    p.add_argument("--eps", type=float, help="L-inf radius (default: the dataset's, e.g. 8/255 on CIFAR)")
    p.add_argument("--storage", default="runs", help="storage URI for the results store and registry")
    p.add_argument("--name", default="evaluate", help="label of these rows in the results store")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--gpus-per-actor", type=float, default=0.0)
    p.add_argument("--local", action="store_true", help="run in this process instead of the actor pool")
    p.add_argument("--trials", type=int, default=0, help="repeated trials (DARHT: 30) with a Mann-Whitney test")
    p.add_argument("--trial-size", type=int, default=1000, help="points per trial (DARHT: 1000)")
    p.add_argument("--sanity-points", type=int, default=200,
                   help="subsample of the sanity checks (default 200); 0 turns them off")
    args = p.parse_ray_args(argv)
    sanity = sanity_params(args.sanity_points)
    storage = Storage(args.storage)
    registry = TeacherRegistry(storage)
    targets = [Target(registry.resolve(ref), "/".join(Path(ref).parts[-2:]) if Path(ref).exists() else ref)
               for ref in args.checkpoints]
    datasets = {read_document(checkpoint_dir(localize(t.path)), "model").get("dataset") for t in targets}
    if len(datasets) != 1:
        raise ConfigError("checkpoints", f"checkpoints are for different datasets {sorted(map(str, datasets))}")
    data = {"name": datasets.pop(), **({"root": absolute_path(args.root)} if args.root else {})}
    tasks = plan(targets, data=data, split=args.split, specs=load_suite(args.suite), shard_size=args.shard_size,
                 seed=args.seed, batch_size=args.batch_size, eps=args.eps)
    store = ResultsStore(storage)
    ran = execute(tasks, store, sweep=args.name, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                  gpus_per_actor=args.gpus_per_actor, local=args.local, sanity=sanity)
    print(f"{ran} task(s) run, {len(tasks) - ran} reused from {storage.uri}")
    print(format_table(read_summary(store, args.name)))
    if sanity is not None:
        print(format_verdicts(read_verdicts(store, args.name)))
    if args.trials:
        print(repeated_trials(read_masks(store, args.name), trials=args.trials, size=args.trial_size, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
