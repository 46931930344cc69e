"""The official AutoAttack code (Croce & Hein, https://arxiv.org/abs/2003.01690; PyPI
`pyautoattack`, the files RobustBench pins) behind the project's call shape (docs/design.md#wrapping-autoattack).

Never reimplemented: APGD-CE, APGD-DLR, APGD-T, FAB-T and Square run as the library's own
classes with its standard parameters (100 APGD iterations, 9 target classes, 5000 Square queries).
`version="rand"` is the randomized-defense protocol (APGD-CE + APGD-DLR with EOT 20) for
MC-dropout students. Device and seed are always passed (the library defaults to 'cpu' and to the
clock time), and the global RNG is restored afterwards (the library reseeds it on every batch).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Literal, Sequence

import pyautoattack
import torch
from pyautoattack import AutoAttack
from torch import nn

from attacks.pgd import require_eval_mode

VERSION = pyautoattack.__version__
COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
LOGGER = logging.getLogger("auto-attack")
LOGGER.setLevel(logging.WARNING)


class _Collect(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def library_warnings() -> Iterator[list[str]]:
    """Collect the messages of the library's own checks (a randomized model, probabilities instead
    of logits, zero gradients, Square beating the cascade, ...), which it logs to its
    'auto-attack' logger and nothing would record otherwise."""
    messages: list[str] = []
    handler = _Collect(messages)
    LOGGER.addHandler(handler)
    try:
        yield messages
    finally:
        LOGGER.removeHandler(handler)


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int,
               version: Literal["standard", "rand"] = "standard",
               attacks: Sequence[str] | None = None, n_iter: int | None = None,
               n_queries: int | None = None, batch_size: int = 250,
               require_eval: bool = True) -> torch.Tensor:
    """Adversarial examples from the AutoAttack cascade (or the chosen components of it).

    Each component runs only on points still robust after the previous ones; points it never
    breaks are returned unperturbed. n_iter / n_queries override the official 100 APGD iterations
    and 5000 Square queries (for quick checks only: reported numbers use the defaults).
    """
    if require_eval:
        require_eval_mode(model)
    if not 0 <= eps <= 1:
        raise ValueError(f"eps must be in [0, 1] (images are in [0, 1]), got {eps}")
    unknown = [a for a in attacks or () if a not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown AutoAttack component(s) {unknown}; known: {list(COMPONENTS)}")
    num_classes, connected = _probe(model, x[:1])
    if not connected:
        model = _ZeroPath(model)
    adversary = AutoAttack(model, device=x.device, eps=eps, norm="Linf", seed=seed, version=version)
    adversary.verbose = False
    if attacks is not None:
        adversary.attacks_to_run = list(attacks)
    targets = min(9, num_classes - 1)
    adversary.apgd_targeted.n_target_classes = targets
    adversary.fab.n_target_classes = targets
    if n_iter is not None:
        adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = adversary.fab.n_iter = n_iter
    if n_queries is not None:
        adversary.square.n_queries = n_queries
    devices = [x.device] if x.device.type == "cuda" else []
    # FAB computes its input gradients with `.backward()`, which would also accumulate gradients
    # into the weights (.grad); freeze the weights for the duration so attacks never touch .grad.
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.random.fork_rng(devices=devices):
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return x_adv.detach()


def _probe(model: nn.Module, x: torch.Tensor) -> tuple[int, bool]:
    """The number of classes, and whether the logits have a gradient path from the input."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        connected = logits.requires_grad and torch.autograd.grad(logits.sum(), x, allow_unused=True)[0] is not None
    return int(logits.shape[1]), connected


class _ZeroPath(nn.Module):
    """A model with no gradient path from its input (e.g. a hard threshold in front), given one
    that carries an exact zero: the same logits, a zero input gradient, so the library's gradient
    attacks find no direction (as for any zero gradient) instead of raising a raw autograd error."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits + 0 * x.flatten(1).sum(1, keepdim=True).to(logits.dtype)
