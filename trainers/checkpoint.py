"""Checkpoints: a directory of safetensors files + JSON documents; loading never unpickles.

A model checkpoint is `<dir>/model.safetensors` + `<dir>/model.json` (the sidecar: model name,
kwargs, num_classes, data config, dataset, method and profile, metrics, config hash, library
versions, creation time and the weights' SHA-256). Training checkpoints add `optimizer.*` and
`state.json` in the same directory. Directories are written under a temporary name and swapped in
by rename, so a crash never leaves a half-written checkpoint under the final name.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from trainers.errors import UserError
from trainers.models import DataCfg, build_model
from trainers.registry import UnknownNameError

FORMAT = "robust-distill/model-v1"


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or does not match what the caller expects."""


def model_spec(model: nn.Module) -> dict[str, Any]:
    """What `build_model` needs to rebuild `model` (attached by `build_model` as `model.spec`)."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise CheckpointError("model has no .spec (build it with trainers.models.build_model)")
    return spec


def write_checkpoint(directory: str | Path, tensors: dict[str, dict[str, torch.Tensor]],
                     documents: dict[str, dict[str, Any]]) -> Path:
    """Atomically write `<name>.safetensors` per tensor group and `<name>.json` per document."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for name, group in tensors.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in group.items()},
                      str(tmp / f"{name}.safetensors"))
        documents = dict(documents)
        if "model" in documents and "model" in tensors:
            documents["model"] = {**documents["model"], "weights_sha256": _sha256(tmp / "model.safetensors")}
        for name, doc in documents.items():
            (tmp / f"{name}.json").write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
            try:
                os.rename(tmp, final)
            except OSError:
                os.rename(old, final)  # put the previous checkpoint back
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def model_sidecar(model: nn.Module, *, dataset: str, method: dict[str, Any] | None = None,
                  metrics: dict[str, Any] | None = None, config_hash: str | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = model_spec(model)
    return {
        "format": FORMAT, "model": spec, "dataset": dataset, "num_classes": spec["num_classes"],
        "data_cfg": model.data_cfg.to_dict(), "method": method or {}, "metrics": metrics or {},
        "config_hash": config_hash, "versions": library_versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **(extra or {}),
    }


def save_model(directory: str | Path, model: nn.Module, **sidecar: Any) -> Path:
    """Write a model checkpoint; keyword arguments go to `model_sidecar`."""
    return write_checkpoint(directory, {"model": model.state_dict()},
                            {"model": model_sidecar(model, **sidecar)})


def read_document(directory: str | Path, name: str) -> dict[str, Any]:
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {path.name} not found")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint {directory}: {path.name} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"checkpoint {directory}: {path.name} is not a JSON object")
    return doc


def read_tensors(directory: str | Path, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(directory) / f"{name}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {path.name} not found")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {directory}: {path.name} is corrupt ({err})") from None


def checkpoint_dir(path: str | Path) -> Path:
    """Accept the checkpoint directory or any file inside it."""
    p = Path(path)
    expected = "expected a folder holding model.safetensors and model.json"
    if not p.exists():
        raise CheckpointError(f"checkpoint {path}: not found ({expected})")
    if p.is_file() and not (p.parent / "model.json").is_file():
        raise CheckpointError(f"checkpoint {path}: a file, not a checkpoint ({expected}; a PyTorch state dict "
                              "is converted with trainers.checkpoint.import_state_dict)")
    p = p.parent if p.is_file() else p
    if not (p / "model.json").is_file():
        raise CheckpointError(f"checkpoint {path}: model.json not found ({expected})")
    return p


def load_model(path: str | Path, *, device: str | torch.device = "cpu",
               expect_dataset: str | None = None,
               expect_num_classes: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from its sidecar and load its weights; returns (model in eval mode, sidecar)."""
    directory = checkpoint_dir(path)
    sidecar = read_document(directory, "model")
    if sidecar.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {directory}: format {sidecar.get('format')!r}, expected {FORMAT!r}")
    if expect_dataset is not None and sidecar.get("dataset") != expect_dataset:
        raise CheckpointError(f"checkpoint {directory}: trained on dataset {sidecar.get('dataset')!r}, "
                              f"expected {expect_dataset!r}")
    if expect_num_classes is not None and sidecar.get("num_classes") != expect_num_classes:
        raise CheckpointError(f"checkpoint {directory}: has {sidecar.get('num_classes')} classes, "
                              f"expected {expect_num_classes}")
    digest = _sha256(directory / "model.safetensors") if (directory / "model.safetensors").is_file() else None
    if digest is not None and digest != sidecar.get("weights_sha256"):
        raise CheckpointError(f"checkpoint {directory}: model.safetensors does not match the sidecar's "
                              "SHA-256 (corrupt or replaced file)")
    state = read_tensors(directory, "model", device)
    try:
        spec = sidecar["model"]
        model = build_model(spec["name"], num_classes=spec["num_classes"],
                            data_cfg=DataCfg.from_dict(sidecar["data_cfg"]), **spec.get("kwargs", {}))
    except (UnknownNameError, TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {directory}: cannot rebuild the model ({err})") from None
    _load_state(model, state, str(directory))
    return model.to(device).eval(), sidecar


def verify_checkpoint(path: str | Path, *, expect_dataset: str | None = None,
                      expect_num_classes: int | None = None) -> dict[str, Any]:
    """Open a checkpoint as a worker will (sidecar, the weights' hash, every tensor's name and shape
    against its architecture) and return its sidecar: entry points call it on the driver so a
    damaged checkpoint is refused before anything is written or started."""
    return load_model(path, expect_dataset=expect_dataset, expect_num_classes=expect_num_classes)[1]


def import_state_dict(pt_path: str | Path, directory: str | Path, *, name: str, num_classes: int,
                      data_cfg: DataCfg, dataset: str, kwargs: dict[str, Any] | None = None,
                      **sidecar: Any) -> Path:
    """Convert an external PyTorch `.pt` state dict (loaded with weights_only=True, never
    unpickling code) into a checkpoint; `module.` prefixes from DataParallel/DDP are stripped."""
    try:
        raw = torch.load(pt_path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{pt_path}: file not found") from None
    except Exception as err:  # noqa: BLE001 - any unpickling refusal is reported as one line
        raise CheckpointError(f"{pt_path}: not a weights-only PyTorch file ({type(err).__name__})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{pt_path}: expected a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    model = build_model(name, num_classes=num_classes, data_cfg=data_cfg, **(kwargs or {}))
    _load_state(model, state, str(pt_path))
    return save_model(directory, model, dataset=dataset, extra={"imported_from": str(pt_path)}, **sidecar)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if keys]
        raise CheckpointError(f"{where}: weights do not fit the model ({'; '.join(parts)})")
    model.load_state_dict(state)


def library_versions() -> dict[str, str]:
    out = {}
    for pkg in ("robust-distill", "torch", "timm", "safetensors", "pyautoattack"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
