"""Honest digits models and test points shared by the sanity-check tests, trained once per session."""
from __future__ import annotations

import pytest

from tests.attacks.sanity_models import POINTS, train_digits_at_cnn
from trainers.data import as_float, load_dataset


@pytest.fixture(scope="session")
def cnn(train_digits_cnn):
    """A small CNN trained for ~2 s on digits: ~97% clean, ~25% robust at eps 0.1."""
    return train_digits_cnn(0)


@pytest.fixture(scope="session")
def at_cnn():
    """The same CNN adversarially trained at the digits eps (0.2)."""
    return train_digits_at_cnn(0)


@pytest.fixture(scope="session")
def points():
    """The first POINTS digits test points."""
    data = load_dataset("digits")
    return as_float(data.test.x[:POINTS]), data.test.y[:POINTS]
