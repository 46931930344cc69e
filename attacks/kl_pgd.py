"""KL-PGD: the inner maximization of TRADES (Zhang et al., https://arxiv.org/abs/1901.08573) and
RSLAD (Zi et al., https://arxiv.org/abs/2108.07969). Distance: L-inf. Inputs/outputs in [0, 1].

x_adv maximizes sum_i KL(target_i || softmax(f(x_adv_i))), where target is the model's own clean
prediction (TRADES) or a teacher's (RSLAD). Start x + 0.001 * N(0, 1), 10 steps; step_size None
means eps / 4 (RSLAD's 2/255 at 8/255; TRADES's trainer passes its reference 0.007 at eps 0.031,
scaled with eps).
"""
from __future__ import annotations

import torch
from torch import nn

from attacks import losses
from attacks.pgd import RandomStart, check_params, ascend, random_init, require_eval_mode


def kl_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
           target_probs: torch.Tensor, eps: float, step_size: float | None = None, steps: int = 10,
           random_start: RandomStart = "normal", start_scale: float = 0.001,
           generator: torch.Generator | None = None, require_eval: bool = True) -> torch.Tensor:
    """Final iterate of signed-gradient ascent on KL(target_probs || softmax(model(x_adv)))."""
    if require_eval:
        require_eval_mode(model)
    check_params(eps, steps)
    target = target_probs.detach().float()
    labels = torch.zeros(len(x), dtype=torch.long, device=x.device) if y is None else y
    x_init = random_init(x, eps, random_start, start_scale, generator)
    return ascend(model, x, labels, losses.kl_to_target, eps=eps,
                  step_size=eps / 4 if step_size is None else step_size, steps=steps, x_init=x_init,
                  generator=generator, target=target)
