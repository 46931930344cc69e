"""Every command line of the project, in one place: `robust-distill COMMAND [ARGS]` and
`python -m orchestrator.COMMAND [ARGS]` (each job module hands its `__main__` to `run_command`).
Bad input becomes one line on stderr and exit code 2, never a traceback.

Each command imports its job (torch, Ray, Optuna, matplotlib) only once its arguments are
parsed, so `--help` and argument errors answer at once."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NoReturn, Sequence

from search_spaces import preset_names, preset_path
from trainers.config import identifier
from trainers.errors import UserError


class UsageError(UserError):
    """A command-line argument the program cannot use."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _verbose(p: Parser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="also show what Ray's processes print (per-epoch lines, Ray's warnings)")


def _sets(p: Parser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one field of the config, e.g. --set resources.autoscaling=false "
                        "--set teachers[0].train.epochs=5 (VALUE is YAML; repeatable)")


def _job_config(cls: type[Any], args: argparse.Namespace) -> Any:
    """The job's YAML config (--config) with --set applied, --storage winning over its storage."""
    from orchestrator.config import apply_sets
    from trainers.config import from_dict, load_yaml

    raw = apply_sets(load_yaml(args.config), args.set)
    if args.storage is not None:
        raw["storage"] = args.storage
    return from_dict(cls, raw)


def _sweep(argv: Sequence[str]) -> int:
    p = Parser(prog="orchestrator.sweep", description="The main job: teachers, search, evaluation, report "
               "(without --config: the demo preset on the embedded digits data).")
    p.add_argument("--config", default="demo", help=f"a preset ({', '.join(preset_names())}) or a YAML file")
    p.add_argument("--storage", help="override the config's storage URI (local path, s3://, gs://)")
    p.add_argument("--name", help="override the sweep name")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this name")
    p.add_argument("--dry-run", action="store_true", help="validate the config and print what the sweep would do "
                   "(teachers to train or reuse, trials, evaluation, resources) and the resolved config; "
                   "nothing is trained, written or started")
    _sets(p)
    _verbose(p)
    args = p.parse_args(argv)
    path = str(preset_path(args.config))
    from orchestrator.config import load_sweep_config

    overrides = {k: v for k, v in (("storage", args.storage), ("name", args.name)) if v is not None}
    cfg = load_sweep_config(path, overrides, args.set)
    from orchestrator.ray_env import show_ray_output
    from orchestrator.report import build_report
    from orchestrator.storage import Storage
    from orchestrator.sweep import dry_run, run_sweep, stage_count

    show_ray_output(args.verbose)
    if args.dry_run:
        print(dry_run(cfg, resume=args.resume))
        return 0
    run_sweep(cfg, resume=args.resume)
    stages = stage_count(cfg)
    print(f"== {cfg.name}: {stages}/{stages} report", flush=True)
    print(build_report(Storage(cfg.storage), cfg.name))
    return 0


def _pretrain(argv: Sequence[str]) -> int:
    p = Parser(prog="orchestrator.pretrain", description="Pretrain the teachers of a config that are not in "
               "the teacher registry yet (each a Ray Train job), then print the registry rows.")
    p.add_argument("--config", required=True, help="YAML: storage, resources, teachers")
    p.add_argument("--force", action="store_true", help="retrain teachers already in the registry")
    p.add_argument("--only", nargs="+", metavar="NAME", help="only these teachers")
    p.add_argument("--storage", help="override the config's storage URI")
    _sets(p)
    _verbose(p)
    args = p.parse_args(argv)
    from orchestrator.config import PretrainConfig
    from orchestrator.pretrain import pretrain
    from orchestrator.ray_env import show_ray_output

    show_ray_output(args.verbose)
    for row in pretrain(_job_config(PretrainConfig, args), force=args.force, only=args.only):
        m = row["metrics"]
        print(f"{m['name']:<20} {m.get('arch', 'external'):<14} {m.get('method', '-'):<10} {m.get('dataset', '-'):<10} "
              f"test clean {m.get('test_clean', float('nan')):.2%}  pgd {m.get('test_pgd', float('nan')):.2%}  {m['path']}")
    return 0


def _distill(argv: Sequence[str]) -> int:
    p = Parser(prog="orchestrator.distill", description="One distillation run (DARHT, B-MTARD, MTARD, RSLAD, "
               "ARD, or any training method) on Ray Train; prints validation and test clean / PGD / W-Robust.")
    p.add_argument("--config", required=True, help="YAML: name, storage, resources, train")
    p.add_argument("--storage", help="override the config's storage URI")
    _sets(p)
    _verbose(p)
    args = p.parse_args(argv)
    from orchestrator.config import DistillConfig
    from orchestrator.distill import distill
    from orchestrator.ray_env import show_ray_output

    show_ray_output(args.verbose)
    m = distill(_job_config(DistillConfig, args))
    print(f"{'split':<22}{'clean':>8}{'PGD':>8}{'W-Robust':>10}")
    for label, prefix in (("validation (best)", "best_val_"), ("test (best-on-val)", "test_"),
                          ("test (last epoch)", "test_last_")):
        if f"{prefix}clean" in m:
            print(f"{label:<22}{m[prefix + 'clean']:>8.2%}{m[prefix + 'pgd']:>8.2%}{m[prefix + 'w_robust']:>10.2%}")
    print(f"checkpoints: {m['path']}")
    return 0


