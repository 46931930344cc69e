"""FAT's early-stopped PGD runs only the still-active examples (attacks/pgd.py `ascend`): per
example the result, and the random stream, equal the masked loop written out below (the whole
batch every step, frozen rows held in place by torch.where), for tau 0/1/2 and the CE and KL
losses; the loop ends when every example is frozen; budget and keep-best semantics are kept."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import early_stopped_pgd, losses
from attacks.pgd import BestIterate, ascend, project

EPS, STEP, OMEGA, STEPS = 0.1, 0.02, 0.003, 10


class Counting(nn.Module):
    """Records the batch size of every forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.inner(x)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8 * 16, 10))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return Counting(model).eval()


def mixed_batch(model: nn.Module, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Three quarters labelled with the clean prediction (they need steps to flip), a quarter wrong."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1 + torch.randint(0, 9, (n // 4,), generator=g)) % 10
    return x, y


def masked_reference(model, x, y, *, tau: int, loss: str, gen: torch.Generator, steps: int = STEPS,
                     best: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The masked loop, step by step: the attacked points and which examples were active per step."""
    if loss == "kl":
        with torch.no_grad():
            target = torch.softmax(model(x).float(), dim=1)
        loss_of = lambda z: losses.kl_to_target(z, target)  # noqa: E731
        x_adv = project(x + 0.001 * torch.randn(x.shape, generator=gen), x, EPS)
    else:
        loss_of = lambda z: losses.cross_entropy(z, y)  # noqa: E731
        x_adv = project(x + (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS, x, EPS)
    budget = torch.full((len(x),), tau, dtype=torch.long)
    active = torch.ones(len(x), dtype=torch.bool)
    history = []
    best_x, best_wrong = x.clone(), torch.zeros(len(x), dtype=torch.bool)
    best_loss = torch.full((len(x),), -torch.inf)

    def offer(x_i, wrong, value):
        nonlocal best_x, best_wrong, best_loss
        better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (value > best_loss))
        best_x = torch.where(better[:, None, None, None], x_i, best_x)
        best_wrong, best_loss = best_wrong | wrong, torch.where(better, value, best_loss)

    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = model(x_adv)
        value = loss_of(logits)
        (grad,) = torch.autograd.grad(value.sum(), x_adv)
        x_adv = x_adv.detach()
        wrong = logits.detach().argmax(1) != y
        offer(x_adv, wrong, value.detach())
        active = active & ~(wrong & (budget <= 0))
        budget = budget - (active & wrong).long()
        history.append(active.clone())
        moved = project(x_adv + (STEP * grad.sign() + OMEGA * torch.randn(x.shape, generator=gen)), x, EPS)
        x_adv = torch.where(active[:, None, None, None], moved, x_adv)
    if best:
        with torch.no_grad():
            logits = model(x_adv)
            offer(x_adv, logits.argmax(1) != y, loss_of(logits))
        return best_x, history
    return x_adv, history


def run_fat(model, x, y, *, tau: int, loss: str, gen: torch.Generator, **kw) -> torch.Tensor:
    return early_stopped_pgd(model, x, y, eps=EPS, tau=tau, step_size=STEP, steps=STEPS, omega=OMEGA,
                             loss=loss, generator=gen, **kw)


@pytest.mark.parametrize("loss", ["ce", "kl"])
@pytest.mark.parametrize("tau", [0, 1, 2])
def test_compacted_fat_equals_the_masked_loop(tau: int, loss: str) -> None:
    model = tiny_cnn()
    x, y = mixed_batch(model)
    want, history = masked_reference(model, x, y, tau=tau, loss=loss, gen=torch.Generator().manual_seed(7))
    frozen_at = torch.stack([~a for a in history]).float().argmax(0)  # first frozen step (0 if never)
    never = history[-1]
    assert (~never).any() and len(set(frozen_at[~never].tolist())) >= 2, "examples freeze at different steps"
    model.sizes.clear()
    gen = torch.Generator().manual_seed(7)
    got = run_fat(model, x, y, tau=tau, loss=loss, gen=gen)
    assert torch.equal(got, want)
    # Work: each step ran the active rows rounded up to a bucket of 64 / 8 = 8 rows.
    sizes = model.sizes[1:] if loss == "kl" else model.sizes  # KL: one clean forward first
    active_before = [len(x)] + [int(a.sum()) for a in history[:-1]]
    assert sizes == [min(64, -(-n // 8) * 8) for n in active_before if n]
    assert sum(sizes) < STEPS * len(x)
    # The same numbers were drawn: the next draw of both streams agrees.
    ref_gen = torch.Generator().manual_seed(7)
    masked_reference(model, x, y, tau=tau, loss=loss, gen=ref_gen)
    assert torch.equal(torch.rand(3, generator=gen), torch.rand(3, generator=ref_gen))


@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_the_loop_ends_when_every_example_is_frozen(loss: str) -> None:
    # Every label wrong at the start: with tau 0 all freeze at step 0, so one forward pass only.
    model = tiny_cnn(1)
    x, _ = mixed_batch(model)
    with torch.no_grad():
        y = (model(x).argmax(1) + 1) % 10
    want, history = masked_reference(model, x, y, tau=0, loss=loss, gen=torch.Generator().manual_seed(3))
    assert not history[0].any()
    model.sizes.clear()
    gen = torch.Generator().manual_seed(3)
    got = run_fat(model, x, y, tau=0, loss=loss, gen=gen)
    assert torch.equal(got, want)
    assert model.sizes == ([64] if loss == "ce" else [64, 64])  # (KL: the clean forward first)
    ref_gen = torch.Generator().manual_seed(3)
    masked_reference(model, x, y, tau=0, loss=loss, gen=ref_gen)
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=ref_gen))


def test_masked_and_train_mode_paths_run_the_whole_batch_with_the_same_result() -> None:
    model = tiny_cnn(2)
    x, y = mixed_batch(model)
    compacted = run_fat(model, x, y, tau=1, loss="ce", gen=torch.Generator().manual_seed(5))
    model.sizes.clear()
    masked = run_fat(model, x, y, tau=1, loss="ce", gen=torch.Generator().manual_seed(5), buckets=0)
    assert torch.equal(compacted, masked) and model.sizes == [64] * STEPS
    # A submodule in train mode (batch statistics couple the examples): never compacted.
    model.sizes.clear()
    model.inner[5].train()
    run_fat(model, x, y, tau=1, loss="ce", gen=torch.Generator().manual_seed(5), require_eval=False)
    assert model.sizes == [64] * STEPS


@pytest.mark.parametrize("tau", [0, 2])
def test_budget_with_keep_best_equals_the_masked_loop(tau: int) -> None:
    # ascend with both a budget and a BestIterate: the best iterate of each example is the masked
    # loop's, and the final evaluation forward runs only the examples still moving.
    model = tiny_cnn(3)
    x, y = mixed_batch(model)
    want, history = masked_reference(model, x, y, tau=tau, loss="ce", gen=torch.Generator().manual_seed(9),
                                     best=True)
    gen = torch.Generator().manual_seed(9)
    x_init = project(x + (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS, x, EPS)
    model.sizes.clear()
    got = ascend(model, x, y, losses.cross_entropy, eps=EPS, step_size=STEP, steps=STEPS, x_init=x_init,
                 best=BestIterate(x), budget=torch.full((len(x),), tau), noise=OMEGA, generator=gen)
    assert torch.equal(got, want)
    still = int(history[-1].sum())
    if still:
        assert model.sizes[-1] == min(64, -(-still // 8) * 8)
    else:  # no final forward when none moved in the last step
        assert len(model.sizes) <= STEPS


def test_best_iterate_update_of_some_rows() -> None:
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(6, 2, generator=g), torch.rand(6, 2, generator=g)
    best = BestIterate(x0)
    best.update(x0, torch.tensor([1, 0, 0, 1, 0, 0]).bool(), torch.arange(6.0))
    rows = torch.tensor([4, 1, 2])
    best.update(x1[rows], torch.tensor([0, 1, 0]).bool(), torch.tensor([1.0, 1.0, 9.0]), rows)
    # Row 4: still right with a lower loss (keeps x0); row 1: now wrong (wins); row 2: higher loss
    # (wins); rows 0, 3, 5 not offered.
    assert torch.equal(best.x, torch.stack([x0[0], x1[1], x1[2], x0[3], x0[4], x0[5]]))
    assert best.wrong.tolist() == [True, True, False, True, False, False]
    assert best.loss.tolist() == [0.0, 1.0, 9.0, 3.0, 4.0, 5.0]
