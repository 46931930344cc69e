"""pyproject.toml matches the imports: every third-party package the project's modules import is a
dependency, every one the tests import is a dependency or in the `test` extra, and a declared
package that nothing imports says why in a comment (its line or the line above)."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainers", "attacks", "orchestrator", "search_spaces", "benchmarks")
PYPROJECT = ROOT / "pyproject.toml"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_imports(folder: Path) -> set[str]:
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def third_party(folder: Path) -> set[str]:
    """The distributions (normalized names) of the non-stdlib, non-project modules imported."""
    local = set(PACKAGES) | {"tests"} | {p.stem for p in (ROOT / "tests").rglob("*.py")}
    modules = top_level_imports(folder) - set(sys.stdlib_module_names) - local - {"__future__"}
    dists = packages_distributions()
    missing = sorted(m for m in modules if m not in dists)
    assert not missing, f"{folder.name} imports modules no installed distribution provides: {missing}"
    return {normalized(d) for m in modules for d in dists[m]}


def declared() -> tuple[dict[str, str], dict[str, str]]:
    """({dependency: requirement}, {test-extra package: requirement})."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    def names(reqs: list[str]) -> dict[str, str]:
        return {normalized(Requirement(r).name): r for r in reqs}
    return names(project["dependencies"]), names(project["optional-dependencies"]["test"])


def test_every_package_the_project_imports_is_a_dependency():
    deps, _ = declared()
    for package in PACKAGES:
        assert third_party(ROOT / package) <= set(deps), (package, sorted(third_party(ROOT / package) - set(deps)))


def test_every_package_the_tests_import_is_declared_for_them():
    deps, test = declared()
    imported = third_party(ROOT / "tests")
    assert imported <= set(deps) | set(test), sorted(imported - set(deps) - set(test))


def test_a_declared_package_nothing_imports_says_why():
    deps, test = declared()
    imported = set().union(*(third_party(ROOT / p) for p in (*PACKAGES, "tests")))
    lines = PYPROJECT.read_text().splitlines()
    for name, requirement in {**deps, **test}.items():
        if name in imported:
            continue
        i = next(i for i, line in enumerate(lines) if f'"{requirement}"' in line)
        assert "#" in lines[i] or lines[i - 1].strip().startswith("#"), f"{requirement}: declared, never imported, no reason given"


def test_the_check_sees_imports(tmp_path):
    (tmp_path / "probe.py").write_text("import yaml.constructor\nfrom PIL import Image\nfrom . import x\nimport os\n")
    assert top_level_imports(tmp_path) == {"yaml", "PIL", "os"}
    assert third_party(tmp_path) == {"pyyaml", "pillow"}
