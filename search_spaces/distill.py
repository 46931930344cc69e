"""The distillation search space: method choice, teacher composition, method hyperparameters,
optimizer and schedule, all driven by the preset's `search.options` (define-by-run; conditional
parameters are named `<method>/<param>`).

options:
  method: [darht, b_mtard, rslad, ard]     # or one name
  teachers:                                # DARHT's teacher set, one of two forms:
    candidates: [a, b, c]                  #   any `count` distinct teachers among these,
    count: {low: 1, high: 3}               #   count a range (or fixed int / list)
    compositions: {hetero: [a, c], ...}    #   or named sets (e.g. the paper's Table 2 / Table 6 groups)
  darht: {mc_samples: [1, 4, 16], dropout: {low: 0.0, high: 0.3}, kl_direction: [...], ...}
  b_mtard: {robust_teacher: [a], clean_teacher: [b], beta: {low: 0.5, high: 2.0}, ...}
  mtard / rslad / ard: {teacher: [a], ...} (rslad, ard) or {robust_teacher, clean_teacher} (mtard)
  train: {optim: {lr: {low: 0.01, high: 0.2, log: true}}, epochs: 4, ...}
A method's own `train` block (e.g. rslad: {train: {epochs: 300}}) applies to its trials only.
The space returns {"overrides": <TrainConfig overrides>, "teacher_names": [...]} for the trial.
"""
from __future__ import annotations

from itertools import combinations
from typing import Any

from optuna.trial import Trial

from search_spaces.suggest import suggest, suggest_all
from trainers.config import merge_dicts
from trainers.methods import METHODS


def space(trial: Trial, options: dict[str, Any]) -> dict[str, Any]:
    method = suggest(trial, "method", options.get("method", "darht"))
    params = dict(options.get(method) or {})
    method_train = params.pop("train", {})
    mdef = METHODS.get(method)
    if mdef.any_teachers:
        if "teachers" not in options:
            raise ValueError(f"{method} takes any set of teachers: give teachers: {{candidates: [...], count: ...}}")
        teachers = _composition(trial, options["teachers"])
    else:  # one choice per role the method declares, e.g. b_mtard: {robust_teacher: [...], clean_teacher: [...]}
        missing = [role for role in mdef.teacher_roles if role not in params]
        if missing:
            raise ValueError(f"{method} needs its teachers' choices: {', '.join(f'{r}: [...]' for r in missing)}")
        teachers = [suggest(trial, f"{method}/{role}", params.pop(role)) for role in mdef.teacher_roles]
    overrides = merge_dicts(suggest_all(trial, "train", options.get("train") or {}),
                            suggest_all(trial, f"{method}/train", method_train))
    overrides["method"] = {"name": method, **suggest_all(trial, method, params)}
    return {"overrides": overrides, "teacher_names": teachers}


def _composition(trial: Trial, option: dict[str, Any]) -> list[str]:
    if option.get("compositions"):
        label = suggest(trial, "teachers/composition", list(option["compositions"]))
        return list(option["compositions"][label])
    candidates = list(option["candidates"])
    count = suggest(trial, "teachers/count", option.get("count", len(candidates)))
    sets = ["+".join(c) for c in combinations(candidates, count)]
    return suggest(trial, f"teachers/{count}", sets).split("+")
