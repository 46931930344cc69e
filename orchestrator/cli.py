"""Entry-point plumbing: bad input becomes one line on stderr and exit code 2, never a traceback;
the `robust-distill <command>` console script dispatches to `python -m orchestrator.<command>`."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, NoReturn, Sequence

from orchestrator.ray_env import show_ray_output

from trainers.checkpoint import CheckpointError
from trainers.configs import ConfigError
from trainers.data import DatasetError
from trainers.registry import UnknownNameError


class UsageError(ValueError):
    """A command-line argument the program cannot use."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def parse_ray_args(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """parse_args for entry points that start Ray: --verbose decides what Ray may print."""
        self.add_argument("--verbose", action="store_true",
                          help="also show what Ray's processes print (per-epoch lines, Ray's warnings)")
        args = self.parse_args(argv)
        show_ray_output(args.verbose)
        return args


USER_ERRORS = (ConfigError, DatasetError, CheckpointError, UnknownNameError, UsageError)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    try:
        return main(argv)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


COMMANDS = {"sweep": "the main job: teachers, search, evaluation, report",
            "pretrain": "teachers into the registry", "distill": "one distillation run",
            "evaluate": "checkpoints x attack suite on the actor pool", "report": "rebuild a sweep's report"}


def console_main(argv: Sequence[str] | None = None) -> int:
    """`robust-distill COMMAND [ARGS]`: the same as `python -m orchestrator.COMMAND [ARGS]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: robust-distill COMMAND [ARGS]  (COMMAND --help for its arguments)\n" + "\n".join(
        f"  {name:<10} {text}" for name, text in COMMANDS.items())
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return 0
    if not argv or argv[0] not in COMMANDS:
        what = f"unknown command {argv[0]!r}" if argv else "a command is required"
        print(f"error: robust-distill: {what}\n{usage}", file=sys.stderr)
        return 2
    entry = importlib.import_module(f"orchestrator.{argv[0]}")
    return run_cli(entry.main, argv[1:])
