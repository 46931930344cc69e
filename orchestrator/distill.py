"""`python -m orchestrator.distill --config run.yaml`

One distillation run (DARHT, B-MTARD, MTARD, RSLAD, ARD, or any training method) on Ray Train,
with checkpoints, resume, TensorBoard events and results-store rows; prints the final validation
and test clean / PGD / W-Robust. YAML: name, storage, resources, train (see trainers/config.py).
"""
from __future__ import annotations

from typing import Sequence

from orchestrator.cli import Parser, run_cli
from orchestrator.distillation import DistillConfig, distill
from trainers.configs import from_dict, load_yaml


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="orchestrator.distill", description=__doc__.splitlines()[2])
    parser.add_argument("--config", required=True, help="YAML: name, storage, resources, train")
    parser.add_argument("--storage", help="override the config's storage URI")
    args = parser.parse_ray_args(argv)
    raw = load_yaml(args.config)
    if args.storage:
        raw["storage"] = args.storage
    m = distill(from_dict(DistillConfig, raw))
    print(f"{'split':<22}{'clean':>8}{'PGD':>8}{'W-Robust':>10}")
    for label, prefix in (("validation (best)", "best_val_"), ("test (best-on-val)", "test_"),
                          ("test (last epoch)", "test_last_")):
        if f"{prefix}clean" in m:
            print(f"{label:<22}{m[prefix + 'clean']:>8.2%}{m[prefix + 'pgd']:>8.2%}{m[prefix + 'w_robust']:>10.2%}")
    print(f"checkpoints: {m['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
