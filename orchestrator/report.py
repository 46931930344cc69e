"""`python -m orchestrator.report --sweep NAME [--storage URI]`

Rebuild a sweep's report (tables, CSV, figures) from the results store alone and print it.
"""
from __future__ import annotations

from typing import Sequence

from orchestrator.cli import Parser, run_cli
from orchestrator.reporting import build_report
from orchestrator.storage import Storage


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="orchestrator.report", description=__doc__.splitlines()[2])
    parser.add_argument("--sweep", required=True, help="sweep (or evaluate --name) to report")
    parser.add_argument("--storage", default="runs", help="storage URI (default: runs)")
    args = parser.parse_args(argv)
    print(build_report(Storage(args.storage), args.sweep))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
