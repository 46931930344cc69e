"""Every preset validates (architectures, methods, teachers, options, the student of every sampled
trial built on the meta device); the paper presets against tiny CIFAR folders in the real format."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from orchestrator.config import load_sweep_config
from orchestrator.sweep import sample_trials, validate
from search_spaces import preset_names, preset_path


def write_cifar(root, n: int = 40) -> None:
    rng = np.random.default_rng(0)
    c10 = root / "cifar-10-batches-py"
    c10.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (c10 / name).write_bytes(pickle.dumps(data, protocol=2))
    c100 = root / "cifar-100-python"
    c100.mkdir()
    for name in ("train", "test"):
        data = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": [int(v) for v in rng.integers(0, 100, n)]}
        (c100 / name).write_bytes(pickle.dumps(data, protocol=2))


@pytest.mark.parametrize("name", preset_names())
def test_preset_validates(name, tmp_path):
    overrides = {}
    if not name.startswith("demo"):  # the demo presets run on the embedded digits
        write_cifar(tmp_path)
        overrides = {"data": {"root": str(tmp_path), "val_size": 20}}
    cfg = load_sweep_config(str(preset_path(name)), overrides)
    validate(cfg)
    samples = sample_trials(cfg, 12)
    teachers = {t.name for t in cfg.teachers}
    assert all(set(s["teacher_names"]) <= teachers for s in samples)
    if cfg.search.points:
        assert cfg.search.num_samples >= len(cfg.search.points)


def test_demo_is_small_and_heterogeneous():
    cfg = load_sweep_config(str(preset_path("demo")))
    assert cfg.data.name == "digits" and 6 <= cfg.search.num_samples <= 8
    robust = {t.name: t.train.model.arch for t in cfg.teachers if t.train.method.name != "natural"}
    clean = {t.name: t.train.model.arch for t in cfg.teachers if t.train.method.name == "natural"}
    assert len(set(robust.values())) >= 2  # an architecture-heterogeneous robust set exists
    assert clean and not set(clean.values()) & set(robust.values())
    options = cfg.search.options.plain()
    assert set(robust) <= set(options["teachers"]["candidates"])
    assert set(options["b_mtard"]["clean_teacher"]) <= set(clean)
    assert set(cfg.evaluation.baselines) == {t.name for t in cfg.teachers}


def test_demo_compare_reuses_the_demos_teachers_and_compares_with_equal_budgets():
    demo, compare = (load_sweep_config(str(preset_path(n))) for n in ("demo", "demo_compare"))
    assert [t.hash for t in compare.teachers] == [t.hash for t in demo.teachers]  # reused from the registry
    assert compare.student == demo.student and compare.search.budget == "per_method"
    assert compare.compare.seeds == 3 and [b["name"] for b in compare.compare.baseline_methods()] == ["pgd_at"]
    assert set(compare.search.options.method) == {"darht", "b_mtard", "rslad"}