def _evaluate(argv: Sequence[str]) -> int:
    p = Parser(prog="orchestrator.evaluate", description="Evaluate checkpoints with an attack suite on a Ray "
               "actor pool; finished shards are never recomputed.")
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
    _verbose(p)
    args = p.parse_args(argv)
    identifier(args.name, "--name")
    for flag, value, low in (("--shard-size", args.shard_size, 1), ("--batch-size", args.batch_size, 1),
                             ("--actors", args.actors, 1), ("--trials", args.trials, 0),
                             ("--trial-size", args.trial_size, 1), ("--gpus-per-actor", args.gpus_per_actor, 0)):
        if value < low:
            raise UsageError(f"{flag}: must be >= {low}, got {value}")
    if args.cpus_per_actor <= 0:
        raise UsageError(f"--cpus-per-actor: must be > 0, got {args.cpus_per_actor}")
    from orchestrator.evaluate import evaluate_checkpoints
    from orchestrator.summary import format_table, read_masks, read_summary, repeated_trials
    from orchestrator.ray_env import show_ray_output
    from orchestrator.results import ResultsStore
    from orchestrator.sanity import sanity_params
    from orchestrator.sanity_report import format_verdicts, read_verdicts
    from orchestrator.storage import Storage

    show_ray_output(args.verbose)
    sanity = sanity_params(args.sanity_points, "--sanity-points")
    storage = Storage(args.storage)
    ran, planned = evaluate_checkpoints(
        args.checkpoints, storage=storage, name=args.name, suite=args.suite, split=args.split, root=args.root,
        eps=args.eps, shard_size=args.shard_size, batch_size=args.batch_size, seed=args.seed, actors=args.actors,
        cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor, local=args.local, sanity=sanity)
    store = ResultsStore(storage)
    print(f"{ran} task(s) run, {planned - ran} reused from {storage.uri}")
    print(format_table(read_summary(store, args.name)))
    if sanity is not None:
        print(format_verdicts(read_verdicts(store, args.name)))
    if args.trials:
        print(repeated_trials(read_masks(store, args.name), trials=args.trials, size=args.trial_size, seed=args.seed))
    return 0


def _report(argv: Sequence[str]) -> int:
    p = Parser(prog="orchestrator.report", description="Rebuild a sweep's report (tables, CSV, figures) from "
               "the results store alone and print it.")
    p.add_argument("--sweep", required=True, help="sweep (or evaluate --name) to report")
    p.add_argument("--storage", default="runs", help="storage URI (default: runs)")
    args = p.parse_args(argv)
    identifier(args.sweep, "--sweep")
    from orchestrator.report import build_report
    from orchestrator.storage import Storage

    print(build_report(Storage(args.storage), args.sweep))
    return 0


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "sweep": (_sweep, "the main job: teachers, search, evaluation, report"),
    "pretrain": (_pretrain, "teachers into the registry"),
    "distill": (_distill, "one distillation run"),
    "evaluate": (_evaluate, "checkpoints x attack suite on the actor pool"),
    "report": (_report, "rebuild a sweep's report"),
}


def run_command(name: str, argv: Sequence[str] | None = None) -> int:
    """Run one command; a user error is one line on stderr and exit code 2. One that reached the
    driver through `ray.get` is a RayTaskError that is also a UserError: its `cause` is the line,
    the remote traceback stays in Ray's logs."""
    main_module = sys.modules.get("__main__")
    if getattr(getattr(main_module, "__spec__", None), "name", None) == f"orchestrator.{name}":
        sys.modules.setdefault(f"orchestrator.{name}", main_module)  # `python -m` ran it: don't run it twice
    try:
        return COMMANDS[name][0](list(sys.argv[1:] if argv is None else argv))
    except UserError as err:
        cause = getattr(err, "cause", None)
        print(f"error: {cause if isinstance(cause, UserError) else err}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """`robust-distill COMMAND [ARGS]`: the same as `python -m orchestrator.COMMAND [ARGS]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: robust-distill COMMAND [ARGS]  (COMMAND --help for its arguments)\n" + "\n".join(
        f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items())
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if not argv or argv[0] not in COMMANDS:
        what = f"unknown command {argv[0]!r}" if argv else "a command is required"
        print(f"error: robust-distill: {what}\n{usage}", file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:])
