"""Entry-point plumbing: bad input becomes one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
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
