"""Training checkpoints: the model checkpoint plus the optimizer (safetensors; its non-tensor
parts in JSON) and the trainer state (epoch, best score, history, method state) in state.json.
Nothing is pickled. The lr schedule is a pure function of (epoch, step) and per-epoch RNG seeds
derive from (seed, epoch, rank), so this is everything a resumed run needs to match an
uninterrupted one."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainers.checkpoint import CheckpointError, read_document, read_tensors, write_checkpoint


def save_training_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                             *, sidecar: dict[str, Any], state: dict[str, Any]) -> Path:
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    return write_checkpoint(directory, {"model": model.state_dict(), "optimizer": tensors},
                            {"model": sidecar, "state": {**state, "optimizer": meta}})


def load_training_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                             device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load weights and optimizer state in place; return the trainer state."""
    state = read_document(directory, "state")
    weights = read_tensors(directory, "model", device)
    try:
        model.load_state_dict(weights)
        optimizer.load_state_dict(_unflatten_optimizer(read_tensors(directory, "optimizer", device),
                                                        state.pop("optimizer")))
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {directory}: does not fit this run ({err})") from None
    return state


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}
