"""Projected gradient ascent in the L-inf ball: the one loop every native attack runs
(docs/design.md#one-projected-gradient-loop).

PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
https://arxiv.org/abs/1706.06083. Distance: L-inf. Inputs and outputs are images in [0, 1].

Gradients are taken with `torch.autograd.grad` w.r.t. the input only, so no weight gradient is
computed or accumulated. Losses are per example and summed, so examples never interact.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

from attacks import losses

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RandomStart = Literal["none", "uniform", "normal"]


class AttackModeError(RuntimeError):
    """An evaluation attack was handed a model (or submodule) in train mode."""


def require_eval_mode(model: nn.Module) -> None:
    """Refuse a model with any submodule in train mode (BN batch statistics and dropout would make
    the result depend on the batch; docs/evaluation.md#known-traps)."""
    if any(m.training for m in model.modules()):
        raise AttackModeError("the model (or one of its submodules) is in train mode; run attacks "
                              "inside trainers.modes.eval_mode(model)")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Nearest point of the eps-ball around x intersected with [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def random_init(x: torch.Tensor, eps: float, random_start: RandomStart, start_scale: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """Start point: x, x + U(-eps, eps), or x + start_scale * N(0, 1); projected."""
    if random_start == "none":
        return x.clone()
    if random_start == "uniform":
        noise = (torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1) * eps
    elif random_start == "normal":
        noise = start_scale * torch.randn(x.shape, device=x.device, generator=generator)
    else:
        raise ValueError(f"random_start must be 'none', 'uniform' or 'normal', got {random_start!r}")
    return project(x + noise, x, eps)


def ascend(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, *, eps: float,
           step_size: float, steps: int, x_init: torch.Tensor, best: "BestIterate | None" = None,
           budget: torch.Tensor | None = None, noise: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """`steps` signed-gradient ascent steps on `loss_fn(model(x_adv), y)` from `x_init`.

    best: track per example the strongest iterate seen (also across calls, e.g. restarts) and
        return it, at the cost of one extra forward pass on the last iterate.
    budget: early stopping (FAT). Per example, at each step: misclassified with no budget left
        -> frozen at this iterate for good; misclassified with budget left -> spend one unit.
    noise: std of Gaussian noise added to every step (FAT's omega).
    """
    x = x.detach()  # the result is a constant: no graph back to the caller's x through projection
    x_adv = x_init.detach().clone()
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    budget = None if budget is None else budget.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        x_adv = x_adv.detach()
        wrong = logits.detach().argmax(1) != y
        if best is not None:
            best.update(x_adv, wrong, loss.detach())
        if budget is not None:
            active &= ~(wrong & (budget <= 0))
            budget -= (active & wrong).long()
        step = step_size * grad.sign()
        if noise:
            step += noise * torch.randn(x.shape, device=x.device, generator=generator)
        moved = project(x_adv + step, x, eps)
        x_adv = torch.where(active.view(-1, *[1] * (x.ndim - 1)), moved, x_adv)
    if best is None:
        return x_adv
    with torch.no_grad():
        logits = model(x_adv)
        best.update(x_adv, logits.argmax(1) != y, loss_fn(logits, y))
    return best.x


class BestIterate:
    """Per-example strongest iterate: misclassified first, then highest loss."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        self.wrong = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.loss = torch.full((len(x),), float("-inf"), device=x.device)

    def update(self, x: torch.Tensor, wrong: torch.Tensor, loss: torch.Tensor) -> None:
        better = (wrong & ~self.wrong) | ((wrong == self.wrong) & (loss > self.loss))
        self.x = torch.where(better.view(-1, *[1] * (x.ndim - 1)), x, self.x)
        self.wrong |= wrong
        self.loss = torch.where(better, loss, self.loss)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
        step_size: float | None = None, steps: int = 10, random_start: RandomStart = "normal",
        start_scale: float = 0.001, restarts: int = 1, loss: Literal["ce", "cw"] = "ce",
        kappa: float = 50.0, keep_best: bool = True, generator: torch.Generator | None = None,
        require_eval: bool = True) -> torch.Tensor:
    """L-inf PGD on the CE (or CW margin) loss; per example the strongest iterate over restarts.

    Defaults are the DARHT paper's evaluation PGD: 10 steps of eps/4 (2/255 at eps 8/255) from
    x + 0.001 * N(0, 1). step_size None means eps / 4.
    """
    if require_eval:
        require_eval_mode(model)
    check_params(eps, steps, restarts)
    loss_fn = losses.cross_entropy if loss == "ce" else (lambda z, t: losses.cw_margin(z, t, kappa))
    step = eps / 4 if step_size is None else step_size
    best = BestIterate(x) if keep_best or restarts > 1 else None
    for _ in range(restarts):
        x_init = random_init(x, eps, random_start, start_scale, generator)
        x_adv = ascend(model, x, y, loss_fn, eps=eps, step_size=step, steps=steps, x_init=x_init,
                       best=best, generator=generator)
    return x_adv


def check_params(eps: float, steps: int, restarts: int = 1) -> None:
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must be in [0, 1] (images are in [0, 1]), got {eps}")
    if steps < 0 or restarts < 1:
        raise ValueError(f"steps must be >= 0 and restarts >= 1, got {steps} and {restarts}")
