"""Per-example attack losses (shape [B]): summed, never batch-averaged, so one example's value
never changes another's step (the batch-mean trap of docs/evaluation.md#known-traps)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CE(z, y) per example."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """-clamp(z_y - max_{j != y} z_j + kappa, min=0) per example (the FAT / DARHT CW-inf loss)."""
    z = logits.float()
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
    return -(true - other + kappa).clamp(min=0)


def kl_to_target(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(z)) per example, summed over classes (TRADES / RSLAD inner loss)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return (torch.xlogy(target_probs, target_probs) - target_probs * log_p).sum(1)

