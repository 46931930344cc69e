"""The training config: one model per component (data, model, optimizer, schedule, validation)
and `TrainConfig` on top, whose `method` is a union of the registered methods' configs told apart
by `name` (trainers/methods). The same config drives teacher pretraining and distillation."""
from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from trainers.config import (Config, LocalPath, NameOrPath, check, config_error, from_dict, load_yaml,
                             merge_dicts)
from trainers.data import DATASETS, Dataset, load_dataset
from trainers.methods import MethodConfig
from trainers.models import MODELS
from trainers.registry import unknown_name_message


class DataConfig(Config):
    name: str = "digits"
    """Registered dataset: digits (embedded), synthetic, cifar10, cifar100, tinyimagenet."""
    root: LocalPath | None = None
    """Folder holding the dataset's standard on-disk layout (not needed for digits/synthetic)."""
    val_size: int | None = None
    """Validation examples held out from train for model selection (None: dataset default)."""
    split_seed: int | None = None
    """Seed of the validation carve, kept separate from the training seed (None: the dataset's
    default, 0)."""
    options: dict[str, Any] = {}
    """Extra dataset arguments (e.g. synthetic sizes)."""
    batch_size: int = 128
    eval_batch_size: int = 512
    augment: bool = True
    """Random crop + flip as the dataset defines them (crop padding, flip on/off)."""

    def dataset_kwargs(self) -> dict[str, Any]:
        """The arguments of `load_dataset` that this config selects (None: the dataset's default)."""
        return {"name": self.name, "root": self.root, "val_size": self.val_size, "split_seed": self.split_seed,
                **self.options}

    def load(self) -> Dataset:
        return load_dataset(**self.dataset_kwargs())

    def check(self) -> None:
        check(self.name in DATASETS, "name", unknown_name_message("dataset", self.name, DATASETS.names()))
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")


class ModelConfig(Config):
    arch: str = "small_cnn"
    """Registered architecture (trainers.models.MODELS)."""
    kwargs: dict[str, Any] = {}
    """Architecture arguments, checked against the architecture's signature, e.g. {depth: 4}."""

    def check(self) -> None:
        check(self.arch in MODELS, "arch", unknown_name_message("architecture", self.arch, MODELS.names()))
        schema = _kwargs_schema(self.arch)
        try:
            schema.model_validate(self.kwargs)
        except ValidationError as err:
            raise config_error(err, schema).under("kwargs") from None


_SCHEMAS: dict[str, type[BaseModel]] = {}


def _kwargs_schema(arch: str) -> type[BaseModel]:
    """A model of an architecture's keyword arguments, from its factory's signature."""
    if arch not in _SCHEMAS:
        factory = MODELS.get(arch)
        hints = typing.get_type_hints(factory)
        fields = {name: (hints[name], p.default) for name, p in inspect.signature(factory).parameters.items()
                  if name not in ("num_classes", "data_cfg") and p.default is not p.empty}
        _SCHEMAS[arch] = create_model(f"{arch}_kwargs", __config__=ConfigDict(extra="forbid", strict=True), **fields)
    return _SCHEMAS[arch]


class OptimConfig(Config):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: off)."""

    def check(self) -> None:
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", f"must be > 0, got {self.grad_clip}")


class ScheduleConfig(Config):
    kind: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: tuple[int, ...] = ()
    """multistep: epochs at which the lr is multiplied by gamma."""
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 to the base lr over this many epochs."""
    per_step: bool = True
    """Update the lr every step (fractional epochs) rather than once per epoch."""

    def check(self) -> None:
        check(list(self.milestones) == sorted(self.milestones), "milestones", "must be increasing")
        check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")


class ValidationConfig(Config):
    """Per-epoch validation (cheap settings) used to select the 'best' checkpoint."""

    pgd_steps: int = 10
    """PGD steps (step eps/4, start x + 0.001 N(0, 1)) for validation robust accuracy."""
    max_examples: int | None = None
    """Validate on at most this many validation examples (None: all)."""
    select: Literal["w_robust", "pgd", "clean"] = "w_robust"
    """Criterion for the 'best' checkpoint (on the validation split, never the test split)."""
    test_at_end: bool = True
    """Evaluate the best and last checkpoints on the test split (clean + PGD) at the end."""


class TrainConfig(Config):
    name: str = "run"
    seed: int = 0
    epochs: int = 10
    eps: float | None = None
    """Threat-model L-inf radius on [0, 1] pixels (None: the dataset's default, 8/255 on CIFAR)."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    method: MethodConfig = Field(default_factory=lambda: {"name": "natural"})
    """The training method, picked by `name`, with its `profile` and parameters (trainers.methods)."""
    teachers: tuple[NameOrPath, ...] = ()
    """Teacher checkpoint directories, in order (distillation methods); orchestrator.distill also
    takes registry names. Relative paths are made absolute when the config is built."""
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    validation: ValidationConfig = ValidationConfig()
    output_dir: str = "runs/run"
    """Where `last/` and `best/` checkpoints are written."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    channels_last: bool | None = None
    """None: on for every model on a GPU."""
    compile: bool = False
    threads: int | None = None
    """torch CPU threads (Ray workers must set this explicitly: torch may not follow OMP_NUM_THREADS)."""

    def check(self) -> None:
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.eps is None or 0 < self.eps <= 1, "eps",
              f"must be in (0, 1] (images are in [0, 1]; 8/255 = {8 / 255:.6f}), got {self.eps}")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; `overrides` (nested dict) win over the file."""
    return from_dict(TrainConfig, merge_dicts(load_yaml(path), overrides or {}))
