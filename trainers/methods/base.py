"""What every training method provides (docs/design.md#one-method-per-file) and how configs pick one.

A method is `inner_max` (the adversarial examples of this step, or None) plus `loss_terms`
(the loss to minimize and detached per-step metrics), with JSON-able state for resume. The loop
(trainers/loop.py) calls them in that order; it owns modes, autocast, backward and the optimizer.
Each method registers a `MethodDef`: its config dataclass, named profiles (paper / official /
...), how many teachers it takes, and optionally how it wraps the student architecture.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from trainers.configs import ConfigError, from_dict
from trainers.registry import Registry, UnknownNameError


@dataclass(frozen=True)
class StepInfo:
    epoch: int
    """0-based epoch."""
    step: int
    """0-based global step."""
    lr_scale: float
    """Current lr / base lr (B-MTARD decays its balance rates with the lr)."""


@dataclass
class MethodContext:
    student: nn.Module
    """The bare student: attacks and evaluation run on it."""
    forward: Callable[..., torch.Tensor]
    """The training forward (the DDP wrapper when distributed): gradients flow through it."""
    eps: float
    num_classes: int
    teachers: Any = None
    """A trainers.teachers.TeacherSet for distillation methods, else None."""


class Method(Protocol):
    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> torch.Tensor | None: ...

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Stateless:
    """State handling for methods whose behaviour depends only on (config, epoch)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


@dataclass(frozen=True)
class MethodDef:
    name: str
    config: type
    build: Callable[[Any, MethodContext], Method]
    profiles: dict[str, dict[str, Any]] = field(default_factory=lambda: {"paper": {}})
    """Named parameter sets; the first is the default. Every config records its profile."""
    teachers: tuple[int, int | None] = (0, 0)
    """Allowed number of teachers (min, max); None = no upper bound."""
    student: Callable[[str, dict[str, Any], Any, int], tuple[str, dict[str, Any]]] | None = None
    """Maps (arch, kwargs, config, num_teachers) to the student to build (DARHT adds its head)."""


METHODS: Registry = Registry("method")


def register(mdef: MethodDef) -> MethodDef:
    METHODS.register(mdef, name=mdef.name)
    return mdef


def parse_method(raw: dict[str, Any]) -> tuple[MethodDef, Any]:
    """{name, profile?, **params} -> (MethodDef, its config with the profile applied)."""
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError("name", "required field is missing (e.g. natural, pgd_at, trades, darht)")
    try:
        mdef = METHODS.get(raw["name"])
    except UnknownNameError as err:
        raise ConfigError("name", str(err)) from None
    profile = raw.get("profile", next(iter(mdef.profiles)))
    if profile not in mdef.profiles:
        raise ConfigError("profile", f"{profile!r} unknown for {mdef.name}; known: {', '.join(mdef.profiles)}")
    params = {k: v for k, v in raw.items() if k not in ("name", "profile")}
    return mdef, from_dict(mdef.config, {**mdef.profiles[profile], **params, "profile": profile})


def kl_per_example(target_logits: torch.Tensor, logits: torch.Tensor,
                   temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """KL(softmax(target / T) || softmax(logits / T)) per example, summed over classes, in fp32."""
    log_t = F.log_softmax(target_logits.float() / temperature, dim=1)
    log_s = F.log_softmax(logits.float() / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1)


def attack_eps(configured: float | None, threat_eps: float) -> float:
    """The training attack's radius: the method's explicit setting, else the threat model's."""
    return threat_eps if configured is None else configured
