"""The model contract, checked on every registered model (docs/design.md#model-contract).

Parametrized over `MODELS.names()`, so registering a model is what puts it under test. A model
is built with the extra kwargs and data config in `CASES` (default: none, CIFAR-shaped input).
Models over `META_ONLY_PARAMS` parameters (WRN-70-16, WRN-34-10, WRN-28-10, ViT-B/16) are
checked for shapes on the meta device only; their numerics are covered by small variants of the
same classes (`wide_resnet` at depth 10, `vit_tiny`, `vit_small`).
"""
from __future__ import annotations

import copy
import functools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers.checkpoint import load_model, model_sidecar, save_model
from trainers.models import MODELS, DataCfg, build_model

CIFAR = DataCfg((3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
DIGITS = DataCfg((1, 8, 8), (0.3,), (0.4,))

# name -> (extra build kwargs, data config of the test input). Unlisted models: ({}, CIFAR).
CASES: dict[str, tuple[dict[str, Any], DataCfg]] = {
    "small_cnn": ({}, DIGITS),
    "darht_student": ({"backbone": "small_cnn", "num_teachers": 2}, DIGITS),
    "wide_resnet": ({"depth": 10, "widen_factor": 2, "activation": "swish"}, CIFAR),
}
# Models whose head cannot be removed: building them with num_classes=0 must raise.
NO_IDENTITY_HEAD = {"darht_student"}
META_ONLY_PARAMS = 30_000_000
# fp32 reordering error of channels_last kernels grows with depth: 54 bottlenecks reach ~2e-5.
CHANNELS_LAST_ATOL = {"resnet164": 5e-5}
NUM_CLASSES = 10
BATCH = 2
NAMES = MODELS.names()


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny batches gain nothing from threads, and oversubscribed cores make them much slower.
    The shared models are released when the module is done."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    for cached in (_reference, _cached, _meta, _bf16_tolerance):
        cached.cache_clear()


def _case(name: str) -> tuple[dict[str, Any], DataCfg]:
    return CASES.get(name, ({}, CIFAR))


def _build(name: str, *, data_cfg: DataCfg | None = None, seed: int = 0,
           calibrate: bool = True) -> nn.Module:
    kwargs, cfg = _case(name)
    torch.manual_seed(seed)
    model = build_model(name, num_classes=NUM_CLASSES, data_cfg=data_cfg or cfg, **kwargs)
    if calibrate:
        _calibrate_batch_norm(model, (data_cfg or cfg).input_size)
    return model.eval()


def _calibrate_batch_norm(model: nn.Module, input_size: tuple[int, ...]) -> None:
    """Give BN layers the statistics of real activations: at initialization (running mean 0,
    variance 1) deep nets saturate in eval mode and return the same logits for every input."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.momentum = None  # cumulative average: one batch sets the statistics exactly
    x = torch.rand(4, *input_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.train()(x)
    for m in norms:
        m.momentum = 0.1


@functools.cache
def _meta(name: str, num_classes: int = NUM_CLASSES) -> nn.Module:
    kwargs, cfg = _case(name)
    with torch.device("meta"):
        return build_model(name, num_classes=num_classes, data_cfg=cfg, **kwargs).eval()


def _meta_only(name: str) -> bool:
    return sum(p.numel() for p in _meta(name).parameters()) > META_ONLY_PARAMS


@functools.cache
def _cached(name: str) -> nn.Module:
    """A real model in eval mode, shared between tests: never mutate it (deep-copy instead)."""
    return _build(name)


def _real(name: str) -> nn.Module:
    if _meta_only(name):
        pytest.skip(f"{name}: over {META_ONLY_PARAMS:,} parameters, numerics covered by a small variant")
    return _cached(name)


def _copy_weights(dst: nn.Module, src: nn.Module) -> nn.Module:
    """Fill every parameter and buffer of `dst` (e.g. materialized from meta) from `src` by name:
    cheaper than initializing a second large model."""
    tensors = {**dict(src.named_parameters()), **dict(src.named_buffers())}
    with torch.no_grad():
        for key, value in [*dst.named_parameters(), *dst.named_buffers()]:
            value.copy_(tensors[key])
    return dst.eval()


def _input(name: str, device: str = "cpu", batch: int = BATCH) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, *_case(name)[1].input_size, generator=gen)
    return x if device == "cpu" else torch.empty_like(x, device=device)


@functools.cache
def _reference(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of the shared model on `_input(name)`, computed once."""
    model = _real(name)
    with torch.no_grad():
        f = model.forward_features(_input(name))
        return f, model.forward_head(f)


def _model_and_input(name: str) -> tuple[nn.Module, torch.Tensor]:
    if _meta_only(name):
        return _meta(name), _input(name, "meta")
    return _cached(name), _input(name)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name: str) -> None:
    model, x = _model_and_input(name)
    assert model.num_classes == NUM_CLASSES
    assert isinstance(model.num_features, int) and model.num_features > 0
    assert isinstance(model.data_cfg, DataCfg)
    if x.device.type == "meta":
        f, logits = model.forward_features(x), model(x)
    else:
        f, logits = _reference(name)
        assert torch.isfinite(logits).all()
    assert f.shape == (BATCH, model.num_features)
    assert logits.shape == (BATCH, NUM_CLASSES)


@pytest.mark.parametrize("name", NAMES)
def test_pre_logits_returns_features(name: str) -> None:
    model, x = _model_and_input(name)
    f = model.forward_features(x) if x.device.type == "meta" else _reference(name)[0]
    with torch.no_grad():
        pre = model.forward_head(f, pre_logits=True)
    assert pre.shape == (BATCH, model.num_features)
    if x.device.type == "cpu":
        assert torch.equal(pre, f)


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_head_of_features_and_deterministic(name: str) -> None:
    """forward == forward_head(forward_features); eval mode gives the same output every call."""
    model, x = _real(name), _input(name)
    assert not any(m.training for m in model.modules())
    _, logits = _reference(name)  # computed as forward_head(forward_features(x))
    with torch.no_grad():
        assert torch.equal(model(x), logits)
        assert torch.equal(model(x), logits)


@pytest.mark.parametrize("name", NAMES)
def test_num_classes_zero_gives_identity_head(name: str) -> None:
    kwargs, cfg = _case(name)
    if name in NO_IDENTITY_HEAD:
        with pytest.raises(ValueError, match="num_classes"):
            build_model(name, num_classes=0, data_cfg=cfg, **kwargs)
        return
    model = _meta(name, num_classes=0)
    assert model.num_classes == 0
    if _meta_only(name):
        out = model(_input(name, "meta"))
    else:
        model = _copy_weights(copy.deepcopy(model).to_empty(device="cpu"), _real(name))
        with torch.no_grad():
            out = model(_input(name))
        assert torch.equal(out, _reference(name)[0])
    assert out.shape == (BATCH, model.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_normalization_happens_inside(name: str) -> None:
    """Same weights, other mean/std: the output changes, exactly as normalizing x differently."""
    model, x = _real(name), _input(name)
    cfg = _case(name)[1]
    channels = cfg.input_size[0]
    other_cfg = replace(cfg, mean=(0.6,) * channels, std=(0.15,) * channels)
    other = _build(name, data_cfg=other_cfg, seed=1, calibrate=False)
    other.load_state_dict(model.state_dict())
    assert other.data_cfg.mean == other_cfg.mean and other.data_cfg.std == other_cfg.std
    m1, s1 = torch.tensor(cfg.mean).view(1, -1, 1, 1), torch.tensor(cfg.std).view(1, -1, 1, 1)
    m2, s2 = torch.tensor(other_cfg.mean).view(1, -1, 1, 1), torch.tensor(other_cfg.std).view(1, -1, 1, 1)
    with torch.no_grad():
        y_other = other(x)
        # model sees (x' - m1) / s1 == (x - m2) / s2, i.e. what `other` sees.
        y_equiv = model((x - m2) / s2 * s1 + m1)
    assert not torch.allclose(_reference(name)[1], y_other, atol=1e-4)
    torch.testing.assert_close(y_other, y_equiv, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches_contiguous(name: str) -> None:
    model, x = _real(name), _input(name)
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y = _reference(name)[1]
    atol = CHANNELS_LAST_ATOL.get(name, 1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(x_cl), y, atol=atol, rtol=1e-5)
        torch.testing.assert_close(cl_model(x_cl), y, atol=atol, rtol=1e-5)


BF16_OPS = (nn.modules.conv._ConvNd, nn.Linear)  # what CPU autocast runs in bf16 in these models


def _bf16_emulated(name: str) -> torch.Tensor:
    """Logits of the model with every conv / linear input, weight, bias and output rounded to bf16,
    everything else fp32: the rounding autocast does, without any bf16 kernel (fp32 arithmetic, so
    the same on every kernel path up to fp32 noise)."""
    model, x = copy.deepcopy(_real(name)), _input(name)
    rounded = [m for m in model.modules() if isinstance(m, BF16_OPS)]
    with torch.no_grad():
        for m in rounded:
            for p in m.parameters(recurse=False):
                p.copy_(p.bfloat16().float())
            m.register_forward_pre_hook(lambda m, args: tuple(a.bfloat16().float() for a in args))
            m.register_forward_hook(lambda m, args, out: out.bfloat16().float())
        return model(x)


@functools.cache
def _bf16_tolerance(name: str) -> float:
    """How far bf16-autocast logits may be from fp32 logits, from bf16's 8-bit mantissa."""
    reference = _reference(name)[1]
    emulated = (_bf16_emulated(name) - reference).abs().max()
    # bf16 (eps 2^-8) rounding of each conv/linear's operands and output, through this model: d; kernels round at
    # other points (0.7-1.6 d measured): 4 d, plus one rounding of the logits themselves (2^-8 max |y|).
    return float(4 * emulated + 2.0 ** -8 * reference.abs().max())


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_close_to_fp32(name: str) -> None:
    """The GPU path's bf16 autocast, checked on the CPU's bf16 kernels: finite logits, off from
    fp32 by what bf16's rounding explains (a deep net at initialization amplifies it: resnet164's
    logits move by ~0.1, a small CNN's by ~0.004)."""
    model, x = _real(name), _input(name)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x.contiguous(memory_format=torch.channels_last))
    reference = _reference(name)[1]
    assert logits.shape == reference.shape and torch.isfinite(logits.float()).all()
    assert (logits.float() - reference).abs().max() <= _bf16_tolerance(name)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "vit_tiny"])
