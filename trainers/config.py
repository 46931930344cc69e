"""The training configuration: one typed, frozen dataclass per component (docs/design.md#configs).

The same config drives teacher pretraining and distillation; `method` selects the training
method and its profile (see trainers/methods). YAML -> `load_train_config` -> TrainConfig.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainers.configs import (ConfigError, absolute_if_path, absolute_path, check, from_dict, load_yaml, merge_dicts,
                              resolve_fields)
from trainers.data import DATASETS, Dataset, load_dataset
from trainers.models import MODELS
from trainers.registry import unknown_name_message


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    name: str = "digits"
    """Registered dataset: digits (embedded), synthetic, cifar10, cifar100, tinyimagenet."""
    root: str | None = None
    """Folder holding the dataset's standard on-disk layout (not needed for digits/synthetic)."""
    val_size: int | None = None
    """Validation examples held out from train for model selection (None: dataset default)."""
    split_seed: int | None = None
    """Seed of the validation carve, kept separate from the training seed (None: the dataset's
    default, 0)."""
    options: dict[str, Any] = field(default_factory=dict)
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

    def __post_init__(self) -> None:
        resolve_fields(self, root=absolute_path)
        check(self.name in DATASETS, "name", unknown_name_message("dataset", self.name, DATASETS.names()))
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    arch: str = "small_cnn"
    """Registered architecture (trainers.models.MODELS)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Architecture arguments, e.g. {depth: 4} for a shallow ViT."""

    def __post_init__(self) -> None:
        check(self.arch in MODELS, "arch", unknown_name_message("architecture", self.arch, MODELS.names()))


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: off)."""

    def __post_init__(self) -> None:
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", f"must be > 0, got {self.grad_clip}")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    kind: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: tuple[int, ...] = ()
    """multistep: epochs at which the lr is multiplied by gamma."""
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    """Linear warm-up from 0 to the base lr over this many epochs."""
    per_step: bool = True
    """Update the lr every step (fractional epochs) rather than once per epoch."""

    def __post_init__(self) -> None:
        check(list(self.milestones) == sorted(self.milestones), "milestones", "must be increasing")
        check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")


@dataclass(frozen=True, kw_only=True)
class ValidationConfig:
    """Per-epoch validation (cheap settings) used to select the 'best' checkpoint."""

    pgd_steps: int = 10
    """PGD steps (step eps/4, start x + 0.001 N(0, 1)) for validation robust accuracy."""
    max_examples: int | None = None
    """Validate on at most this many validation examples (None: all)."""
    select: Literal["w_robust", "pgd", "clean"] = "w_robust"
    """Criterion for the 'best' checkpoint (on the validation split, never the test split)."""
    test_at_end: bool = True
    """Evaluate the best and last checkpoints on the test split (clean + PGD) at the end."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    name: str = "run"
    seed: int = 0
    epochs: int = 10
    eps: float | None = None
    """Threat-model L-inf radius on [0, 1] pixels (None: the dataset's default, 8/255 on CIFAR)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: dict[str, Any] = field(default_factory=lambda: {"name": "natural"})
    """`name`, optional `profile`, then the method's own parameters (see trainers.methods)."""
    teachers: tuple[str, ...] = ()
    """Teacher checkpoint directories, in order (distillation methods); orchestrator.distill also
    takes registry names. Relative paths are made absolute when the config is built."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    output_dir: str = "runs/run"
    """Where `last/` and `best/` checkpoints are written."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on GPU, fp32 on CPU."""
    channels_last: bool | None = None
    """None: on for GPU CNNs."""
    compile: bool = False
    threads: int | None = None
    """torch CPU threads (Ray workers must set this explicitly: torch may not follow OMP_NUM_THREADS)."""

    def __post_init__(self) -> None:
        resolve_fields(self, teachers=absolute_if_path)
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.eps is None or 0 < self.eps <= 1, "eps",
              f"must be in (0, 1] (images are in [0, 1]; 8/255 = {8 / 255:.6f}), got {self.eps}")
        from trainers.methods import parse_method  # the registry imports configs, not vice versa

        try:
            parse_method(self.method)
        except ConfigError as err:
            raise err.under("method") from None


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; `overrides` (nested dict) win over the file."""
    data = load_yaml(path)
    return from_dict(TrainConfig, merge_dicts(data, overrides or {}))
