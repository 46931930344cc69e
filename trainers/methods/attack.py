"""The training attack of every method (its inner maximization): one config, one `craft`.

Projected signed-gradient ascent in the L-inf ball around x (attacks/pgd.py) on the method's
loss: CE on the labels, or KL(target || softmax(model(x'))) to target probabilities (the model's
own clean prediction, TRADES; a teacher's, RSLAD), optionally early-stopped per example (FAT).
The model runs in eval mode (BN running statistics, dropout off) unless `mode: train`.

Presets name the attacks the references use (docs/methods.md#the-training-attack):
  pgd     CE, uniform start, step eps/4 (PGD-AT, ARD)
  ce_pgd  CE, start x + 0.001 N(0, 1), step eps/4 (MTARD; DARHT's official code)
  trades  KL to the model's clean prediction, start x + 0.001 N(0, 1), step 0.007 per 0.031 of eps
  fat     CE, uniform start, early stopping (tau 0), noise omega 0.001, step 0.007 per 0.031 of eps
"""
from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from torch import nn

from attacks import early_stopped_pgd, kl_pgd, pgd
from attacks.pgd import ZHANG_STEP_PER_EPS
from trainers.config import Config, ConfigError, check
from trainers.modes import eval_mode


class AttackConfig(Config):
    """A method's training attack. A preset name (pgd, ce_pgd, trades, fat) stands for its fields;
    `{preset: trades, steps: 5}` sets fields on top of one."""

    loss: Literal["ce", "kl"] = "ce"
    """ce: cross-entropy on the labels; kl: KL to the method's target probabilities."""
    steps: int = 10
    step_size: float | None = None
    """None: step_per_eps * eps."""
    step_per_eps: float = 0.25
    """The step as a share of eps when step_size is None (0.25: 2/255 at 8/255)."""
    eps: float | None = None
    """None: the threat model's eps (the official codes use 0.031)."""
    random_start: Literal["none", "uniform", "normal"] = "uniform"
    """uniform: x + U(-eps, eps); normal: x + 0.001 N(0, 1)."""
    mode: Literal["eval", "train"] = "eval"
    """Model mode while crafting x' (train: BN batch statistics, as some reference codes do)."""
    tau: int | None = None
    """FAT early stopping: each example stops once misclassified with no budget left (None: off)."""
    omega: float = 0.0
    """Std of the Gaussian noise added to every step (FAT's 0.001); needs tau."""

    def check(self) -> None:
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.step_size is None or self.step_size > 0, "step_size", f"must be > 0, got {self.step_size}")
        check(self.eps is None or 0 < self.eps <= 1, "eps", f"must be in (0, 1], got {self.eps}")
        check(self.tau is None or self.tau >= 0, "tau", f"must be >= 0, got {self.tau}")
        check(self.omega == 0 or self.tau is not None, "omega",
              f"step noise ({self.omega}) is part of FAT's early stopping: set tau, or omega: 0")

    @classmethod
    def expand(cls, value: Any) -> Any:
        """A preset name, or {preset: name, ...fields on top}, as the fields it stands for."""
        if isinstance(value, dict) and "preset" in value:
            return {**cls.expand(value["preset"]), **{k: v for k, v in value.items() if k != "preset"}}
        if isinstance(value, str):
            if value not in PRESETS:
                raise ConfigError("", f"unknown attack {value!r}; known: {', '.join(PRESETS)}")
            return dict(PRESETS[value])
        return value

    def radius(self, threat_eps: float) -> float:
        return threat_eps if self.eps is None else self.eps

    def step(self, threat_eps: float) -> float:
        return self.step_per_eps * self.radius(threat_eps) if self.step_size is None else self.step_size


_KIND = ("loss", "random_start", "step_per_eps", "tau", "omega")
PRESETS: dict[str, dict[str, Any]] = {name: dict(zip(_KIND, values)) for name, values in {
    "pgd": ("ce", "uniform", 0.25, None, 0.0),
    "ce_pgd": ("ce", "normal", 0.25, None, 0.0),
    "trades": ("kl", "normal", ZHANG_STEP_PER_EPS, None, 0.0),
    "fat": ("ce", "uniform", ZHANG_STEP_PER_EPS, 0, 0.001),
}.items()}


def craft(attack: AttackConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, threat_eps: float,
          target: torch.Tensor | None = None, tau: int | None = None) -> torch.Tensor:
    """x' for this step (a constant: no graph back to x). `target`: the probabilities of a KL
    attack (None: the model's own clean prediction); `tau`: this epoch's FAT budget (None: the
    config's)."""
    eps, step, budget = attack.radius(threat_eps), attack.step(threat_eps), attack.tau if tau is None else tau
    train_mode = attack.mode == "train"
    with contextlib.nullcontext() if train_mode else eval_mode(model):
        common = dict(eps=eps, step_size=step, steps=attack.steps, random_start=attack.random_start,
                      require_eval=not train_mode)
        if budget is not None and (attack.loss == "ce" or target is None):
            return early_stopped_pgd(model, x, y, tau=budget, omega=attack.omega, loss=attack.loss, **common)
        if budget is not None:
            raise ValueError("early stopping with a KL target other than the model's own prediction")
        if attack.loss == "ce":
            return pgd(model, x, y, keep_best=False, **common)
        if target is None:
            with torch.no_grad():
                target = torch.softmax(model(x).float(), dim=1)
        return kl_pgd(model, x, target_probs=target, **common)
