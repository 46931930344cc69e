"""Early-stopped PGD: the "friendly" inner maximization of FAT (Zhang et al., "Attacks Which Do
Not Kill Training Make Adversarial Learning Stronger", https://arxiv.org/abs/2002.11242).
Distance: L-inf. Inputs/outputs in [0, 1].

Per example a budget tau. At each of at most `steps` steps: an example already misclassified with
no budget left is frozen at that iterate; one misclassified with budget left spends one unit and
continues. Steps are step_size * sign(grad) + omega * N(0, 1), projected; step_size None means
the reference code's 0.007 at eps 0.031, scaled with eps (attacks.pgd.ZHANG_STEP_PER_EPS). The
result keeps the input order (the reference code permutes it, which is incidental). Frozen examples
cost nothing: each step runs only the active ones (attacks.pgd.ascend, `buckets`).

loss="ce": FAT (uniform start). loss="kl": FAT-TRADES, KL(softmax(f(x)) || softmax(f(x_adv)))
against the model's clean prediction (start x + 0.001 * N(0, 1)).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from attacks import losses
from attacks.pgd import ZHANG_STEP_PER_EPS, RandomStart, ascend, check_params, random_init, require_eval_mode


def early_stopped_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                      tau: int | torch.Tensor = 0, step_size: float | None = None, steps: int = 10,
                      omega: float = 0.001, loss: Literal["ce", "kl"] = "ce",
                      random_start: RandomStart | None = None, start_scale: float = 0.001,
                      generator: torch.Generator | None = None, require_eval: bool = True,
                      buckets: int = 8) -> torch.Tensor:
    """FAT's early-stopped PGD; tau is an int (all examples) or a per-example tensor.

    buckets: granularity of the shrinking batch (see attacks.pgd.ascend); 0 keeps the whole batch
    every step (the same result, more work)."""
    if require_eval:
        require_eval_mode(model)
    check_params(eps, steps)
    budget = torch.as_tensor(tau, device=x.device).long().expand(len(x)).clone()
    if loss == "ce":
        loss_fn, target = losses.cross_entropy, y
    elif loss == "kl":
        with torch.no_grad():
            target = torch.softmax(model(x).float(), dim=1)
        loss_fn = losses.kl_to_target
    else:
        raise ValueError(f"loss must be 'ce' or 'kl', got {loss!r}")
    start = random_start or ("uniform" if loss == "ce" else "normal")
    x_init = random_init(x, eps, start, start_scale, generator)
    step = ZHANG_STEP_PER_EPS * eps if step_size is None else step_size
    return ascend(model, x, y, loss_fn, eps=eps, step_size=step, steps=steps, x_init=x_init, budget=budget,
                  noise=omega, generator=generator, target=target, buckets=buckets)
