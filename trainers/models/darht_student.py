"""The DARHT student (docs/methods.md#darht-student-head): any backbone, then
pooled features f -> dropout(p) -> Linear(F, J*K) = the student-teacher feature map S^T(x)
(viewed [B, J, K]; slice j is teacher j's slot) -> Linear(J*K, K) = the student logits S(x).

Monte Carlo dropout runs the backbone once: the C dropout masks are applied to C copies of f and
the feature-map layer runs on all of them as one batched matmul; S^T and S are averaged over the
C samples before any softmax (S is linear in S^T, so averaging S^T first gives the same S).
Dropout is on in train mode; in eval mode `inference` picks deterministic (dropout off, the
default) or "mc" (a randomized model: evaluate it with AutoAttack's `rand` version, EOT).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trainers.models.base import DataCfg
from trainers.models.registry import MODELS, build_model


class DarhtStudent(nn.Module):
    def __init__(self, backbone: nn.Module, *, num_teachers: int, num_classes: int, dropout: float,
                 mc_samples: int, inference: Literal["deterministic", "mc"]) -> None:
        super().__init__()
        if num_teachers < 1:
            raise ValueError(f"DARHT needs at least one teacher, got {num_teachers}")
        if num_classes < 1:
            raise ValueError(f"DARHT needs num_classes >= 1 (its head maps to classes), got {num_classes}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout p must be in [0, 1), got {dropout}")
        if mc_samples < 1:
            raise ValueError(f"mc_samples C must be >= 1, got {mc_samples}")
        if inference not in ("deterministic", "mc"):
            raise ValueError(f"inference must be 'deterministic' or 'mc', got {inference!r}")
        self.backbone = backbone
        self.num_teachers, self.num_classes = num_teachers, num_classes
        self.dropout, self.mc_samples, self.inference = dropout, mc_samples, inference
        self.data_cfg = backbone.data_cfg
        self.num_features = backbone.num_features
        self.feature_map = nn.Linear(self.num_features, num_teachers * num_classes)
        self.classifier = nn.Linear(num_teachers * num_classes, num_classes)

    @property
    def stochastic(self) -> bool:
        return self.dropout > 0 and (self.training or self.inference == "mc")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def head(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features [B, F] -> (logits [B, K], feature map [B, J, K]), MC-averaged."""
        if self.stochastic:
            f_CBF = F.dropout(f.unsqueeze(0).expand(self.mc_samples, *f.shape), self.dropout, training=True)
            fmap = self.feature_map(f_CBF).mean(0)
        else:
            fmap = self.feature_map(f)
        return self.classifier(fmap), fmap.view(len(f), self.num_teachers, self.num_classes)

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return f if pre_logits else self.head(f)[0]

    def forward(self, x: torch.Tensor, with_map: bool = False) -> Any:
        logits, fmap_BJK = self.head(self.forward_features(x))
        return (logits, fmap_BJK) if with_map else logits


@MODELS.register
def darht_student(*, num_classes: int, data_cfg: DataCfg, backbone: str, num_teachers: int,
                  backbone_kwargs: dict[str, Any] | None = None, dropout: float = 0.1,
                  mc_samples: int = 4, inference: str = "deterministic") -> DarhtStudent:
    """A registered backbone (built without its classifier) under the DARHT head."""
    body = build_model(backbone, num_classes=0, data_cfg=data_cfg, **(backbone_kwargs or {}))
    return DarhtStudent(body, num_teachers=num_teachers, num_classes=num_classes, dropout=dropout,
                        mc_samples=mc_samples, inference=inference)
