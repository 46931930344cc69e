"""Entry-point plumbing: bad input becomes one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Sequence

from trainers.checkpoint import CheckpointError
from trainers.configs import ConfigError
from trainers.data import DatasetError
from trainers.registry import UnknownNameError


class UsageError(ValueError):
    """A command-line argument the program cannot use."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


USER_ERRORS = (ConfigError, DatasetError, CheckpointError, UnknownNameError, UsageError)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    try:
        return main(argv)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
