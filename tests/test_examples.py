"""The job configs in examples/: valid, and the teachers example trains exactly the demo's
teachers (same registry entries), so the distillation example finds them after either."""
from __future__ import annotations

from pathlib import Path

from orchestrator.config import DistillConfig, PretrainConfig, load_sweep_config
from search_spaces import preset_path
from trainers.config import from_dict, load_yaml
from trainers.data import load_dataset
from trainers.loop import preflight

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_example_teachers_are_the_demo_teachers():
    example = from_dict(PretrainConfig, load_yaml(EXAMPLES / "teachers_digits.yaml"))
    demo = load_sweep_config(str(preset_path("demo")))
    assert [(t.name, t.hash) for t in example.teachers] == [(t.name, t.hash) for t in demo.teachers]


def test_the_darht_example_distills_the_example_teachers():
    cfg = from_dict(DistillConfig, load_yaml(EXAMPLES / "darht_digits.yaml"))
    teachers = {t.name for t in from_dict(PretrainConfig, load_yaml(EXAMPLES / "teachers_digits.yaml")).teachers}
    assert cfg.train.method.name == "darht" and cfg.train.method.profile == "paper"
    assert set(cfg.train.teachers) == teachers
    preflight(cfg.train, load_dataset("digits").info)  # the student and its three-teacher head build
