"""Sanity checks of the input gradients the gradient attacks follow: a gradient path from the input
to the logits exists, the gradients are finite and non-zero (`input_gradients`), and they predict
how the loss changes (`gradient_quality`).

The second catches gradient masking that leaves no exact zeros: a model whose gradient is tiny and
unrelated to its loss (a non-differentiable or detached model next to a small differentiable
branch) passes every other model check. It is a first-order check against finite differences:
per point, the change of the margin loss over a small step each way along the gradient against the
gradient's first-order prediction for it, and the median relative error over the points, a
statistic that a ReLU network's kinks on a few points do not move.
"""
from __future__ import annotations

import torch
from torch import nn

from attacks import losses
from attacks.pgd import require_eval_mode
from attacks.sanity_flags import Flag, share

REL_STEP = 1e-3
"""Finite-difference step: the one along which the gradient predicts a change of 1e-3 x
max(|margin|, 1) (float32 rounds the margin at ~1e-7 of it, so the signal is ~1e4 x the rounding;
on digits CNNs such a step is ~1e-3 in L2, where a ReLU network is linear on most points)."""
MAX_STEP = 0.05
"""Largest step (L2 norm, [0, 1] pixel units): a tiny gradient would otherwise ask for a huge one."""
QUALITY_TOL = 0.1
"""Largest median relative error of the predicted directional derivative (honest digits CNNs,
natural and adversarially trained: ~1e-4; a tiny unrelated gradient: > 0.4)."""


def gradient_flag(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> Flag:
    """Input gradients of the CE loss at the clean points: a gradient path, all finite, none zero."""
    require_eval_mode(model)
    zero = nonfinite = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].detach().clone().requires_grad_(True)
        logits = model(xb)
        loss = losses.cross_entropy(logits, y[i:i + batch_size]).sum()
        grad = torch.autograd.grad(loss, xb, allow_unused=True)[0] if loss.requires_grad else None
        if grad is None:
            return Flag("input_gradients", "fail", "no gradient path from the input to the logits (e.g. a hard "
                        "threshold in front): gradient attacks cannot move any point", {"no_path": True, "n": len(x)})
        flat = grad.flatten(1)
        bad = ~torch.isfinite(flat).all(1) | ~torch.isfinite(logits.detach()).all(1)
        nonfinite += int(bad.sum())
        zero += int(((flat.abs().sum(1) == 0) & ~bad).sum())
    n = len(x)
    figures = {"zero": zero, "nonfinite": nonfinite, "no_path": False, "n": n}
    if nonfinite:
        return Flag("input_gradients", "fail", f"non-finite logits or input gradients on {share(nonfinite, n)}", figures)
    if zero:
        return Flag("input_gradients", "warn", f"zero input gradient on {share(zero, n)}: gradient attacks cannot "
                    "move these points", figures)
    return Flag("input_gradients", "ok", f"input gradients finite and non-zero on all {n} points", figures)


def slope_ratios(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per point: the change of the margin loss z_j - z_y (j the runner-up class at x, kept fixed)
    between x - step and x + step along the normalized input gradient, over what the gradient
    predicts for it (the gradient times the displacement actually taken: x + step rounded to
    float32, minus x - step, exact). Only pixels at least one step inside [0, 1] move, so a model
    that clamps its input agrees too. NaN where the gradient is zero, non-finite or missing."""
    xg = x.detach().clone().requires_grad_(True)
    logits = model(xg)
    runner_up = logits.detach().scatter(1, y[:, None], float("-inf")).argmax(1)
    margin = _margin(logits, y, runner_up)
    grad = torch.autograd.grad(margin.sum(), xg, allow_unused=True)[0] if margin.requires_grad else None
    nan = torch.full((len(x),), float("nan"), dtype=torch.float64, device=x.device)
    if grad is None:
        return nan
    with torch.no_grad():
        shape = (-1,) + (1,) * (x.ndim - 1)
        target = REL_STEP * margin.detach().abs().clamp_min(1).double()
        h = (target / grad.flatten(1).double().norm(dim=1)).clamp(max=MAX_STEP).to(x.dtype).view(shape)
        inside = grad * ((x > h) & (x < 1 - h))
        norm = inside.flatten(1).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny).view(shape)
        plus, minus = x + h * inside / norm, x - h * inside / norm
        predicted = (grad.double() * (plus - minus).double()).flatten(1).sum(1)  # the gradient times the step taken
        change = _margin(model(plus), y, runner_up).double() - _margin(model(minus), y, runner_up).double()
        ratio = change / predicted
    return torch.where(torch.isfinite(ratio) & (predicted > 0), ratio, nan)


def _margin(logits: torch.Tensor, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, other[:, None])[:, 0] - logits.gather(1, y[:, None])[:, 0]


def quality_flag(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                 deterministic: bool) -> Flag:
    """The input gradient must predict how the loss changes along it (module docstring)."""
    require_eval_mode(model)
    if not deterministic:
        return Flag("gradient_quality", "skip", "randomized model: finite differences measure its noise")
    ratios = torch.cat([slope_ratios(model, x[i:i + batch_size], y[i:i + batch_size])
                        for i in range(0, len(x), batch_size)])
    ratios = ratios[torch.isfinite(ratios)]
    if not len(ratios):
        return Flag("gradient_quality", "skip", "no point with a finite non-zero input gradient (see input_gradients)")
    error = float((ratios - 1).abs().median())
    figures = {"median_error": error, "median_ratio": float(ratios.median()), "points": len(ratios),
               "agree": int(((ratios - 1).abs() <= QUALITY_TOL).sum()), "tolerance": QUALITY_TOL, "n": len(x)}
    if error > QUALITY_TOL:
        return Flag("gradient_quality", "fail", f"the input gradient does not predict the loss: along it, finite "
                    f"differences differ from its prediction by {error:.3g} (median relative error over "
                    f"{len(ratios)} points; {figures['agree']} agree within {QUALITY_TOL:g}): masked gradients",
                    figures)
    return Flag("gradient_quality", "ok", f"the input gradient predicts the loss along it (median relative error "
                f"{error:.1e} over {len(ratios)} points)", figures)
