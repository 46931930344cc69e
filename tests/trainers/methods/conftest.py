"""Fixtures for the distillation-method tests: a digits batch and tiny teachers saved and loaded
through the real checkpoint / TeacherSet path."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from kd_testing import tiny_cnn

from trainers.checkpoint import save_model
from trainers.data import load_dataset
from trainers.methods import MethodContext
from trainers.teachers import TeacherSet


@pytest.fixture(scope="session")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    train = load_dataset("digits").train
    return train.x[:32].clone(), train.y[:32].clone()


@pytest.fixture(scope="session")
def teacher_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("teachers")
    return [save_model(root / f"t{i}", tiny_cnn(100 + i, scale), dataset="digits")
            for i, scale in enumerate((8.0, 3.0))]


@pytest.fixture
def make_ctx(teacher_dirs: list[Path]) -> Callable[..., MethodContext]:
    def make(num_teachers: int, *, seed: int = 0, eps: float = 0.1, forward: Any = None) -> MethodContext:
        student = tiny_cnn(seed).train()
        teachers = TeacherSet(teacher_dirs[:num_teachers], dataset="digits", num_classes=10)
        return MethodContext(student=student, forward=forward or student, eps=eps, num_classes=10,
                             teachers=teachers)
    return make
