"""Optuna define-by-run search spaces (module-level functions, picklable) and the YAML presets
users start from (search_spaces/presets/*.yaml). `SPACES` loads on first use (PEP 562): the
presets are read without importing Optuna or torch (the command line's --help)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from trainers.config import ConfigError
from trainers.registry import unknown_name_message

PRESETS = Path(__file__).with_name("presets")


def __getattr__(name: str) -> Any:
    if name != "SPACES":
        raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")
    from search_spaces import distill

    return {"distill": distill.space}


def preset_path(name_or_path: str) -> Path:
    """A preset by name (search_spaces/presets/<name>.yaml) or a YAML path; a bare word that is
    neither is a one-line ConfigError on `--config` with the close preset names."""
    candidate = PRESETS / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    looks_like_a_file = "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    if not looks_like_a_file and not Path(name_or_path).exists():
        raise ConfigError("--config", unknown_name_message("preset or config file", name_or_path, preset_names()))
    return Path(name_or_path)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))