def test_bf16_tolerance_still_catches_a_wrong_output(name: str) -> None:
    """The bound is no blanket: the logits of the batch's other example (a mixed-up or broken
    output) are off by several times more. (Not so for resnet164 at initialization, whose bf16
    noise reaches the spread between inputs.)"""
    reference = _reference(name)[1]
    assert 4 * _bf16_tolerance(name) < (reference - reference.flip(0)).abs().max()


@pytest.mark.parametrize("name", NAMES)
def test_spec_rebuilds_same_architecture(name: str) -> None:
    """spec + data_cfg through the JSON sidecar rebuild the same module tree (meta: any size)."""
    model = _meta(name)
    sidecar = json.loads(json.dumps(model_sidecar(model, dataset="test")))
    spec = sidecar["model"]
    assert spec == {"name": name, "num_classes": NUM_CLASSES, "kwargs": _case(name)[0]}
    with torch.device("meta"):
        rebuilt = build_model(spec["name"], num_classes=spec["num_classes"],
                              data_cfg=DataCfg.from_dict(sidecar["data_cfg"]), **spec["kwargs"])
    assert type(rebuilt) is type(model)
    assert rebuilt.data_cfg == model.data_cfg
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == shapes


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    """save_model / load_model rebuild the model from spec + data_cfg with identical weights."""
    model, x = _real(name), _input(name)
    save_model(tmp_path / "ckpt", model, dataset="test")
    loaded, sidecar = load_model(tmp_path / "ckpt")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.spec == model.spec and loaded.data_cfg == model.data_cfg
    assert sidecar["model"] == model.spec
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert loaded_state.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded_state[key], value), key
    with torch.no_grad():
        assert torch.equal(loaded(x), _reference(name)[1])


