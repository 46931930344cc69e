"""Evaluation attacks by name, bound to parameters as an `AttackSpec` (docs/design.md#attack-call-shape).

A spec is plain data (name + params), hashable into a stable key, so results can be cached per
(checkpoint, attack parameters, shard). `run_attack(spec, model, x, y, seed=...)` calls it with
the one call shape all attacks share.
"""
from __future__ import annotations

import difflib
import numbers
import inspect
import json
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from attacks.autoattack import autoattack
from attacks.cw import cw_inf
from attacks.fgsm import fgsm
from attacks.pgd import pgd

# name -> (function, fixed arguments, takes a seed (library) rather than a torch.Generator)
ATTACKS: dict[str, tuple[Callable[..., torch.Tensor], dict[str, Any], bool]] = {
    "fgsm": (fgsm, {}, False),
    "pgd": (pgd, {}, False),
    "cw_inf": (cw_inf, {}, False),
    "apgd_ce": (autoattack, {"attacks": ["apgd-ce"]}, True),
    "apgd_dlr": (autoattack, {"attacks": ["apgd-dlr"]}, True),
    "apgd_t": (autoattack, {"attacks": ["apgd-t"]}, True),
    "fab_t": (autoattack, {"attacks": ["fab-t"]}, True),
    "square": (autoattack, {"attacks": ["square"]}, True),
    "autoattack": (autoattack, {}, True),
}
_RESERVED = {"model", "x", "y", "generator", "seed", "require_eval", "attacks"}


@dataclass(frozen=True)
class AttackSpec:
    """An attack and its parameters; `label` is only for display (e.g. "PGD-10")."""

    name: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    label: str = ""

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            close = difflib.get_close_matches(self.name, list(ATTACKS), n=3)
            hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"known: {', '.join(ATTACKS)}"
            raise ValueError(f"unknown attack {self.name!r}; {hint}")
        fn, _, _ = ATTACKS[self.name]
        allowed = [p for p in inspect.signature(fn).parameters if p not in _RESERVED]
        for key, value in self.params.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=2)
                hint = f"did you mean {' or '.join(map(repr, close))}?" if close else f"allowed: {', '.join(allowed)}"
                raise ValueError(f"attack {self.name!r}: unknown parameter {key!r}; {hint}")
        eps = self.params.get("eps")
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps <= 1):
            raise ValueError(f"attack {self.name!r}: eps must be a number in [0, 1] (images are in "
                             f"[0, 1]; 8/255 = {8 / 255:.6f}), got {eps!r}")

    @property
    def eps(self) -> float:
        return float(self.params["eps"])

    def with_defaults(self, **defaults: Any) -> "AttackSpec":
        """Fill parameters the spec leaves unset (e.g. the dataset's eps)."""
        return AttackSpec(self.name, {**defaults, **self.params}, self.label)

    @property
    def key(self) -> str:
        """Stable identity of the attack and its parameters (not the label)."""
        return json.dumps({"name": self.name, "params": self.params}, sort_keys=True)

    @property
    def from_library(self) -> bool:
        """True for the official AutoAttack components (seeded by the library, batched inside)."""
        return ATTACKS[self.name][2]

    @property
    def display(self) -> str:
        return self.label or self.name


def run_attack(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               seed: int) -> torch.Tensor:
    """Run the attack deterministically under `seed`; the model must be in eval mode."""
    if "eps" not in spec.params:
        raise ValueError(f"attack {spec.name!r}: eps is not set")
    fn, fixed, takes_seed = ATTACKS[spec.name]
    if takes_seed:
        return partial(fn, **fixed)(model, x, y, seed=seed, **spec.params)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return fn(model, x, y, generator=gen, **fixed, **spec.params)
