"""What every training method provides and how configs pick one (docs/design.md#one-method-per-file).

A method is `inner_max` (this step's adversarial inputs and whatever else its loss needs, returned
explicitly) plus `loss_terms` (the loss to minimize and detached per-step metrics, given what
inner_max returned), with JSON-able state for resume. The loop (trainers/loop.py) calls them in
that order; it owns modes, autocast, backward and the optimizer. Each method registers a
`MethodDef`: its config (a `MethodConfig` told apart by `name`), named profiles (paper / official
/ ...), its teachers' roles, and optionally how it wraps the student architecture.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol, TypeVar

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from trainers.config import Config, ConfigError, merge_dicts
from trainers.registry import Registry

T = TypeVar("T", bound="MethodConfig")


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
    """The threat model's eps (a method's attack may set its own)."""
    num_classes: int
    teachers: Any = None
    """A trainers.teachers.TeacherSet for distillation methods, else None."""


class Method(Protocol):
    def inner_max(self, x: torch.Tensor, y: torch.Tensor, info: StepInfo) -> Any:
        """This step's adversarial inputs (and anything else loss_terms needs), or None."""

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, adv: Any,
                   info: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss and detached metrics; `adv` is what inner_max returned for this step."""

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
    config: type["MethodConfig"]
    build: Callable[[Any, MethodContext], Method]
    profiles: dict[str, dict[str, Any]] = field(default_factory=lambda: {"paper": {}})
    """Named parameter sets; the first is the default. Every config records its profile."""
    teacher_roles: tuple[str, ...] = ()
    """One teacher per role, in this order, e.g. ("robust_teacher", "clean_teacher")."""
    any_teachers: bool = False
    """Any number J >= 1 of teachers, of any architecture (DARHT), instead of roles."""
    student: Callable[[str, dict[str, Any], Any, int], tuple[str, dict[str, Any]]] | None = None
    """Maps (arch, kwargs, config, num_teachers) to the student to build (DARHT adds its head)."""

    def check_teachers(self, count: int) -> None:
        if self.any_teachers and count < 1:
            raise ConfigError("teachers", f"method {self.name} takes at least 1 teacher, got {count}")
        if not self.any_teachers and count != len(self.teacher_roles):
            roles = f" ({', '.join(self.teacher_roles)})" if self.teacher_roles else ""
            raise ConfigError("teachers", f"method {self.name} takes {len(self.teacher_roles)} teacher(s){roles}, "
                              f"got {count}")


METHODS: Registry = Registry("method")


def register(mdef: MethodDef) -> MethodDef:
    METHODS.register(mdef, name=mdef.name)
    return mdef


class MethodConfig(Config):
    """A method's config: `name` picks the method, `profile` a named set of defaults (the paper's
    by default), the other fields override it. Nested configs (the attack) merge field by field
    with the method's defaults, so `attack: {steps: 5}` changes only the number of steps."""

    name: str
    profile: str = "paper"

    renamed: ClassVar[dict[str, str]] = {
        **{f: f"attack.{f}" for f in ("steps", "step_size", "eps", "random_start", "tau", "omega")},
        "attack_mode": "attack.mode", "attack_steps": "attack.steps", "attack_step_size": "attack.step_size",
        "attack_eps": "attack.eps", "fat_tau": "attack.tau", "fat_omega": "attack.omega"}
    """Fields of earlier versions and where they live now (named in the unknown-field error)."""

    @property
    def definition(self) -> MethodDef:
        return METHODS.get(self.name)

    def replace(self: T, **changes: Any) -> T:
        """A validated copy with some fields changed; not the profile: it sets the defaults when the
        config is built, and a built config no longer knows which of its values were given."""
        if changes.get("profile", self.profile) != self.profile:
            raise ConfigError("profile", f"cannot change {self.profile!r} to {changes['profile']!r} on a built config; "
                              "build a new one from the given fields (method_config) with the other profile")
        return super().replace(**changes)

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("name", cls.model_fields["name"].default)
        mdef = METHODS.get(name)
        profile = data.get("profile", next(iter(mdef.profiles)))
        if profile not in mdef.profiles:
            raise ConfigError("profile", f"{profile!r} unknown for {name}; known: {', '.join(mdef.profiles)}")
        values = {**mdef.profiles[profile], **data, "name": name, "profile": profile}
        for key, info in cls.model_fields.items():  # nested configs: defaults < profile < given
            if isinstance(info.default, Config) and key in values:
                kind = type(info.default)
                layers = [info.default.model_dump(), mdef.profiles[profile].get(key, {}), data.get(key, {})]
                try:
                    expanded = [kind.expand(layer) for layer in layers]
                except ConfigError as err:
                    raise ConfigError(key, err.detail) from None
                if all(isinstance(layer, dict) for layer in expanded):
                    values[key] = merge_dicts(merge_dicts(expanded[0], expanded[1]), expanded[2])
        return values

def kl_per_example(target_logits: torch.Tensor, logits: torch.Tensor,
                   temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """KL(softmax(target / T) || softmax(logits / T)) per example, summed over classes, in fp32."""
    log_t = F.log_softmax(target_logits.float() / temperature, dim=1)
    log_s = F.log_softmax(logits.float() / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1)