def test_vit_resizes_to_native_size(tmp_path: Path) -> None:
    """An 8x8 batch into a 16x16 ViT equals feeding the bilinearly upsampled batch yourself,
    also after a checkpoint round trip (img_size in the spec, native size in data_cfg)."""
    cfg = DataCfg((3, 8, 8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    torch.manual_seed(0)
    model = build_model("vit_tiny", num_classes=NUM_CLASSES, data_cfg=cfg, img_size=16, patch_size=4,
                        depth=2).eval()
    assert model.data_cfg.input_size == (3, 16, 16)
    assert model.data_cfg.mean == cfg.mean and model.data_cfg.std == cfg.std
    x8 = torch.rand(BATCH, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    x16 = F.interpolate(x8, size=(16, 16), mode="bilinear", align_corners=False)
    with torch.no_grad():
        y = model(x8)
        assert y.shape == (BATCH, NUM_CLASSES)
        torch.testing.assert_close(y, model(x16), atol=1e-6, rtol=1e-6)
        assert not torch.allclose(y, model(F.interpolate(x8, size=(16, 16), mode="nearest")), atol=1e-4)
    save_model(tmp_path / "vit", model, dataset="test")
    loaded, _ = load_model(tmp_path / "vit")
    with torch.no_grad():
        assert torch.equal(loaded(x8), y)


def test_vit_base_resizes_cifar_to_224() -> None:
    model = _meta("vit_base")
    assert model.data_cfg.input_size == (3, 224, 224)
    assert model(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, NUM_CLASSES)


def test_vit_rejects_img_size_not_divisible_by_patch() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        build_model("vit_tiny", num_classes=NUM_CLASSES, data_cfg=CIFAR, img_size=30, patch_size=4)
