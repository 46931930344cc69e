"""trainers/schedules.py: lr_at against values computed by hand."""
from __future__ import annotations

import math

import pytest

from trainers.schedules import lr_at
from trainers.train_config import ScheduleConfig

BASE = 0.1


def lr(cfg: ScheduleConfig, epoch: int, step: int, *, steps_per_epoch: int, epochs: int,
       base: float = BASE) -> float:
    return lr_at(cfg, base, epoch=epoch, step=step, steps_per_epoch=steps_per_epoch, epochs=epochs)


@pytest.mark.parametrize("epoch,step,expected", [
    (0, 0, 0.1), (99, 390, 0.1),        # before the first milestone
    (100, 0, 0.01), (149, 390, 0.01),   # decayed exactly from the milestone epoch's first step
    (150, 0, 0.001), (199, 390, 0.001),
])
def test_multistep_decays_from_the_milestone_epoch(epoch: int, step: int, expected: float) -> None:
    cfg = ScheduleConfig(kind="multistep", milestones=(100, 150), gamma=0.1)
    assert lr(cfg, epoch, step, steps_per_epoch=391, epochs=200) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("epoch,expected", [(59, 0.1), (60, 0.02), (119, 0.02), (120, 0.004),
                                            (160, 0.0008), (199, 0.0008)])
def test_multistep_gamma(epoch: int, expected: float) -> None:
    cfg = ScheduleConfig(kind="multistep", milestones=(60, 120, 160), gamma=0.2)
    assert lr(cfg, epoch, 5, steps_per_epoch=10, epochs=200) == pytest.approx(expected, rel=1e-12)


# DARHT on Tiny-ImageNet: 20 warm-up epochs, then x0.1 at epochs 60 and 80 (100 steps per epoch).
DARHT_TINY = ScheduleConfig(kind="multistep", milestones=(60, 80), gamma=0.1, warmup_epochs=20)


@pytest.mark.parametrize("epoch,step,expected", [
    (0, 0, 0.1 * 0.01 / 20),     # first step: one step of warm-up done, not zero
    (0, 99, 0.1 * 1 / 20),
    (10, 0, 0.1 * 10.01 / 20),
    (19, 98, 0.1 * 19.99 / 20),
    (19, 99, 0.1),               # the last warm-up step reaches the base lr
    (20, 0, 0.1), (59, 99, 0.1),
    (60, 0, 0.01), (79, 99, 0.01),
    (80, 0, 0.001), (99, 99, 0.001),
])
def test_darht_tiny_imagenet_warmup_then_steps(epoch: int, step: int, expected: float) -> None:
    assert lr(DARHT_TINY, epoch, step, steps_per_epoch=100, epochs=100) == pytest.approx(expected, rel=1e-12)


def test_warmup_increases_every_step_and_ends_at_base() -> None:
    steps_per_epoch = 7
    values = [lr(DARHT_TINY, e, s, steps_per_epoch=steps_per_epoch, epochs=100)
              for e in range(20) for s in range(steps_per_epoch)]
    assert values[0] > 0
    assert all(b > a for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(BASE, rel=1e-12)
    assert len(set(values)) == len(values)


def test_fractional_warmup() -> None:
    cfg = ScheduleConfig(kind="constant", warmup_epochs=0.5)
    assert lr(cfg, 0, 0, steps_per_epoch=4, epochs=3) == pytest.approx(0.05)
    assert lr(cfg, 0, 1, steps_per_epoch=4, epochs=3) == pytest.approx(0.1)
    assert lr(cfg, 2, 3, steps_per_epoch=4, epochs=3) == pytest.approx(0.1)


@pytest.mark.parametrize("epoch,step,expected", [
    (0, 0, 0.1),                                              # start: base
    (2, 2, 0.05 * (1 + math.cos(math.pi * 2.5 / 10))),        # t = 2.5 epochs
    (5, 0, 0.05),                                             # midpoint: half
    (9, 3, 0.05 * (1 + math.cos(math.pi * 9.75 / 10))),       # last step, just above 0
    (10, 0, 0.0),                                             # end of training: 0
])
def test_cosine(epoch: int, step: int, expected: float) -> None:
    cfg = ScheduleConfig(kind="cosine")
    assert lr(cfg, epoch, step, steps_per_epoch=4, epochs=10) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("epoch,step,expected", [
    (0, 0, 0.1 * 0.25 / 2),   # warm-up
    (1, 3, 0.1),              # last warm-up step: base
    (2, 0, 0.1),              # cosine starts at base after warm-up
    (7, 0, 0.05),             # halfway through the 10 cosine epochs
    (12, 0, 0.0),
])
def test_cosine_after_warmup(epoch: int, step: int, expected: float) -> None:
    cfg = ScheduleConfig(kind="cosine", warmup_epochs=2)
    assert lr(cfg, epoch, step, steps_per_epoch=4, epochs=12) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("cfg,epoch,expected", [
    (ScheduleConfig(kind="cosine", per_step=False), 0, 0.1),
    (ScheduleConfig(kind="cosine", per_step=False), 5, 0.05),
    (ScheduleConfig(kind="cosine", per_step=False), 9, 0.05 * (1 + math.cos(math.pi * 0.9))),
    (ScheduleConfig(kind="multistep", milestones=(3,), warmup_epochs=5, per_step=False), 0, 0.1 / 5),
    (ScheduleConfig(kind="multistep", milestones=(3,), warmup_epochs=5, per_step=False), 3, 0.1 * 4 / 5),
    (ScheduleConfig(kind="multistep", milestones=(3,), warmup_epochs=5, per_step=False), 4, 0.01),
    (ScheduleConfig(kind="constant", per_step=False), 7, 0.1),
])
def test_per_epoch_schedules_are_constant_within_an_epoch(cfg: ScheduleConfig, epoch: int,
                                                          expected: float) -> None:
    values = {lr(cfg, epoch, s, steps_per_epoch=13, epochs=10) for s in range(13)}
    assert len(values) == 1
    assert values.pop() == pytest.approx(expected, rel=1e-12)


def test_per_step_cosine_changes_within_an_epoch() -> None:
    cfg = ScheduleConfig(kind="cosine")
    values = [lr(cfg, 3, s, steps_per_epoch=5, epochs=10) for s in range(5)]
    assert all(b < a for a, b in zip(values, values[1:]))


def test_constant_and_base_lr_scaling() -> None:
    cfg = ScheduleConfig(kind="constant")
    assert lr(cfg, 0, 0, steps_per_epoch=3, epochs=5) == 0.1
    assert lr(cfg, 4, 2, steps_per_epoch=3, epochs=5, base=0.5) == 0.5
    multistep = ScheduleConfig(kind="multistep", milestones=(2,), gamma=0.5)
    assert lr(multistep, 2, 0, steps_per_epoch=3, epochs=5, base=0.4) == pytest.approx(0.2)
