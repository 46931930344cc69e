"""`python -m orchestrator.sweep [--config PRESET_OR_YAML] [--resume]`

The main job. Pretrains the missing teachers, runs Ray Tune + Optuna over distillation trials
(each a Ray Train run), evaluates the best trials with the attack suite on the actor pool, and
writes the report. Without --config it runs the `demo` preset on the embedded digits data.
Standalone it starts an embedded Ray; inside `ray job submit` it uses that cluster.
"""
from __future__ import annotations

from typing import Sequence

from orchestrator.cli import Parser, run_cli
from orchestrator.reporting import build_report
from orchestrator.storage import Storage
from orchestrator.sweep_config import load_sweep_config
from orchestrator.sweeping import run_sweep
from search_spaces import preset_names, preset_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="orchestrator.sweep", description=__doc__.splitlines()[2])
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(preset_names())}) or a YAML file")
    parser.add_argument("--storage", help="override the config's storage URI (local path, s3://, gs://)")
    parser.add_argument("--name", help="override the sweep name")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep of this name")
    args = parser.parse_ray_args(argv)
    overrides = {k: v for k, v in (("storage", args.storage), ("name", args.name)) if v}
    cfg = load_sweep_config(str(preset_path(args.config)), overrides)
    run_sweep(cfg, resume=args.resume)
    print(f"== {cfg.name}: 4/4 report", flush=True)
    print(build_report(Storage(cfg.storage), cfg.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
