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

ZHANG_STEP_PER_EPS = 0.007 / 0.031
"""Default training-attack step per unit of eps for TRADES, FAT and FAT-TRADES: their reference
codes (yaodongyu/TRADES, zjfheart/Friendly-Adversarial-Training) take steps of 0.007 at eps 0.031,
i.e. 0.2258 eps: 0.00708 at eps 8/255, where eps / 4 (PGD's default, 2/255) is 11 % larger."""


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
           generator: torch.Generator | None = None, target: torch.Tensor | None = None,
           buckets: int = 8) -> torch.Tensor:
    """`steps` signed-gradient ascent steps on `loss_fn(model(x_adv), target)` from `x_init`.

    target: the loss's per-example second argument (default y; e.g. KL target probabilities).
    best: track per example the strongest iterate seen (also across calls, e.g. restarts) and
        return it, at the cost of one extra forward pass on the last iterate.
    budget: early stopping (FAT). Per example, at each step: misclassified with no budget left
        -> frozen at this iterate for good; misclassified with budget left -> spend one unit.
        Frozen examples leave the batch: each step runs only the still-active rows (padded with
        frozen ones up to a multiple of ceil(B / buckets) rows, so a GPU sees at most `buckets`
        shapes) and the loop ends when none is left. Per example the result is the masked
        loop's (the whole batch every step, frozen rows left in place): the noise is still drawn
        for the whole batch and indexed, and the draws of skipped steps are still made, so the
        random stream is unchanged. buckets=0, or a model with a submodule in train mode (batch
        statistics couple the examples), runs the masked loop.
    noise: std of Gaussian noise added to every step (FAT's omega).
    """
    x = x.detach()  # the result is a constant: no graph back to the caller's x through projection
    x_adv = x_init.detach().clone()
    target = y if target is None else target
    active = torch.ones(len(x), dtype=torch.bool, device=x.device)
    budget = None if budget is None else budget.clone()
    compact = budget is not None and buckets > 0 and not any(m.training for m in model.modules())
    for done in range(steps):
        rows = rows_to_run(active, buckets) if compact else None
        if rows is not None and not len(rows):  # all frozen
            for _ in range(steps - done if noise else 0):  # the draws the masked loop would make
                torch.randn(x.shape, device=x.device, generator=generator)
            break
        xs, x0, ys, ts = _take(rows, x_adv, x, y, target)
        xs.requires_grad_(True)
        logits = model(xs)
        loss = loss_fn(logits, ts)
        grad = input_gradient(loss.sum(), xs)
        xs = xs.detach()
        wrong = logits.detach().argmax(1) != ys
        if best is not None:
            best.update(xs, wrong, loss.detach(), rows)
        step = step_size * grad.sign()
        if noise:
            z = torch.randn(x.shape, device=x.device, generator=generator)
            step += noise * (z if rows is None else z[rows])
        moved = project(xs + step, x0, eps)
        if budget is not None:
            moving = spend_budget(active, budget, wrong, rows)
            moved = torch.where(moving.view(-1, *[1] * (x.ndim - 1)), moved, xs)
        if rows is None:
            x_adv = moved
        else:
            x_adv[rows] = moved
    if best is None:
        return x_adv
    rows = rows_to_run(active, buckets) if compact else None
    if rows is None or len(rows):
        xs, ys, ts = _take(rows, x_adv, y, target)
        with torch.no_grad():
            logits = model(xs)
            best.update(xs, logits.argmax(1) != ys, loss_fn(logits, ts), rows)
    return best.x


def input_gradient(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d loss / d x, and zeros when the loss does not depend on x: a model with no gradient path
    from its input (e.g. a hard threshold in front) has a zero derivative almost everywhere, so an
    attack gets no direction from it instead of a raw autograd error; the `input_gradients`
    sanity check fails such a model."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def _take(rows: torch.Tensor | None, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tensors if rows is None else tuple(t[rows] for t in tensors)


def rows_to_run(active: torch.Tensor, buckets: int) -> torch.Tensor | None:
    """The active rows, padded with frozen ones up to a multiple of ceil(B / buckets) rows (empty
    when none is active); None when that is the whole batch. One host sync."""
    count, b = int(active.sum()), len(active)
    if count == b:
        return None
    bucket = -(-b // buckets)
    size = min(b, -(-count // bucket) * bucket)
    return None if size == b else torch.argsort((~active).byte(), stable=True)[:size]


def spend_budget(active: torch.Tensor, budget: torch.Tensor, wrong: torch.Tensor,
                 rows: torch.Tensor | None) -> torch.Tensor:
    """FAT's rule on `rows` (None: all), in place: misclassified with no budget left -> frozen;
    misclassified and still active -> one unit spent. Returns which of `rows` move this step."""
    moving = active if rows is None else active[rows]
    left = budget if rows is None else budget[rows]
    moving = moving & ~(wrong & (left <= 0))
    left = left - (moving & wrong).long()
    if rows is None:
        active.copy_(moving)
        budget.copy_(left)
    else:
        active[rows], budget[rows] = moving, left
    return moving


class BestIterate:
    """Per-example strongest iterate: misclassified first, then highest loss."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.clone()
        self.wrong = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.loss = torch.full((len(x),), float("-inf"), device=x.device)

    def update(self, x: torch.Tensor, wrong: torch.Tensor, loss: torch.Tensor,
               rows: torch.Tensor | None = None) -> None:
        """Offer the iterates `x` of batch rows `rows` (None: all rows, in order)."""
        if rows is None:
            self.x, self.wrong, self.loss = _keep_better((self.x, self.wrong, self.loss), x, wrong, loss)
            return
        seen = (self.x[rows], self.wrong[rows], self.loss[rows])
        merged = _keep_better(seen, x, wrong, loss)
        self.x, self.wrong, self.loss = (t.index_copy(0, rows, m) for t, m in
                                         zip((self.x, self.wrong, self.loss), merged))


def _keep_better(seen: tuple[torch.Tensor, torch.Tensor, torch.Tensor], x: torch.Tensor,
                 wrong: torch.Tensor, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seen_x, seen_wrong, seen_loss = seen
    better = (wrong & ~seen_wrong) | ((wrong == seen_wrong) & (loss > seen_loss))
    return (torch.where(better.view(-1, *[1] * (x.ndim - 1)), x, seen_x), seen_wrong | wrong,
            torch.where(better, loss, seen_loss))


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
