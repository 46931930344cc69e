"""`python -m orchestrator.pretrain --config teachers.yaml [--force] [--only NAME ...]`

Pretrain the teachers of a config that are not in the teacher registry yet (each a Ray Train job),
then print the registry rows. A config's teachers: a list of {name, train: <training config>}.
"""
from __future__ import annotations

from typing import Sequence

from orchestrator.cli import Parser, run_cli
from orchestrator.pretraining import PretrainConfig, pretrain
from trainers.configs import from_dict, load_yaml


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="orchestrator.pretrain", description=__doc__.splitlines()[2])
    parser.add_argument("--config", required=True, help="YAML: storage, resources, teachers")
    parser.add_argument("--force", action="store_true", help="retrain teachers already in the registry")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these teachers")
    parser.add_argument("--storage", help="override the config's storage URI")
    args = parser.parse_ray_args(argv)
    raw = load_yaml(args.config)
    if args.storage:
        raw["storage"] = args.storage
    cfg = from_dict(PretrainConfig, raw)
    for row in pretrain(cfg, force=args.force, only=args.only):
        m = row["metrics"]
        print(f"{m['name']:<20} {m.get('arch', 'external'):<14} {m.get('method', '-'):<10} {m.get('dataset', '-'):<10} "
              f"test clean {m.get('test_clean', float('nan')):.2%}  pgd {m.get('test_pgd', float('nan')):.2%}  {m['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
