"""The configs of the orchestrator's jobs (sweep, pretrain, distill), one YAML file each, validated
before anything starts: every error names the dotted field, and nothing is written. The training
config they embed is trainers.config.TrainConfig."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.ray_train import Resources
from orchestrator.storage import resolve_storage
from orchestrator.teacher_registry import TeacherSpec
from search_spaces import SPACES
from trainers import TrainConfig
from trainers.config import DataConfig
from trainers.configs import (ConfigError, absolute_if_path, check, from_dict, load_yaml, merge_dicts, resolve_fields)
from trainers.registry import unknown_name_message


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    kind: Literal["none", "asha"] = "none"
    """asha: stop weak trials early on validation W-Robust (successive halving over epochs)."""
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    space: str = "distill"
    options: dict[str, Any] = field(default_factory=dict)
    num_samples: int = 8
    max_concurrent: int = 2
    objective: Literal["single", "multi"] = "single"
    """single: maximize validation W-Robust under PGD; multi: (clean, PGD) with a Pareto front."""
    sampler: Literal["auto", "tpe", "random", "nsga2"] = "auto"
    points: tuple[dict[str, Any], ...] = ()
    """Configurations evaluated first (Optuna enqueues them), e.g. every cell of a paper's grid:
    [{method: darht}, {method: rslad}] or [{teachers/composition: hetero}, ...]."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    def __post_init__(self) -> None:
        check(self.space in SPACES, "space", unknown_name_message("search space", self.space, SPACES))
        check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        check(self.max_concurrent >= 1, "max_concurrent", f"must be >= 1, got {self.max_concurrent}")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    top_n: int = 2
    """The best N trials (by validation W-Robust; multi-objective: from the Pareto front)."""
    suite: str = "paper"
    baselines: tuple[str, ...] = ()
    """Teachers (registry names) or checkpoint paths evaluated alongside."""
    shard_size: int = 1000
    batch_size: int = 256
    seed: int = 0
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    sanity_points: int = 200
    """Subsample of the sanity checks of every evaluated checkpoint (orchestrator.sanity); 0: off."""

    def __post_init__(self) -> None:
        resolve_fields(self, suite=absolute_if_path, baselines=absolute_if_path)
        check(self.top_n >= 0, "top_n", f"must be >= 0, got {self.top_n}")
        check(self.sanity_points >= 0, "sanity_points", f"must be >= 0 (0: off), got {self.sanity_points}")
        check(self.actors >= 1, "actors", f"must be >= 1, got {self.actors}")


@dataclass(frozen=True, kw_only=True)
class SweepResources:
    trial: Resources = field(default_factory=Resources)
    pretrain: Resources = field(default_factory=Resources)
    autoscaling: bool = False
    """The cluster can add nodes: don't refuse requests larger than what is there now."""


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    name: str = "demo"
    storage: str = "runs"
    storage_shared: bool = False
    """A local storage path that every node mounts (NFS): allowed on a multi-node cluster."""
    data: DataConfig = field(default_factory=DataConfig)
    """Shared by teachers and students."""
    teachers: tuple[TeacherSpec, ...] = ()
    """Every teacher the search space can pick; the missing ones are pretrained first."""
    student: TrainConfig = field(default_factory=TrainConfig)
    """The trials' base training config; the search space overrides parts of it."""
    search: SearchConfig = field(default_factory=SearchConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    resources: SweepResources = field(default_factory=SweepResources)

    def __post_init__(self) -> None:
        resolve_fields(self, storage=resolve_storage)
        check(bool(self.name) and all(c.isalnum() or c in "-_" for c in self.name), "name",
              f"use letters, digits, '-' and '_' only, got {self.name!r}")
        names = [t.name for t in self.teachers]
        check(len(set(names)) == len(names), "teachers", f"duplicate teacher names in {names}")


def load_sweep_config(path: str, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read a sweep YAML; the shared `data` section is copied into every teacher and the student."""
    raw = merge_dicts(load_yaml(path), overrides or {})
    data = raw.get("data") or {}
    for i, teacher in enumerate(raw.get("teachers") or []):
        if isinstance(teacher, dict):
            train = teacher.setdefault("train", {})
            if not isinstance(train, dict):
                raise ConfigError(f"teachers[{i}].train", "expected a mapping")
            train["data"] = {**data, **(train.get("data") or {})}
    student = raw.setdefault("student", {})
    if isinstance(student, dict):
        student["data"] = {**data, **(student.get("data") or {})}
    return from_dict(SweepConfig, raw)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    storage: str = "runs"
    """Storage URI (local path, s3://, gs://) holding the registry, Ray runs and TensorBoard."""
    storage_shared: bool = False
    """A local storage path that every node mounts (NFS): allowed on a multi-node cluster."""
    resources: Resources = field(default_factory=Resources)
    autoscaling: bool = False
    """The cluster can add nodes: don't refuse requests larger than what is there now."""
    teachers: tuple[TeacherSpec, ...] = ()

    def __post_init__(self) -> None:
        resolve_fields(self, storage=resolve_storage)
        names = [t.name for t in self.teachers]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "teachers", f"duplicate teacher names {dup}")


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    name: str = "distill"
    """Run name: stable, so re-running an interrupted run resumes it."""
    storage: str = "runs"
    storage_shared: bool = False
    """A local storage path that every node mounts (NFS): allowed on a multi-node cluster."""
    resources: Resources = field(default_factory=Resources)
    autoscaling: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training config; `teachers` may name registry teachers instead of paths."""

    def __post_init__(self) -> None:
        resolve_fields(self, storage=resolve_storage)
        check(bool(self.name) and "/" not in self.name, "name", f"must be a non-empty name without '/', got {self.name!r}")
