"""trainers/modes.py: eval_mode restores every submodule's own mode (docs/design.md#model-modes)."""
from __future__ import annotations

import pytest
from torch import nn

from trainers.modes import eval_mode


def mixed() -> nn.Module:
    """A model in train mode whose BN branch is deliberately frozen in eval mode."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2), nn.Dropout(0.5)), nn.Dropout(0.1))
    model.train()
    model[1].eval()
    return model


def modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_eval_mode_sets_eval_and_restores_each_submodule() -> None:
    model = mixed()
    before = modes(model)
    assert before == {"": True, "0": True, "1": False, "1.0": False, "1.1": False, "2": True}
    with eval_mode(model):
        assert not any(modes(model).values())
    assert modes(model) == before


def test_eval_mode_restores_when_the_body_raises() -> None:
    model = mixed()
    before = modes(model)
    with pytest.raises(RuntimeError, match="attack failed"):
        with eval_mode(model):
            assert not any(modes(model).values())
            raise RuntimeError("attack failed")
    assert modes(model) == before


def test_eval_mode_handles_several_models_and_nesting() -> None:
    student, teacher = mixed(), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).eval()
    teacher[1].train()  # a teacher with one BN layer left training
    before_s, before_t = modes(student), modes(teacher)
    with eval_mode(student, teacher):
        with eval_mode(student):
            assert not any(modes(student).values())
        assert not any(modes(student).values()) and not any(modes(teacher).values())
    assert modes(student) == before_s and modes(teacher) == before_t


def test_eval_mode_on_a_model_already_in_eval() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).eval()
    with eval_mode(model):
        pass
    assert not any(modes(model).values())
