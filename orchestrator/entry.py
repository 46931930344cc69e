"""`python -m orchestrator.<job>`: a job module's `__main__` hands its command line to the CLI.
The CLI imports the jobs, so the jobs name the CLI the way the `robust-distill` console script does
(pyproject's [project.scripts]): by module path, resolved only when the command runs. The jobs
thus never import the CLI back."""
from __future__ import annotations

import importlib
from typing import NoReturn


def main(command: str) -> NoReturn:
    cli = importlib.import_module("orchestrator.cli")
    raise SystemExit(cli.run_command(command))
