"""Parameter counts against the literature and against formulas derived here (10 classes).

Models are built on the meta device: no memory, no initialization, any size in milliseconds.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from trainers.models import DataCfg, build_model

CIFAR = DataCfg((3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
IMAGENET = DataCfg((3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
K = 10

# Millions of parameters with a 10-class head, as the papers / reference code report them.
LITERATURE = {
    "resnet18": 11.17,          # CIFAR ResNet-18 (kuangliu/pytorch-cifar, RSLAD, ARD)
    "resnet34": 21.28,
    "preact_resnet18": 11.17,   # He et al. 2016b
    "resnet56": 0.85,           # He et al. 2016, Table 6
    "resnet164": 1.70,          # He et al. 2016b, Table 2 (1.7 M)
    "wrn28_10": 36.48,          # Zagoruyko & Komodakis, 36.5 M
    "wrn34_10": 46.16,          # TRADES / FAT teacher
    "wrn70_16": 266.8,          # Gowal et al. 2020, 267 M
    "mobilenet_v2": 2.24,       # CIFAR MobileNetV2 without projection shortcuts (paper-faithful)
}
TOLERANCE = 0.015


def count(name: str, data_cfg: DataCfg = CIFAR, **kwargs: object) -> int:
    with torch.device("meta"):
        model = build_model(name, num_classes=K, data_cfg=data_cfg, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(LITERATURE))
def test_literature_count(name: str) -> None:
    millions = count(name) / 1e6
    assert millions == pytest.approx(LITERATURE[name], rel=TOLERANCE)


def wrn_count(depth: int, k: int, channels: int = 3, classes: int = K) -> int:
    """Pre-activation WRN: stem conv, (BN, conv3x3, BN, conv3x3) blocks, 1x1 projection where the
    shape changes, final BN, linear head. BN has 2 parameters per channel."""
    n = (depth - 4) // 6
    widths = [16, 16 * k, 32 * k, 64 * k]
    total = channels * widths[0] * 9
    in_planes = widths[0]
    for stage, width in enumerate(widths[1:]):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            total += 2 * in_planes + in_planes * width * 9 + 2 * width + width * width * 9
            if in_planes != width or stride != 1:
                total += in_planes * width
            in_planes = width
    return total + 2 * in_planes + in_planes * classes + classes


@pytest.mark.parametrize("name,depth,k", [("wrn28_10", 28, 10), ("wrn34_10", 34, 10),
                                          ("wrn70_16", 70, 16)])
def test_wrn_count_matches_formula(name: str, depth: int, k: int) -> None:
    assert count(name) == wrn_count(depth, k)
    assert count("wide_resnet", depth=depth, widen_factor=k) == wrn_count(depth, k)


def vit_count(*, embed_dim: int, depth: int, mlp_ratio: float = 4.0, patch: int, img: int,
              channels: int = 3, classes: int = K) -> int:
    """ViT with a class token, learned position embedding, pre-norm blocks, final LayerNorm, a
    linear head. The head count does not change the number of parameters (qkv is D -> 3D)."""
    d, hidden = embed_dim, int(embed_dim * mlp_ratio)
    tokens = (img // patch) ** 2 + 1
    patch_embed = channels * patch * patch * d + d
    block = (2 * d  # norm1
             + d * 3 * d + 3 * d  # qkv
             + d * d + d  # attention projection
             + 2 * d  # norm2
             + d * hidden + hidden + hidden * d + d)  # MLP
    return patch_embed + d + tokens * d + depth * block + 2 * d + d * classes + classes


@pytest.mark.parametrize("name,kwargs,data_cfg,expected", [
    ("vit_base", {}, CIFAR, dict(embed_dim=768, depth=12, patch=16, img=224)),
    ("vit_base", {}, IMAGENET, dict(embed_dim=768, depth=12, patch=16, img=224)),
    ("vit_small", {}, CIFAR, dict(embed_dim=384, depth=12, patch=4, img=32)),
    ("vit_small", {"patch_size": 16, "img_size": 224}, CIFAR, dict(embed_dim=384, depth=12, patch=16, img=224)),
    ("vit_tiny", {}, CIFAR, dict(embed_dim=192, depth=12, patch=4, img=32)),
    ("vit_tiny", {"depth": 4, "embed_dim": 96, "num_heads": 3, "img_size": 16}, CIFAR,
     dict(embed_dim=96, depth=4, patch=4, img=16)),
])
def test_vit_count_matches_formula(name: str, kwargs: dict, data_cfg: DataCfg, expected: dict) -> None:
    assert count(name, data_cfg, **kwargs) == vit_count(**expected)


def test_vit_literature_counts() -> None:
    # ViT-B/16 at 224: 86.6 M with the 1000-class ImageNet head, 85.8 M with 10 classes.
    assert count("vit_base") / 1e6 == pytest.approx(85.8, rel=TOLERANCE)
    # ViT-S: 21.3 M with 4x4 patches on 32x32 (65 tokens), 21.7 M as ViT-S/16 at 224.
    assert count("vit_small") / 1e6 == pytest.approx(21.34, rel=0.005)
    assert count("vit_small", patch_size=16, img_size=224) / 1e6 == pytest.approx(21.67, rel=0.005)


@pytest.mark.parametrize("depth", [33, 35, 4, 0])
def test_wide_resnet_rejects_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match=rf"6n\+4.*got {depth}$"):
        count("wide_resnet", depth=depth)


def test_wide_resnet_rejects_unknown_activation() -> None:
    with pytest.raises(ValueError, match="activation.*'gelu'"):
        count("wide_resnet", depth=10, activation="gelu")


def _activations(name: str) -> set[type]:
    with torch.device("meta"):
        model = build_model(name, num_classes=K, data_cfg=CIFAR)
    return {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.SiLU))}


def test_wrn70_16_uses_swish() -> None:
    assert _activations("wrn70_16") == {nn.SiLU}


def test_trades_wrns_use_relu() -> None:
    assert _activations("wrn34_10") == {nn.ReLU}
    assert _activations("wrn28_10") == {nn.ReLU}


def mlp_count(inputs: int, hidden: int, depth: int, classes: int = K) -> int:
    """`depth` hidden Linear layers (weights + biases), then the linear head."""
    return (inputs * hidden + hidden) + (depth - 1) * (hidden * hidden + hidden) + hidden * classes + classes


@pytest.mark.parametrize("data_cfg,inputs", [(DataCfg((1, 8, 8), (0.3,), (0.4,)), 64), (CIFAR, 3072)])
@pytest.mark.parametrize("hidden,depth", [(256, 2), (64, 1), (128, 3)])
def test_mlp_count_matches_formula(data_cfg: DataCfg, inputs: int, hidden: int, depth: int) -> None:
    assert count("mlp", data_cfg, hidden=hidden, depth=depth) == mlp_count(inputs, hidden, depth)


def test_mlp_default_on_digits_is_85k() -> None:
    assert count("mlp", DataCfg((1, 8, 8), (0.3,), (0.4,))) == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10


@pytest.mark.parametrize("hidden,depth", [(0, 2), (256, 0)])
def test_mlp_rejects_empty_layers(hidden: int, depth: int) -> None:
    with pytest.raises(ValueError, match="depth and hidden must be >= 1"):
        count("mlp", CIFAR, hidden=hidden, depth=depth)
