"""Frozen teachers for distillation: loaded from checkpoints, checked against the dataset, run
without gradients. Each teacher resizes and normalizes the raw [0, 1] batch itself (inside the
model), so heterogeneous architectures and input sizes mix freely.

Teachers are in eval mode by default; mode="train" reproduces the official DARHT code's defect
(BN batch statistics and ViT dropout during distillation) for comparison.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn

from trainers.checkpoint import load_model


class TeacherSet:
    def __init__(self, paths: Sequence[str | Path], *, dataset: str, num_classes: int,
                 device: torch.device | str = "cpu", mode: Literal["eval", "train"] = "eval",
                 channels_last: bool = False) -> None:
        self.models: list[nn.Module] = []
        self.sidecars: list[dict] = []
        for path in paths:
            model, sidecar = load_model(path, device=device, expect_dataset=dataset,
                                        expect_num_classes=num_classes)
            model.requires_grad_(False)
            model.train(mode == "train")
            if channels_last:
                model.to(memory_format=torch.channels_last)
            self.models.append(model)
            self.sidecars.append(sidecar)
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.models)

    @property
    def names(self) -> list[str]:
        return [s["model"]["name"] for s in self.sidecars]

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """All teachers on the same input, issued back to back (no host sync): [J, B, K] fp32."""
        return torch.stack([m(x).float() for m in self.models])

    @torch.no_grad()
    def logits_of(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """One teacher's logits [B, K] fp32."""
        return self.models[index](x).float()
