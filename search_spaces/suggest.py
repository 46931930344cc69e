"""Turn a YAML option into an Optuna suggestion: a list is a categorical choice, a mapping with
low/high a range (int when both ends are ints; `log: true` for a log scale), anything else a fixed
value (returned as is, not suggested). A value that is itself a list is fixed by giving it as the
only choice: `milestones: [[215, 260, 285]]`. Spaces call only `trial.suggest_*`
(docs/design.md#search-spaces-only-suggest)."""
from __future__ import annotations

from typing import Any

from optuna.trial import Trial


def is_range(option: Any) -> bool:
    return isinstance(option, dict) and {"low", "high"} <= set(option)


def suggest(trial: Trial, name: str, option: Any) -> Any:
    if isinstance(option, list):
        if not option:
            raise ValueError(f"{name}: an empty list of choices")
        return trial.suggest_categorical(name, option) if len(option) > 1 else option[0]
    if is_range(option):
        low, high, log = option["low"], option["high"], bool(option.get("log", False))
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            return trial.suggest_int(name, low, high, log=log)
        return trial.suggest_float(name, float(low), float(high), log=log)
    return option


def suggest_all(trial: Trial, prefix: str, options: dict[str, Any]) -> dict[str, Any]:
    """Suggest every option of a mapping under `prefix/` (nested mappings recurse)."""
    out = {}
    for key, option in options.items():
        name = f"{prefix}/{key}" if prefix else key
        if isinstance(option, dict) and not is_range(option):
            out[key] = suggest_all(trial, name, option)
        else:
            out[key] = suggest(trial, name, option)
    return out
