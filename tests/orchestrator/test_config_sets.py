"""`--set KEY=VALUE` on the sweep, pretrain and distill command lines: one field of the config
changed without copying the YAML, named as the error messages name fields."""
from __future__ import annotations

import copy

import pytest
import yaml

from orchestrator.config import apply_sets, load_sweep_config
from search_spaces import preset_path
from test_cli_errors import DEMO, run_and_check, write_sweep
from test_presets import write_cifar
from trainers.config import ConfigError

RAW = {"search": {"num_samples": 6}, "teachers": [{"name": "a", "train": {"epochs": 3}}, {"name": "b"}]}


def test_sets_change_nested_fields_and_list_items_and_read_yaml_values():
    before = copy.deepcopy(RAW)
    out = apply_sets(RAW, ["search.num_samples=8", "teachers[1].train.epochs=5", "resources.autoscaling=false",
                           "teachers[0].name=c", "search.options={method: [rslad]}", "eps=0.25", "name=x=y"])
    assert RAW == before  # the input mapping is not changed
    assert out["search"] == {"num_samples": 8, "options": {"method": ["rslad"]}}
    assert out["teachers"] == [{"name": "c", "train": {"epochs": 3}}, {"name": "b", "train": {"epochs": 5}}]
    assert out["resources"] == {"autoscaling": False}
    assert out["eps"] == 0.25 and out["name"] == "x=y"


@pytest.mark.parametrize("item, field, needle", [
    ("search.num_samples", "--set", "KEY=VALUE"),
    ("=3", "--set", "KEY=VALUE"),
    ("search..num_samples=3", "--set", "dotted field"),
    ("teachers[2].name=c", "teachers[2]", "a list of 2"),
    ("search[0]=1", "search[0]", "not a list"),
    ("search.num_samples.low=1", "search.num_samples.low", "not a mapping"),
    ("students[0].epochs=1", "students[0]", "not a list"),
    ("eps=[0.1", "eps", "not valid YAML"),
])
def test_bad_sets_name_the_key(item, field, needle):
    with pytest.raises(ConfigError) as err:
        apply_sets(RAW, [item])
    assert err.value.field == field and needle in str(err.value), str(err.value)


def test_a_set_is_validated_like_the_file(tmp_path, capsys):
    config = write_sweep(tmp_path, lambda c: None)
    storage = tmp_path / "store"
    for item, needles in (("search.num_samples=eight", ["search.num_samples", "int"]),
                          ("resources.autoscalng=true", ["resources.autoscalng", "'autoscaling'"]),
                          ("teachers[9].train.epochs=1", ["teachers[9]", "a list of 3"])):
        run_and_check("sweep", ["--config", config, "--storage", str(storage), "--set", item], capsys, storage,
                      *needles)


def test_a_paper_preset_runs_on_one_machine_with_autoscaling_set_off(tmp_path):
    write_cifar(tmp_path)
    data = {"data": {"root": str(tmp_path), "val_size": 20}}
    assert load_sweep_config(str(preset_path("cifar10_table5")), data).resources.autoscaling
    cfg = load_sweep_config(str(preset_path("cifar10_table5")), data, ["resources.autoscaling=false"])
    assert not cfg.resources.autoscaling


def test_autoscaling_with_local_storage_on_one_node_says_how_to_run_on_one_machine(ray_session, tmp_path, capsys):
    storage = tmp_path / "store"
    config = write_sweep(tmp_path, lambda c: None)
    run_and_check("sweep", ["--config", config, "--storage", str(storage), "--set", "resources.autoscaling=true"],
                  capsys, storage, "storage must be shared", "on one machine: --set resources.autoscaling=false")
    pretrain_yaml = tmp_path / "pretrain.yaml"
    pretrain_yaml.write_text(yaml.safe_dump({"storage": str(storage), "teachers": DEMO["teachers"][:1]}))
    run_and_check("pretrain", ["--config", str(pretrain_yaml), "--set", "autoscaling=true"], capsys, storage,
                  "storage must be shared", "on one machine: --set autoscaling=false")
