"""The model registry and `build_model` (docs/design.md#registries)."""
from __future__ import annotations

from typing import Any

from torch import nn

from trainers.models.base import DataCfg
from trainers.registry import Registry

MODELS: Registry = Registry("model")


def build_model(name: str, *, num_classes: int, data_cfg: DataCfg | dict[str, Any],
                **kwargs: Any) -> nn.Module:
    """Build a registered model. kwargs set to None are dropped so the entrypoint's defaults win.

    The result carries `model.spec` (name, num_classes, kwargs), which together with
    `model.data_cfg` is everything a checkpoint needs to rebuild it.
    """
    if isinstance(data_cfg, dict):
        data_cfg = DataCfg.from_dict(data_cfg)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = MODELS.build(name, num_classes=num_classes, data_cfg=data_cfg, **kwargs)
    model.spec = {"name": name, "num_classes": num_classes, "kwargs": kwargs}
    return model
