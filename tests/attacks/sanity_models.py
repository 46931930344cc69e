"""Models for the sanity-check tests: an honest adversarially trained digits CNN (the naturally
trained one is the `train_digits_cnn` fixture of tests/conftest.py), and failure modes the checks
must catch: zero gradients (quantized inputs), a gradient that is tiny and unrelated to the loss,
and no gradient path."""
from __future__ import annotations

import torch
from torch import nn

from attacks.pgd import pgd
from tests.conftest import _train_digits_cnn
from trainers.data import as_float, load_dataset

DIGITS_EPS = 0.2
POINTS = 120
"""Test points of the sanity-check tests (the first of the digits test split)."""


def train_digits_at_cnn(seed: int, steps: int = 200) -> nn.Module:
    """The conftest CNN trained with PGD-2 adversarial training at the digits eps (0.2; steps of
    1.25 eps from a uniform start): ~91 % clean and ~35 % under the paper suite, in ~3 s."""
    data = load_dataset("digits")
    model = _train_digits_cnn(seed, steps=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = as_float(data.train.x), data.train.y
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=gen)
        model.eval()
        x_adv = pgd(model, x[idx], y[idx], eps=DIGITS_EPS, steps=2, step_size=1.25 * DIGITS_EPS,
                    random_start="uniform", generator=gen)
        model.train()
        loss = nn.functional.cross_entropy(model(x_adv), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


class Quantized(nn.Module):
    """The model on inputs rounded to 16 levels: the same predictions on digits (stored in 17
    levels), zero input gradients everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 16) / 16)


class TinyGradient(nn.Module):
    """The model's logits, detached, plus a tiny random linear function of the input: the same
    predictions, an input gradient that is small, non-zero and unrelated to how the loss changes."""

    def __init__(self, model: nn.Module, scale: float = 1e-3) -> None:
        super().__init__()
        self.model, self.scale = model, scale
        self.register_buffer("direction", torch.randn(64, 10, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).detach() + self.scale * x.flatten(1) @ self.direction


class Threshold(nn.Module):
    """The model on binarized inputs (a hard threshold in front): no gradient path from the input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x > 0.5).float())
