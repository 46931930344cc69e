"""Per-example correctness under attack, in mini-batches, on any device.

Robust accuracy is over all points: a point counts as robust only if it is classified correctly
both clean and under the attack, so only clean-correct points are attacked (exact, and cheaper).
Every adversarial batch is checked to lie inside the eps-ball and [0, 1] before it is scored.
"""
from __future__ import annotations

import torch
from torch import nn

from attacks.pgd import require_eval_mode
from attacks.registry import AttackSpec, run_attack

TOLERANCE = 1e-6


class PerturbationError(RuntimeError):
    """An attack returned a point outside the threat model."""


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted labels, in mini-batches."""
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    require_eval_mode(model)
    return predict(model, x, batch_size) == y


def robust_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: AttackSpec, *,
                   seed: int, batch_size: int, clean: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask [N]: correct under `spec` (and clean). Deterministic under `seed`."""
    require_eval_mode(model)
    clean = clean_correct(model, x, y, batch_size) if clean is None else clean
    robust = torch.zeros_like(clean)
    idx = torch.nonzero(clean).flatten()
    if len(idx) == 0:
        return robust
    if spec.from_library:
        # The library batches internally and reseeds per batch; hand it all the points at once.
        x_adv = run_attack(spec, model, x[idx], y[idx], seed=seed).to(x.device)
        check_perturbation(x_adv, x[idx], spec.eps)
        robust[idx] = predict(model, x_adv, batch_size) == y[idx]
        return robust
    for start in range(0, len(idx), batch_size):
        b = idx[start:start + batch_size]
        x_adv = run_attack(spec, model, x[b], y[b], seed=seed + start)
        check_perturbation(x_adv, x[b], spec.eps)
        robust[b] = predict(model, x_adv, batch_size) == y[b]
    return robust


def check_perturbation(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> None:
    """Refuse adversarial examples outside the eps-ball or [0, 1] (or not finite)."""
    if not torch.isfinite(x_adv).all():
        raise PerturbationError("attack returned non-finite values")
    if x_adv.numel() == 0:
        return  # an empty shard: nothing to check (min/max of an empty tensor would raise)
    dist = (x_adv - x).abs().amax().item()
    if dist > eps + TOLERANCE or x_adv.min() < -TOLERANCE or x_adv.max() > 1 + TOLERANCE:
        raise PerturbationError(f"attack left the threat model: L-inf distance {dist:.6g} "
                                f"(eps {eps:.6g}), range [{x_adv.min():.4g}, {x_adv.max():.4g}]")
