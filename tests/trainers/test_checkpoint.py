"""trainers/checkpoint.py and trainers/train_state.py: round trips, refusals, atomic writes,
weights-only imports, optimizer state for resume (docs/design.md#checkpoints)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainers import checkpoint
from trainers.checkpoint import (FORMAT, CheckpointError, import_state_dict, load_model, model_sidecar,
                                 save_model)
from trainers.models import DataCfg, build_model
from trainers.train_state import load_training_checkpoint, save_training_checkpoint

DIGITS = DataCfg((1, 8, 8), (0.3,), (0.4,))
KWARGS = {"width": 4, "hidden": 8}


def tiny(seed: int = 0, **kwargs: Any) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", num_classes=10, data_cfg=DIGITS, **{**KWARGS, **kwargs}).eval()


def batch(seed: int = 0, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def refused(path: Path, match: str, **kwargs: Any) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_model(tmp_path / "ckpt", tiny(0), dataset="digits")


def edit_sidecar(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = directory / "model.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- round trip ---------------------------------------------------------------------------

def test_round_trip_weights_and_sidecar(tmp_path: Path) -> None:
    model = tiny(0)
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    directory = save_model(tmp_path / "ckpt", model, dataset="digits",
                           method={"name": "trades", "profile": "paper"},
                           metrics={"clean": 0.9, "pgd": 0.4}, config_hash="0123abcd")
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "model.safetensors"]
    loaded, sidecar = load_model(directory, expect_dataset="digits", expect_num_classes=10)
    assert_same_weights(loaded, model)
    x, _ = batch()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert sidecar == json.loads((directory / "model.json").read_text())
    assert sidecar["format"] == FORMAT
    assert sidecar["model"] == {"name": "small_cnn", "num_classes": 10, "kwargs": KWARGS}
    assert sidecar["dataset"] == "digits" and sidecar["num_classes"] == 10
    assert sidecar["data_cfg"] == {"input_size": [1, 8, 8], "mean": [0.3], "std": [0.4],
                                   "interpolation": "bilinear"}
    assert DataCfg.from_dict(sidecar["data_cfg"]) == DIGITS == loaded.data_cfg
    assert sidecar["method"] == {"name": "trades", "profile": "paper"}
    assert sidecar["metrics"] == {"clean": 0.9, "pgd": 0.4}
    assert sidecar["config_hash"] == "0123abcd"
    assert sidecar["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"robust-distill", "timm", "safetensors"} <= set(sidecar["versions"])
    created = dt.datetime.fromisoformat(sidecar["created"])
    assert created.tzinfo is not None and before <= created <= dt.datetime.now(dt.timezone.utc)
    assert sidecar["weights_sha256"] == sha256(directory / "model.safetensors")


def test_load_accepts_a_file_inside_the_checkpoint(saved: Path) -> None:
    loaded, _ = load_model(saved / "model.safetensors")
    assert_same_weights(loaded, tiny(0))


def test_matching_expectations_load(saved: Path) -> None:
    load_model(saved, expect_dataset="digits", expect_num_classes=10)


# --- refusals: CheckpointError with a one-line message ------------------------------------

def test_refuses_missing_directory(tmp_path: Path) -> None:
    message = refused(tmp_path / "nowhere", "not found")
    assert "nowhere" in message


def test_refuses_missing_sidecar(saved: Path) -> None:
    (saved / "model.json").unlink()
    refused(saved, "not found")


def test_refuses_invalid_json(saved: Path) -> None:
    (saved / "model.json").write_text('{"format": "robust-distill/model-v1",\n "model": ')
    refused(saved, "model.json is not valid JSON")


def test_refuses_json_that_is_not_an_object(saved: Path) -> None:
    (saved / "model.json").write_text("[1, 2]")
    refused(saved, "not a JSON object")


def test_refuses_wrong_format(saved: Path) -> None:
    edit_sidecar(saved, lambda d: d.update(format="someone-else/v3"))
    refused(saved, "format 'someone-else/v3'")


def test_refuses_truncated_weights(saved: Path) -> None:
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    refused(saved, "SHA-256")
    # Even with a sidecar that agrees with the damaged file, the parser refuses it.
    edit_sidecar(saved, lambda d: d.update(weights_sha256=sha256(path)))
    refused(saved, "model.safetensors is corrupt")


@pytest.mark.parametrize("payload", [b"", b"\x00" * 7, b"garbage" * 10,
                                     (2 ** 40).to_bytes(8, "little") + b"{}"])
def test_refuses_corrupt_weights(saved: Path, payload: bytes) -> None:
    path = saved / "model.safetensors"
    path.write_bytes(payload)
    edit_sidecar(saved, lambda d: d.update(weights_sha256=sha256(path)))
    refused(saved, "model.safetensors is corrupt")


def test_refuses_missing_weights(saved: Path) -> None:
    (saved / "model.safetensors").unlink()
    refused(saved, "model.safetensors not found")


def test_refuses_weights_of_another_model(saved: Path, tmp_path: Path) -> None:
    other = save_model(tmp_path / "other", tiny(1), dataset="digits")
    shutil.copyfile(other / "model.safetensors", saved / "model.safetensors")
    refused(saved, "does not match the sidecar's SHA-256")


def test_refuses_unknown_architecture(saved: Path) -> None:
    edit_sidecar(saved, lambda d: d["model"].update(name="small-cnn"))
    message = refused(saved, "cannot rebuild the model")
    assert "'small-cnn'" in message and "did you mean 'small_cnn'" in message


def test_refuses_unknown_architecture_argument(saved: Path) -> None:
    edit_sidecar(saved, lambda d: d["model"]["kwargs"].update(widht=4))
    refused(saved, "cannot rebuild the model")


@pytest.mark.parametrize("edit", [
    lambda d: d.pop("model"),
    lambda d: d.pop("data_cfg"),
    lambda d: d["model"].pop("name"),
    lambda d: d.update(model="small_cnn"),
    lambda d: d["data_cfg"].update(mean=[0.1, 0.2]),
], ids=["no-model", "no-data_cfg", "no-name", "model-not-a-mapping", "bad-data_cfg"])
def test_refuses_malformed_sidecar(saved: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    edit_sidecar(saved, edit)
    refused(saved, "cannot rebuild the model")


def test_refuses_state_dict_shape_mismatch(saved: Path) -> None:
    edit_sidecar(saved, lambda d: d["model"]["kwargs"].update(width=8))
    refused(saved, "weights do not fit the model.*wrong shape")


def test_refuses_missing_keys(tmp_path: Path) -> None:
    directory = save_model(tmp_path / "ckpt", tiny(0), dataset="digits")
    edit_sidecar(directory, lambda d: d["model"].update(num_classes=0))
    refused(directory, "unexpected.*head")


def test_refuses_wrong_dataset(saved: Path) -> None:
    message = refused(saved, "dataset 'digits', expected 'cifar10'", expect_dataset="cifar10")
    assert str(saved) in message


def test_refuses_wrong_num_classes(saved: Path) -> None:
    refused(saved, "10 classes, expected 100", expect_num_classes=100)


def test_save_needs_a_spec() -> None:
    with pytest.raises(CheckpointError, match="no .spec"):
        model_sidecar(nn.Linear(2, 2), dataset="digits")


# --- atomic writes ------------------------------------------------------------------------

def _fail_in_save_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(tensors: dict[str, torch.Tensor], filename: str, *args: Any, **kwargs: Any) -> None:
        Path(filename).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")
        raise OSError("No space left on device")
    monkeypatch.setattr(checkpoint, "save_file", half_written)


def _fail_after_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Path) -> str:
        raise OSError("No space left on device")
    monkeypatch.setattr(checkpoint, "_sha256", broken)


@pytest.mark.parametrize("fail", [_fail_in_save_file, _fail_after_weights])
def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fail: Callable[[pytest.MonkeyPatch], None]) -> None:
    directory = save_model(tmp_path / "ckpt", tiny(0), dataset="digits")
    files = {p.name: p.read_bytes() for p in directory.iterdir()}
    with monkeypatch.context() as patch:
        fail(patch)
        with pytest.raises(OSError, match="No space left"):
            save_model(directory, tiny(1), dataset="digits")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp or old directories
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == files
    loaded, _ = load_model(directory)
    assert_same_weights(loaded, tiny(0))


def test_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_in_save_file(monkeypatch)
    with pytest.raises(OSError):
        save_model(tmp_path / "ckpt", tiny(0), dataset="digits")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_the_whole_directory(tmp_path: Path) -> None:
    model = tiny(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _steps(model, optimizer, 1)
    save_training_checkpoint(tmp_path / "ckpt", model, optimizer,
                             sidecar=model_sidecar(model, dataset="digits"), state={"epoch": 0})
    assert (tmp_path / "ckpt" / "optimizer.safetensors").is_file()
    save_model(tmp_path / "ckpt", tiny(1), dataset="digits", metrics={"clean": 0.5})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.json", "model.safetensors"]
    loaded, sidecar = load_model(tmp_path / "ckpt")
    assert_same_weights(loaded, tiny(1))
    assert sidecar["metrics"] == {"clean": 0.5}


# --- importing external .pt files ---------------------------------------------------------

def _import(pt: Path, directory: Path) -> Path:
    return import_state_dict(pt, directory, name="small_cnn", num_classes=10, data_cfg=DIGITS,
                             dataset="digits", kwargs=KWARGS, method={"name": "external"})


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": sd},
])
def test_import_data_parallel_state_dict(tmp_path: Path, wrap: Callable[[dict], Any]) -> None:
    model = tiny(3)
    state = nn.DataParallel(model).state_dict()  # keys prefixed with `module.`
    assert all(k.startswith("module.") for k in state)
    torch.save(wrap(state), tmp_path / "external.pt")
    directory = _import(tmp_path / "external.pt", tmp_path / "ckpt")
    loaded, sidecar = load_model(directory)
    assert_same_weights(loaded, model)
    x, _ = batch()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert sidecar["imported_from"] == str(tmp_path / "external.pt")
    assert sidecar["method"] == {"name": "external"} and sidecar["dataset"] == "digits"


class Payload:
    """Unpickling this calls `_run_payload`: what a malicious .pt would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (_run_payload, (str(self.marker),))


