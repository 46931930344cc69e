"""The contract every model in the zoo satisfies (docs/design.md#model-contract).

A model takes [0, 1] images, resizes them to its native input size when they differ, normalizes
them with its own mean/std, and exposes `forward_features(x) -> [B, F]` (pooled) and
`forward_head(f, pre_logits=False) -> [B, K]`, with `forward = forward_head ∘ forward_features`.
"""
from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DataCfg:
    """What a model expects of its input: native (C, H, W), normalization, resize interpolation."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        channels = self.input_size[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"data_cfg: mean/std need {channels} values for input_size "
                             f"{self.input_size}, got {len(self.mean)}/{len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"data_cfg.std: must be positive, got {self.std}")

    def with_size(self, height: int, width: int) -> "DataCfg":
        return replace(self, input_size=(self.input_size[0], height, width))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataCfg":
        return cls(input_size=tuple(data["input_size"]), mean=tuple(data["mean"]),
                   std=tuple(data["std"]), interpolation=data.get("interpolation", "bilinear"))


class ImageClassifier(nn.Module, abc.ABC):
    """Base class: preprocessing inside, pooled features out of `features`, a linear head.

    Subclasses implement `features(x_normalized) -> [B, num_features]` and set `num_features`
    before calling `_init_head`.
    """

    num_features: int

    def __init__(self, data_cfg: DataCfg, num_classes: int) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.data_cfg = data_cfg
        self.num_classes = num_classes
        channels = data_cfg.input_size[0]
        # Non-persistent: the sidecar carries mean/std, so weights never disagree with data_cfg.
        self.register_buffer("mean", torch.tensor(data_cfg.mean).view(1, channels, 1, 1), False)
        self.register_buffer("std", torch.tensor(data_cfg.std).view(1, channels, 1, 1), False)

    def _init_head(self) -> None:
        self.head = nn.Linear(self.num_features, self.num_classes) if self.num_classes else nn.Identity()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images of any size -> normalized images of the native size."""
        size = self.data_cfg.input_size[1:]
        if tuple(x.shape[-2:]) != size:
            align = False if self.data_cfg.interpolation in ("bilinear", "bicubic") else None
            x = F.interpolate(x, size=size, mode=self.data_cfg.interpolation, align_corners=align)
        return (x - self.mean) / self.std

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized native-size images -> pooled features [B, num_features]."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.preprocess(x))

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return f if pre_logits else self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
