"""Vision Transformers (Dosovitskiy et al., arXiv:2010.11929) built with timm, never downloaded.

`img_size` is the ViT's native input size; inputs of another size are resized to it inside the
model (e.g. CIFAR 32 -> 224 for a ViT-B/16 teacher), so callers always pass the raw batch.
When `img_size` is None the dataset's own image size is used (no resize). `depth`, `embed_dim`
and `num_heads` may be overridden for small experiments (the digits demo uses a 4-layer tiny ViT).
"""
from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from trainers.models.base import DataCfg, ImageClassifier
from trainers.models.registry import MODELS

# (embed_dim, depth, num_heads) of the standard sizes.
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}


class ViT(ImageClassifier):
    def __init__(self, size: str, *, num_classes: int, data_cfg: DataCfg, patch_size: int,
                 img_size: int | None, depth: int | None, embed_dim: int | None,
                 num_heads: int | None, drop_rate: float) -> None:
        img_size = img_size or data_cfg.input_size[1]
        if img_size % patch_size:
            raise ValueError(f"vit img_size {img_size} is not a multiple of patch_size {patch_size}")
        super().__init__(data_cfg.with_size(img_size, img_size), num_classes)
        std_dim, std_depth, std_heads = SIZES[size]
        self.num_features = embed_dim or std_dim
        self.vit = VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=data_cfg.input_size[0], num_classes=0,
            embed_dim=self.num_features, depth=depth or std_depth, num_heads=num_heads or std_heads,
            drop_rate=drop_rate)
        self._init_head()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)


def _vit(size: str, num_classes: int, data_cfg: DataCfg, patch_size: int, img_size: int | None,
         depth: int | None, embed_dim: int | None, num_heads: int | None, drop_rate: float) -> ViT:
    return ViT(size, num_classes=num_classes, data_cfg=data_cfg, patch_size=patch_size,
               img_size=img_size, depth=depth, embed_dim=embed_dim, num_heads=num_heads,
               drop_rate=drop_rate)


@MODELS.register
def vit_tiny(*, num_classes: int, data_cfg: DataCfg, patch_size: int = 4, img_size: int | None = None,
             depth: int | None = None, embed_dim: int | None = None, num_heads: int | None = None,
             drop_rate: float = 0.0) -> ViT:
    """ViT-Ti: 192-d, 12 layers, 3 heads."""
    return _vit("tiny", num_classes, data_cfg, patch_size, img_size, depth, embed_dim, num_heads, drop_rate)


@MODELS.register
def vit_small(*, num_classes: int, data_cfg: DataCfg, patch_size: int = 4, img_size: int | None = None,
              depth: int | None = None, embed_dim: int | None = None, num_heads: int | None = None,
              drop_rate: float = 0.0) -> ViT:
    """ViT-S: 384-d, 12 layers, 6 heads."""
    return _vit("small", num_classes, data_cfg, patch_size, img_size, depth, embed_dim, num_heads, drop_rate)


@MODELS.register
def vit_base(*, num_classes: int, data_cfg: DataCfg, patch_size: int = 16, img_size: int | None = 224,
             depth: int | None = None, embed_dim: int | None = None, num_heads: int | None = None,
             drop_rate: float = 0.0) -> ViT:
    """ViT-B/16 at 224 (the DARHT teachers; CIFAR inputs are resized 32 -> 224); 86 M parameters."""
    return _vit("base", num_classes, data_cfg, patch_size, img_size, depth, embed_dim, num_heads, drop_rate)