def _run_payload(marker: str) -> None:
    Path(marker).write_text("payload ran")


def test_import_refuses_pickled_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": tiny(0).state_dict(), "extra": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a weights-only PyTorch file") as info:
        _import(tmp_path / "evil.pt", tmp_path / "ckpt")
    assert "\n" not in str(info.value)
    assert not marker.exists() and not (tmp_path / "ckpt").exists()
    # The file really is dangerous: a plain (non weights-only) load runs the payload.
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "payload ran"


def test_import_refuses_non_state_dicts(tmp_path: Path) -> None:
    torch.save({"weights": [torch.zeros(2)], "step": 3}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="expected a state dict of tensors"):
        _import(tmp_path / "odd.pt", tmp_path / "ckpt")


def test_import_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="file not found"):
        _import(tmp_path / "missing.pt", tmp_path / "ckpt")


def test_import_refuses_weights_of_another_architecture(tmp_path: Path) -> None:
    torch.save(tiny(0, width=8).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        _import(tmp_path / "wide.pt", tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


# --- training checkpoints (trainers/train_state.py) ---------------------------------------

def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int, start: int = 0) -> None:
    model.train()
    for i in range(start, start + n):
        x, y = batch(100 + i)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _two_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on weights only: two param groups with different settings."""
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
    return [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0, "lr": 3e-3}]


OPTIMIZERS: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05),
    "adamw_amsgrad": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, amsgrad=True),
    "adamw_groups": lambda m: torch.optim.AdamW(_two_groups(m), lr=1e-2),
}


def _plain(sd: dict[str, Any]) -> Any:
    """param_groups through JSON (tuples become lists)."""
    return json.loads(json.dumps(sd["param_groups"]))


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_training_checkpoint_resumes_exactly(tmp_path: Path, kind: str) -> None:
    model = tiny(0)
    optimizer = OPTIMIZERS[kind](model)
    _steps(model, optimizer, 2)
    optimizer.param_groups[0]["lr"] *= 0.5  # a scheduled lr is part of the state too
    sidecar = model_sidecar(model, dataset="digits")
    save_training_checkpoint(tmp_path / "last", model, optimizer, sidecar=sidecar,
                             state={"epoch": 1, "best": {"score": 0.25}})

    resumed = tiny(7)
    resumed_opt = OPTIMIZERS[kind](resumed)
    state = load_training_checkpoint(tmp_path / "last", resumed, resumed_opt)
    assert state == {"epoch": 1, "best": {"score": 0.25}}
    assert_same_weights(resumed, model)
    expected, got = optimizer.state_dict(), resumed_opt.state_dict()
    assert _plain(got) == _plain(expected)
    assert got["state"].keys() == expected["state"].keys()
    for pid, entries in expected["state"].items():
        assert got["state"][pid].keys() == entries.keys()
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):  # momentum_buffer, exp_avg(_sq), step, ...
                assert got["state"][pid][key].dtype == value.dtype, (pid, key)
                assert torch.equal(got["state"][pid][key], value), (pid, key)
            else:
                assert got["state"][pid][key] == value, (pid, key)

    _steps(model, optimizer, 2, start=2)
    _steps(resumed, resumed_opt, 2, start=2)
    assert_same_weights(resumed, model)
    # The training checkpoint is also a model checkpoint.
    loaded, _ = load_model(tmp_path / "last")
    assert loaded.spec == model.spec


def test_training_checkpoint_before_the_first_step(tmp_path: Path) -> None:
    model = tiny(0)
    optimizer = OPTIMIZERS["sgd"](model)  # no momentum buffers yet: an empty optimizer.safetensors
    save_training_checkpoint(tmp_path / "first", model, optimizer,
                             sidecar=model_sidecar(model, dataset="digits"), state={"epoch": -1})
    resumed = tiny(1)
    resumed_opt = OPTIMIZERS["sgd"](resumed)
    assert load_training_checkpoint(tmp_path / "first", resumed, resumed_opt) == {"epoch": -1}
    assert resumed_opt.state_dict()["state"] == {}
    _steps(model, optimizer, 2)
    _steps(resumed, resumed_opt, 2)
    assert_same_weights(resumed, model)


def test_training_checkpoint_refuses_another_model(tmp_path: Path) -> None:
    model = tiny(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _steps(model, optimizer, 1)
    save_training_checkpoint(tmp_path / "last", model, optimizer,
                             sidecar=model_sidecar(model, dataset="digits"), state={"epoch": 0})
    other = tiny(0, width=8)
    with pytest.raises(CheckpointError, match="does not fit this run"):
        load_training_checkpoint(tmp_path / "last", other, torch.optim.SGD(other.parameters(), lr=0.1))
