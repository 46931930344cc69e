"""One threat model per sweep: the sweep's `eps` reaches every teacher's and the student's training
and validation, and the test evaluation; a teacher or student with another eps is refused."""
from __future__ import annotations

import pytest
import yaml

from orchestrator.config import load_sweep_config
from orchestrator.evaluate import Target, load_suite, plan
from tiny import tiny_sweep
from trainers.checkpoint import save_model
from trainers.config import ConfigError
from trainers.models import DataCfg, build_model


def write(tmp_path, spec) -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_the_sweeps_eps_reaches_teachers_and_students(tmp_path):
    cfg = load_sweep_config(write(tmp_path, {**tiny_sweep(str(tmp_path / "s")), "eps": 0.25}))
    assert cfg.eps == 0.25 and cfg.student.eps == 0.25
    assert [t.train.eps for t in cfg.teachers] == [0.25, 0.25]


def test_a_teacher_with_another_eps_is_refused(tmp_path):
    spec = {**tiny_sweep(str(tmp_path / "s")), "eps": 0.25}
    spec["teachers"][1]["train"]["eps"] = 0.1
    with pytest.raises(ConfigError, match=r"^eps: teachers and students train under one threat model"):
        load_sweep_config(write(tmp_path, spec))


def test_the_evaluation_plan_uses_the_threat_model(tmp_path):
    model = build_model("small_cnn", num_classes=10, data_cfg=DataCfg((1, 8, 8), (0.5,), (0.5,)), width=4, hidden=8)
    ckpt = save_model(tmp_path / "m", model, dataset="digits")
    suite = load_suite("quick")
    tasks = plan([Target(str(ckpt), "m")], data={"name": "digits"}, split="test", specs=suite, shard_size=1000,
                 seed=0, batch_size=64, eps=0.25)
    assert {t.spec.params["eps"] for t in tasks} == {0.25}
    default = plan([Target(str(ckpt), "m")], data={"name": "digits"}, split="test", specs=suite, shard_size=1000,
                   seed=0, batch_size=64)
    assert {t.spec.params["eps"] for t in default} == {0.2}


def test_a_student_with_another_eps_than_the_sweep_is_refused(tmp_path):
    spec = {**tiny_sweep(str(tmp_path / "s")), "eps": 0.1, "teachers": []}
    spec["student"]["eps"] = 0.2
    with pytest.raises(ConfigError, match=r"^eps: teachers and students train under one threat model"):
        load_sweep_config(write(tmp_path, spec))


@pytest.mark.parametrize("where", ["train", "darht.train"])
def test_a_trial_choice_of_eps_is_refused(where, tmp_path):
    """A searched eps would train and select trials at one radius and evaluate them at another."""
    spec = tiny_sweep(str(tmp_path / "s"))
    block = spec["search"]["options"]
    for key in where.split("."):
        block = block.setdefault(key, {})
    block["eps"] = [0.1, 0.2]
    with pytest.raises(ConfigError, match=rf"^search\.options\.{where}\.eps: a sweep has one threat model"):
        load_sweep_config(write(tmp_path, spec))
