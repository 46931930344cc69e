"""The package layering, checked on the source: the pure-PyTorch packages never import Ray, and no
project module imports Ray's private modules (they change without notice between releases)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainers", "attacks", "orchestrator", "search_spaces", "benchmarks")


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", ["trainers", "attacks"])
def test_pure_torch_packages_never_import_ray(package: str) -> None:
    offenders = [f"{p.relative_to(ROOT)}: {m}" for p in modules_of(package) for m in imported_modules(p)
                 if m == "ray" or m.startswith("ray.")]
    assert not offenders, offenders


def test_no_private_ray_imports() -> None:
    offenders = [f"{p.relative_to(ROOT)}: {m}" for package in PACKAGES for p in modules_of(package)
                 for m in imported_modules(p)
                 if m.startswith("ray.") and any(part.startswith("_") for part in m.split("."))]
    assert not offenders, offenders


def test_the_checks_see_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import ray\nfrom ray.train.v2._internal.execution import context\n")
    assert imported_modules(probe) == ["ray", "ray.train.v2._internal.execution"]
