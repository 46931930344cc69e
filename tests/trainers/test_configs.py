"""trainers/config.py (typed configs: frozen pydantic models loaded from plain data / YAML) and
trainers/train_config.py (TrainConfig): every error is one ConfigError line naming the dotted
field, the bad value and what is allowed."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest

from trainers.config import Config, ConfigError, check, config_hash, from_dict, load_yaml, to_dict
from trainers.models import MODELS
from trainers.registry import UnknownNameError
from trainers.train_config import OptimConfig, TrainConfig, load_train_config


class Teacher(Config):
    arch: str
    """Registered model name (required)."""
    weight: float = 1.0

    def check(self) -> None:
        try:
            MODELS.get(self.arch)
        except UnknownNameError as err:
            raise ConfigError("arch", f"{self.arch!r} unknown; " + str(err).split("; ", 1)[1]) from None
        check(self.weight > 0, "weight", f"must be > 0, got {self.weight}")


class Distill(Config):
    teachers: list[Teacher] = []
    mode: Literal["eval", "train"] = "eval"
    temperature: float | None = None
    size: tuple[int, int] = (32, 32)
    milestones: tuple[int, ...] = ()
    steps: int = 10
    flag: bool = False
    extra: dict[str, int] = {}


class Root(Config):
    distill: Distill = Distill()


def error(cls: type, data: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(cls, data)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{info.value.field}: ") or not info.value.field
    return info.value


# --- unknown keys -------------------------------------------------------------------------

@pytest.mark.parametrize("data,field_,hint", [
    ({"optim": {"lrr": 0.1}}, "optim.lrr", "did you mean 'lr'?"),
    ({"epoch": 3}, "epoch", "did you mean 'epochs'?"),
    ({"schedule": {"milestone": [3]}}, "schedule.milestone", "did you mean 'milestones'?"),
    ({"method": {"name": "trades", "betaa": 6}}, "method.betaa", "did you mean 'beta'?"),
])
def test_unknown_key_names_path_and_close_match(data: dict, field_: str, hint: str) -> None:
    err = error(TrainConfig, data)
    assert err.field == field_
    assert str(err) == f"{field_}: unknown field; {hint}"


def test_unknown_key_without_close_match_lists_fields() -> None:
    err = error(TrainConfig, {"optim": {"zzz": 1}})
    assert err.field == "optim.zzz"
    assert "known: " in str(err) and "'lr'" not in str(err) and "lr" in str(err)


def test_unknown_key_in_list_element() -> None:
    err = error(Root, {"distill": {"teachers": [{"arch": "resnet18"}, {"arch": "resnet18", "wieght": 2}]}})
    assert err.field == "distill.teachers[1].wieght"
    assert "did you mean 'weight'?" in str(err)


# --- types --------------------------------------------------------------------------------

@pytest.mark.parametrize("data,field_,message", [
    ({"optim": {"lr": "0.1"}}, "optim.lr", "expected float, got str '0.1'"),
    ({"epochs": True}, "epochs", "expected int, got bool True"),
    ({"epochs": 2.5}, "epochs", "expected int, got float 2.5"),
    ({"epochs": "3"}, "epochs", "expected int, got str '3'"),
    ({"data": {"augment": 1}}, "data.augment", "expected bool, got int 1"),
    ({"name": 3}, "name", "expected str, got int 3"),
    ({"data": 5}, "data", "expected a mapping, got int 5"),
    ({"teachers": "a/b"}, "teachers", "expected a list, got str 'a/b'"),
    ({"teachers": ["a", 2]}, "teachers[1]", "expected str, got int 2"),
    ({"schedule": {"milestones": [10, "20"]}}, "schedule.milestones[1]", "expected int, got str '20'"),
    ({"optim": {"grad_clip": "1"}}, "optim.grad_clip", "expected float, got str '1'"),
    ({"data": {"val_size": 1.5}}, "data.val_size", "expected int, got float 1.5"),
])
def test_wrong_types(data: dict, field_: str, message: str) -> None:
    err = error(TrainConfig, data)
    assert err.field == field_
    assert str(err) == f"{field_}: {message}"


def test_ints_are_accepted_for_floats() -> None:
    cfg = from_dict(TrainConfig, {"optim": {"lr": 1, "betas": [0, 1]}, "eps": 1})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.0, 1.0) and all(isinstance(b, float) for b in cfg.optim.betas)
    assert isinstance(cfg.eps, float)


@pytest.mark.parametrize("data,field_", [
    ({"optim": {"name": "adam"}}, "optim.name"),
    ({"device": "gpu"}, "device"),
    ({"schedule": {"kind": 1}}, "schedule.kind"),
])
def test_literal_violation_lists_allowed_values(data: dict, field_: str) -> None:
    err = error(TrainConfig, data)
    assert err.field == field_
    assert "not allowed; expected one of" in str(err)
    allowed = {"optim.name": ("'sgd'", "'adamw'"), "device": ("'auto'", "'cpu'", "'cuda'"),
               "schedule.kind": ("'multistep'", "'cosine'", "'constant'")}[field_]
    assert all(a in str(err) for a in allowed)


def test_literal_accepts_allowed_value() -> None:
    assert from_dict(Distill, {"mode": "train"}).mode == "train"
    assert error(Distill, {"mode": "Train"}).field == "mode"


def test_optional() -> None:
    assert from_dict(Distill, {"temperature": None}).temperature is None
    assert from_dict(Distill, {"temperature": 4}).temperature == 4.0
    err = error(Distill, {"temperature": "hot"})
    assert err.field == "temperature" and "expected float, got str 'hot'" in str(err)
    assert from_dict(TrainConfig, {"eps": None, "threads": None}).eps is None


def test_fixed_length_tuples() -> None:
    assert from_dict(Distill, {"size": [16, 24]}).size == (16, 24)
    assert str(error(Distill, {"size": [16]})) == "size: expected 2 values, got 1"
    assert str(error(Distill, {"size": [16, 16, 3]})) == "size: expected 2 values, got 3"
    assert str(error(Distill, {"size": [16, "x"]})) == "size[1]: expected int, got str 'x'"
    assert str(error(TrainConfig, {"optim": {"betas": [0.9]}})) == "optim.betas: expected 2 values, got 1"
    assert error(Distill, {"size": 16}).field == "size"


def test_variable_length_tuples_become_tuples() -> None:
    assert from_dict(Distill, {"milestones": [1, 2, 3]}).milestones == (1, 2, 3)
    assert from_dict(TrainConfig, {"teachers": ["a", "b"]}).teachers == ("a", "b")


def test_typed_dict_values() -> None:
    assert from_dict(Distill, {"extra": {"a": 1}}).extra == {"a": 1}
    assert error(Root, {"distill": {"extra": {"a": "x"}}}).field == "distill.extra.a"


def test_missing_required_field_in_list() -> None:
    err = error(Root, {"distill": {"teachers": [{"arch": "resnet18"}, {"weight": 2.0}]}})
    assert str(err) == "distill.teachers[1].arch: required field is missing"


def test_post_init_errors_get_the_full_path() -> None:
    err = error(Root, {"distill": {"teachers": [{"arch": "resnet18"}, {"arch": "resnet-18"}]}})
    assert str(err).startswith("distill.teachers[1].arch: 'resnet-18' unknown; did you mean 'resnet18'")
    err = error(Root, {"distill": {"teachers": [{"arch": "resnet18", "weight": 0}]}})
    assert str(err) == "distill.teachers[0].weight: must be > 0, got 0.0"


def test_nested_list_of_dataclasses_is_built() -> None:
    cfg = from_dict(Root, {"distill": {"teachers": [{"arch": "resnet18"}, {"arch": "wrn34_10", "weight": 2}]}})
    assert cfg.distill.teachers == [Teacher(arch="resnet18"), Teacher(arch="wrn34_10", weight=2.0)]


def test_top_level_must_be_a_mapping() -> None:
    assert str(error(TrainConfig, [1, 2])) == "expected a mapping, got list"
    assert from_dict(TrainConfig, None) == TrainConfig()


# --- TrainConfig validation ---------------------------------------------------------------

@pytest.mark.parametrize("data,field_,fragment", [
    ({"epochs": 0}, "epochs", "must be >= 1, got 0"),
    ({"eps": 2}, "eps", "must be in (0, 1]"),
    ({"eps": 0}, "eps", "must be in (0, 1]"),
    ({"optim": {"lr": 0}}, "optim.lr", "must be > 0"),
    ({"optim": {"grad_clip": -1}}, "optim.grad_clip", "must be > 0"),
    ({"data": {"batch_size": 0}}, "data.batch_size", "must be >= 1"),
    ({"schedule": {"milestones": [80, 60]}}, "schedule.milestones", "must be increasing"),
    ({"schedule": {"warmup_epochs": -1}}, "schedule.warmup_epochs", "must be >= 0"),
    ({"method": {"name": "trades", "profile": "fast"}}, "method.profile", "'fast' unknown for trades"),
    ({"method": {"name": "trades", "beta": "six"}}, "method.beta", "expected float"),
    ({"method": {}}, "method.name", "required field is missing"),
])
def test_post_init_validation(data: dict, field_: str, fragment: str) -> None:
    err = error(TrainConfig, data)
    assert err.field == field_
    assert fragment in str(err)


def test_unknown_method_suggests_close_name() -> None:
    err = error(TrainConfig, {"method": {"name": "trade"}})
    assert err.field == "method.name"
    assert "'trade'" in str(err) and "did you mean 'trades'" in str(err)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match=r"^epochs: must be >= 1, got 0$"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match=r"^eps: must be in \(0, 1\]"):
        TrainConfig(eps=2.0)
    with pytest.raises(ConfigError, match=r"^lr: must be > 0"):
        OptimConfig(lr=-0.1)


def test_valid_config_round_trips_through_to_dict() -> None:
    cfg = from_dict(TrainConfig, {"epochs": 3, "method": {"name": "trades", "beta": 3},
                                  "schedule": {"milestones": [1, 2]}, "teachers": ["t"]})
    again = from_dict(TrainConfig, to_dict(cfg))
    assert again == cfg and config_hash(again) == config_hash(cfg)


# --- YAML ---------------------------------------------------------------------------------

def _yaml_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    message = _yaml_error(tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "does not exist" in message
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")


def test_load_yaml_invalid_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\noptim:\n  lr: 0.1\n   momentum: 0.9\n")
    message = _yaml_error(path)
    assert message == f"{path}: not valid YAML at line 4"


def test_load_yaml_binary_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"epochs: 3\nname: \xff\xfe\n")
    assert _yaml_error(path) == f"{path}: not valid YAML (not UTF-8 text)"


@pytest.mark.parametrize("text,kind", [("- 1\n- 2\n", "list"), ("just a string\n", "str"), ("3\n", "int")])
def test_load_yaml_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "top.yaml"
    path.write_text(text)
    assert _yaml_error(path) == f"{path}: expected a mapping at the top level, got {kind}"


def test_load_yaml_empty_file_is_empty_mapping(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_yaml(path) == {}


def test_load_train_config_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\noptim:\n  lr: 0.05\n  momentum: 0.8\nmethod:\n  name: trades\n")
    cfg = load_train_config(path, {"optim": {"lr": 0.01}, "method": {"beta": 3.0}})
    assert (cfg.epochs, cfg.optim.lr, cfg.optim.momentum) == (3, 0.01, 0.8)
    assert (cfg.method.name, cfg.method.beta) == ("trades", 3.0)
    path.write_text("optim:\n  lrr: 0.05\n")
    with pytest.raises(ConfigError, match=r"^optim\.lrr: unknown field; did you mean 'lr'\?$"):
        load_train_config(path)


# --- config_hash --------------------------------------------------------------------------

def test_config_hash_ignores_key_order() -> None:
    a = {"epochs": 3, "optim": {"lr": 0.1, "momentum": 0.9}, "method": {"name": "trades", "beta": 6.0}}
    b = {"method": {"beta": 6.0, "name": "trades"}, "optim": {"momentum": 0.9, "lr": 0.1}, "epochs": 3}
    assert config_hash(a) == config_hash(b)
    assert config_hash(from_dict(TrainConfig, a)) == config_hash(from_dict(TrainConfig, b))


def test_config_hash_changes_with_values() -> None:
    base = from_dict(TrainConfig, {"optim": {"lr": 0.1}})
    hashes = {config_hash(base),
              config_hash(from_dict(TrainConfig, {"optim": {"lr": 0.2}})),
              config_hash(from_dict(TrainConfig, {"optim": {"lr": 0.1}, "seed": 1})),
              config_hash(from_dict(TrainConfig, {"optim": {"lr": 0.1}, "method": {"name": "trades"}}))}
    assert len(hashes) == 4
    assert config_hash(base) == config_hash(from_dict(TrainConfig, {"optim": {"lr": 0.1}}))


def test_config_hash_of_dataclass_equals_hash_of_its_data() -> None:
    cfg = TrainConfig(teachers=("a", "b"))
    assert config_hash(cfg) == config_hash(to_dict(cfg))
    assert len(config_hash(cfg)) == 16 and len(config_hash(cfg, length=8)) == 8


# --- the method union and nested attack config --------------------------------------------

def test_the_method_is_picked_by_name_and_its_profile_applied() -> None:
    cfg = from_dict(TrainConfig, {"method": {"name": "darht", "profile": "official", "attack": {"steps": 3}}})
    assert type(cfg.method).__name__ == "DarhtConfig" and cfg.method.profile == "official"
    # the official profile's attack (CE-PGD of 0.003 at 0.031 from x + 0.001 N) with the given steps
    a = cfg.method.attack
    assert (a.loss, a.random_start, a.tau, a.steps, a.step_size, a.eps) == ("ce", "normal", None, 3, 0.003, 0.031)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_a_built_method_config_keeps_its_profile() -> None:
    cfg = from_dict(TrainConfig, {"method": {"name": "darht", "profile": "official"}}).method
    assert cfg.replace(mc_samples=2).mc_samples == 2 and cfg.replace(profile="official") == cfg
    # Replacing the profile would keep every official value, now labelled 'paper'.
    with pytest.raises(ConfigError, match="profile: cannot change 'official' to 'paper' on a built config"):
        cfg.replace(profile="paper")


@pytest.mark.parametrize("data,message", [
    ({"method": {"name": "darht", "attack": {"stpes": 2}}}, "method.attack.stpes: unknown field; did you mean 'steps'?"),
    ({"method": {"name": "darht", "attack": "tardes"}}, "method.attack: unknown attack 'tardes'; known: pgd, ce_pgd, trades, fat"),
    ({"method": {"name": "trades", "attack": {"steps": 0}}}, "method.attack.steps: must be >= 1, got 0"),
    ({"model": {"arch": "small_cnn", "kwargs": {"widht": 3}}}, "model.kwargs.widht: unknown field; did you mean 'width'?"),
    ({"model": {"arch": "small_cnn", "kwargs": {"width": "3"}}}, "model.kwargs.width: expected int, got str '3'"),
    ({"method": {"name": "pgd_at", "steps": 7}}, "method.steps: unknown field; it is now 'attack.steps'"),
    ({"method": {"name": "darht", "fat_tau": 2}}, "method.fat_tau: unknown field; it is now 'attack.tau'"),
    ({"method": {"name": "rslad", "attack": {"tau": 0}}},
     "method.attack: RSLAD's attack is KL-PGD to the teacher's prediction (loss kl, no early stopping tau)"),
    ({"method": {"name": "darht", "attack": {"tau": None}}},
     "method.attack.omega: step noise (0.001) is part of FAT's early stopping: set tau, or omega: 0"),
])
def test_nested_method_and_model_errors_name_the_field(data: dict, message: str) -> None:
    assert str(error(TrainConfig, data)) == message


def test_an_attack_preset_with_fields_on_top() -> None:
    cfg = from_dict(TrainConfig, {"method": {"name": "darht", "attack": {"preset": "trades", "steps": 5}}})
    a = cfg.method.attack
    assert (a.loss, a.random_start, a.tau, a.omega, a.steps) == ("kl", "normal", None, 0.0, 5)
    assert a.step_per_eps == pytest.approx(0.007 / 0.031)


def test_relative_paths_are_made_absolute_when_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = from_dict(TrainConfig, {"data": {"root": "data"}, "teachers": ["t/best", "registry_name"]})
    assert cfg.data.root == str(tmp_path / "data")
    assert cfg.teachers == (str(tmp_path / "t" / "best"), "registry_name")
