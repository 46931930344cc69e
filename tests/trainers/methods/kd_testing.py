"""Helpers for the distillation-method tests (independent numpy formulas, tiny models, a plain
SGD loop); the fixtures that use them live in conftest.py."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainers.methods import MethodContext, StepInfo
from trainers.models import DataCfg, build_model

DATA_CFG = DataCfg((1, 8, 8), (0.3,), (0.38,))


def tiny_cnn(seed: int, head_scale: float = 1.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=10, data_cfg=DATA_CFG, width=4, hidden=16)
    with torch.no_grad():
        model.head.weight.mul_(head_scale)  # teachers of different confidence (entropy)
    return model


def log_softmax_np(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def kl_np(target_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per-example KL(softmax(target) || softmax(logits)) = sum_k t_k (log t_k - log s_k)."""
    log_t, log_s = log_softmax_np(target_logits), log_softmax_np(logits)
    return (np.exp(log_t) * (log_t - log_s)).sum(1)


def np_of(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# ----------------------------------------------------------------------------- float32 error bounds
# The methods compute in float32; the formulas above in float64 from the same float32 inputs. A
# relative tolerance is wrong for a small KL: it is a difference of terms of size |log p|, so its
# float32 error scales with those terms, not with the KL (and the order in which a SIMD kernel sums
# them changes the digits). These bounds follow from eps32 and the magnitudes of the summed terms,
# the same on every kernel path (docs/design.md#numerical-tolerances).

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23 = 1.19e-7 (twice float32's unit roundoff)


def log_softmax_atol(z: np.ndarray) -> np.ndarray:
    """Per entry, how far float32 log_softmax(z) [B, K] can be from the exact value, z as the
    float32 code gets it (a division by a temperature rounds at eps32 * |z| too)."""
    # K eps32 (|log p_k| + max|z| + 1): max shift, K-term log-sum-exp (>= 1), subtraction, each eps32 x its size
    k = z.shape[1]
    return k * EPS32 * (np.abs(log_softmax_np(z)) + np.abs(z).max(1, keepdims=True) + 1)


def kl_atol_per_example(target_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Per example, a bound on |float32 - exact| for KL(softmax(target) || softmax(logits))."""
    # sum_k t_k d_k, d_k = log t_k - log s_k: off by t_k (err log t_k + err log s_k + |d_k| (err log t_k + eps32)),
    # t_k = exp(log t_k) carrying its log's error; the K-term sum's rounding is inside the factor K (eps32 = 2u)
    log_t, log_s = log_softmax_np(target_logits), log_softmax_np(logits)
    a_t, a_s = log_softmax_atol(target_logits), log_softmax_atol(logits)
    return (np.exp(log_t) * (a_t + a_s + np.abs(log_t - log_s) * (a_t + EPS32))).sum(1)


def kl_atol(target_logits: np.ndarray, logits: np.ndarray) -> float:
    """The bound for the batch mean of `kl_np(target_logits, logits)` (what the methods log)."""
    return float(kl_atol_per_example(target_logits, logits).mean())


def ce_atol(logits: np.ndarray, y: np.ndarray) -> float:
    """The bound for the batch-mean cross-entropy -mean_b log p_{y_b}."""
    return float(log_softmax_atol(logits)[np.arange(len(y)), y].mean())


def bn_stats(model: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in model.named_buffers() if "running" in name]


def sgd_steps(method: Any, ctx: MethodContext, x: torch.Tensor, y: torch.Tensor, steps: int,
              lr: float = 0.05, attack_in_eval: bool = True) -> list[float]:
    """inner_max -> loss_terms -> backward -> step on a fixed batch; checks the attack's mode
    (eval: BN running statistics untouched), parameter grads, loss and metrics."""
    params = list(ctx.student.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    losses = []
    for step in range(steps):
        info = StepInfo(epoch=0, step=step, lr_scale=1.0)
        opt.zero_grad(set_to_none=True)
        ctx.student.train()
        before = bn_stats(ctx.student)
        adv = method.inner_max(x, y, info)
        x_adv = adv if isinstance(adv, torch.Tensor) else adv.x_adv  # RSLAD: an RsladStep
        if attack_in_eval:
            assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(ctx.student)))
        assert all(p.grad is None for p in params), "the attack left gradients on the student"
        assert ctx.student.training, "inner_max must restore the student's train mode"
        assert (x_adv - x).abs().max() <= ctx.eps + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
        loss, metrics = method.loss_terms(x, y, adv, info)
        assert torch.isfinite(loss) and loss.requires_grad
        assert all(not v.requires_grad and torch.isfinite(v).all() for v in metrics.values())
        loss.backward()
        assert all(p.grad is not None for p in params)
        opt.step()
        losses.append(loss.item())
    return losses
