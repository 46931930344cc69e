"""Pure PyTorch: data, models, training methods, the training loop, checkpoints. Never imports Ray.

The names below load on first use (PEP 562), so `import trainers.errors` or `trainers.config`
(the command line's error path and its configs) does not import torch."""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Callback": "trainers.callbacks", "FitResult": "trainers.callbacks", "TrainingDiverged": "trainers.loop",
          "fit": "trainers.loop", "TrainConfig": "trainers.train_config", "load_train_config": "trainers.train_config"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
