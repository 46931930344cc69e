"""Optuna define-by-run search spaces (module-level functions, picklable) and the YAML presets
users start from (search_spaces/presets/*.yaml)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from search_spaces import distill

SPACES: dict[str, Callable[..., dict[str, Any]]] = {"distill": distill.space}
PRESETS = Path(__file__).with_name("presets")


def preset_path(name_or_path: str) -> Path:
    """A preset by name (search_spaces/presets/<name>.yaml) or a YAML path."""
    candidate = PRESETS / f"{name_or_path}.yaml"
    return candidate if candidate.is_file() else Path(name_or_path)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))
