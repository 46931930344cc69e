"""Tiny configurations for the Ray tests: digits, 4-channel CNNs, one epoch, cheap validation."""
from __future__ import annotations

from typing import Any

TINY_MODEL = {"arch": "small_cnn", "kwargs": {"width": 4, "hidden": 16}}
TINY_VALIDATION = {"pgd_steps": 2, "max_examples": 64}


def tiny_train(method: dict[str, Any], epochs: int = 1, **extra: Any) -> dict[str, Any]:
    return {"model": TINY_MODEL, "method": method, "epochs": epochs, "validation": TINY_VALIDATION,
            "optim": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0}, "data": {"batch_size": 128}, **extra}


def tiny_sweep(storage: str | None, name: str = "tiny", num_samples: int = 2) -> dict[str, Any]:
    """A two-teacher sweep of `num_samples` one-epoch trials; storage None leaves the default."""
    return {
        "name": name, **({"storage": storage} if storage else {}), "data": {"name": "digits", "batch_size": 128},
        "teachers": [{"name": "t_at", "train": tiny_train({"name": "pgd_at", "attack": {"steps": 2}})},
                     {"name": "t_nat", "train": tiny_train({"name": "natural"})}],
        "student": tiny_train({"name": "natural"}),
        "search": {"num_samples": num_samples, "max_concurrent": 2, "options": {
            "method": ["darht", "rslad"],
            "teachers": {"candidates": ["t_at", "t_nat"], "count": 2},
            "darht": {"mc_samples": [1, 2], "attack": {"steps": 2}},
            "rslad": {"teacher": ["t_at"], "attack": {"steps": 2}}}},
        "evaluation": {"top_n": 1, "suite": "quick", "baselines": ["t_at"], "actors": 2},
        "resources": {"trial": {"num_workers": 1, "cpus_per_worker": 1},
                      "pretrain": {"num_workers": 1, "cpus_per_worker": 1}},
    }
