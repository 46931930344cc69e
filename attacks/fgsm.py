"""FGSM: Goodfellow et al., "Explaining and Harnessing Adversarial Examples",
https://arxiv.org/abs/1412.6572. Distance: L-inf. Inputs/outputs in [0, 1].

x_adv = clip(x + eps * sign(grad_x CE(f(x), y))). The DARHT code's "FGSM" starts from a uniform
random point in the ball (random_start="uniform"); the paper FGSM has no random start (default).
"""
from __future__ import annotations

import torch
from torch import nn

from attacks import losses
from attacks.pgd import RandomStart, check_params, ascend, random_init, require_eval_mode


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         step_size: float | None = None, random_start: RandomStart = "none", start_scale: float = 0.001,
         generator: torch.Generator | None = None, require_eval: bool = True) -> torch.Tensor:
    """One signed-gradient step of `step_size` (default eps) on the CE loss, projected."""
    if require_eval:
        require_eval_mode(model)
    check_params(eps, 1)
    x_init = random_init(x, eps, random_start, start_scale, generator)
    return ascend(model, x, y, losses.cross_entropy, eps=eps, step_size=eps if step_size is None else step_size,
                  steps=1, x_init=x_init, generator=generator)
