"""The configs of the orchestrator's jobs (sweep, pretrain, distill), one YAML file each, validated
before anything starts: every error names the dotted field, and nothing is written. The training
config they embed is trainers.train_config.TrainConfig."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Sequence

import yaml
from pydantic import ConfigDict

from orchestrator.storage import resolve_storage
from orchestrator.teacher_registry import TeacherSpec
from search_spaces import SPACES
from trainers import TrainConfig
from trainers.config import (Config, ConfigError, Identifier, NameOrPath, check, from_dict, load_yaml, merge_dicts,
                             resolved)
from trainers.methods import METHODS, method_config
from trainers.registry import unknown_name_message
from trainers.train_config import DataConfig


StorageURI = Annotated[str, resolved(resolve_storage)]
"""A storage URI; a local path is made absolute when the config is built."""


class Resources(Config):
    """Workers of one training run (a teacher, a distillation, one sweep trial)."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    """GPUs per worker when use_gpu (fractions share a GPU)."""
    max_failures: int = 1
    """Restarts of the worker group from its last checkpoint after a worker dies."""

    def check(self) -> None:
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")
        check(self.cpus_per_worker > 0, "cpus_per_worker", f"must be > 0, got {self.cpus_per_worker}")
        check(self.gpus_per_worker > 0, "gpus_per_worker", f"must be > 0, got {self.gpus_per_worker}")

    def per_worker(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.use_gpu else {})}


class SchedulerConfig(Config):
    kind: Literal["none", "asha"] = "none"
    """asha: stop weak trials early on validation W-Robust (successive halving over epochs)."""
    grace_period: int = 1
    reduction_factor: int = 2


class TeacherOptions(Config):
    """The teacher sets a method with any number of teachers (DARHT) may pick: any `count` of the
    `candidates`, or one of the named `compositions`."""

    candidates: tuple[str, ...] = ()
    count: Any = None
    """An int, a list of choices or a {low, high} range (None: all candidates)."""
    compositions: dict[str, list[str]] = {}
    """Named sets, e.g. the paper's Table 2 groups {2_wrn: [a, b], wrn_vit: [a, c]}."""

    def check(self) -> None:
        check(bool(self.candidates) != bool(self.compositions), "candidates",
              "give either candidates (with count) or compositions")


class SearchOptions(Config):
    """What the search space chooses from. Besides the fields, one block per method names its
    parameters' choices and its teachers' roles, e.g. `darht: {mc_samples: [1, 4]}`,
    `rslad: {teacher: [a, b], attack: {steps: 5}}` (search_spaces/distill.py)."""

    model_config = ConfigDict(extra="allow")  # merged with Config's: the method blocks
    method: Any = "darht"
    """A method name or a list of them to choose from."""
    teachers: TeacherOptions | None = None
    train: dict[str, Any] = {}
    """Choices for the training config shared by every method, e.g. {optim: {lr: {low: .., high: ..}}}."""

    def check(self) -> None:
        names = self.method if isinstance(self.method, list) else [self.method]
        check(bool(names), "method", "an empty list of methods to choose from")
        for i, name in enumerate(names):
            check(name in METHODS, f"method[{i}]" if isinstance(self.method, list) else "method",
                  unknown_name_message("method", name, METHODS.names()))
        trains = {"train": self.train}
        for block, value in (self.model_extra or {}).items():
            check(block in METHODS, block, unknown_name_message("method block", block, METHODS.names()))
            check(isinstance(value, dict), block, f"expected a mapping of {block}'s parameters, got {value!r}")
            trains[f"{block}.train"] = value.get("train") or {}
        for where, train in trains.items():
            check("eps" not in train, f"{where}.eps", "a sweep has one threat model: set the sweep's eps, "
                  "not a trial's")

    def plain(self) -> dict[str, Any]:
        """The options as the search space function reads them."""
        return self.model_dump(exclude_none=True)


class SearchConfig(Config):
    space: str = "distill"
    options: SearchOptions = SearchOptions()
    num_samples: int = 8
    """Trials of the whole search (budget shared), or of each method (budget per_method)."""
    budget: Literal["shared", "per_method"] = "shared"
    """shared: one search over every method, Optuna chooses which to try; per_method: each method in
    options.method gets num_samples trials from a search of its own, so one method's history never
    steers another's budget (what a method comparison needs)."""
    max_concurrent: int = 2
    objective: Literal["single", "multi"] = "single"
    """single: maximize validation W-Robust under PGD; multi: (clean, PGD) with a Pareto front."""
    sampler: Literal["auto", "tpe", "random", "nsga2"] = "auto"
    points: tuple[dict[str, Any], ...] = ()
    """Configurations evaluated first (Optuna enqueues them), e.g. every cell of a paper's grid:
    [{method: darht}, {method: rslad}] or [{teachers/composition: hetero}, ...]."""
    scheduler: SchedulerConfig = SchedulerConfig()

    def check(self) -> None:
        check(self.space in SPACES, "space", unknown_name_message("search space", self.space, SPACES))
        check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        check(self.max_concurrent >= 1, "max_concurrent", f"must be >= 1, got {self.max_concurrent}")


class EvalConfig(Config):
    top_n: int = 2
    """The best N trials (by validation W-Robust; multi-objective: from the Pareto front)."""
    suite: NameOrPath = "paper"
    """A suite of orchestrator/suites.yaml or a YAML file of attacks."""
    baselines: tuple[NameOrPath, ...] = ()
    """Teachers (registry names) or checkpoint paths evaluated alongside."""
    shard_size: int = 1000
    batch_size: int = 256
    seed: int = 0
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    sanity_points: int = 200
    """Subsample of the sanity checks of every evaluated checkpoint (orchestrator.sanity); 0: off."""

    def check(self) -> None:
        check(self.top_n >= 0, "top_n", f"must be >= 0, got {self.top_n}")
        check(self.sanity_points >= 0, "sanity_points", f"must be >= 0 (0: off), got {self.sanity_points}")
        check(self.actors >= 1, "actors", f"must be >= 1, got {self.actors}")
        check(self.shard_size >= 1, "shard_size", f"must be >= 1, got {self.shard_size}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.cpus_per_actor > 0, "cpus_per_actor", f"must be > 0, got {self.cpus_per_actor}")
        check(self.gpus_per_actor >= 0, "gpus_per_actor", f"must be >= 0, got {self.gpus_per_actor}")


class CompareConfig(Config):
    """The method comparison after the search: the best configuration of each searched method (by
    validation W-Robust) and each baseline without distillation, trained again with `seeds` fresh
    training seeds (initialization, data order, attack randomness; the validation split stays
    fixed), each selected on validation and evaluated on the test split with the suite."""

    seeds: int = 0
    """Training seeds per method and baseline (0: no comparison; at least 2 for a statistic)."""
    baselines: tuple[Any, ...] = ()
    """Training methods without teachers trained on the student with the student's config, e.g.
    [pgd_at, {name: trades, attack: {steps: 5}}]: the rows that say whether distillation helped."""
    metric: str = "worst case"
    """The suite row whose W-Robust ranks the methods (an attack's label or the per-point worst case)."""

    def check(self) -> None:
        check(self.seeds == 0 or self.seeds >= 2, "seeds", f"0 (no comparison) or at least 2 seeds, got {self.seeds}")
        for i, raw in enumerate(self.baselines):
            try:
                method = method_config(raw if isinstance(raw, dict) else {"name": raw})
            except ConfigError as err:
                raise err.under(f"baselines[{i}]") from None
            definition = method.definition
            check(not definition.any_teachers and not definition.teacher_roles, f"baselines[{i}]",
                  f"{method.name} distills from teachers; a baseline is trained without them (e.g. pgd_at, trades)")

    def baseline_methods(self) -> list[dict[str, Any]]:
        return [dict(b) if isinstance(b, dict) else {"name": b} for b in self.baselines]


class SweepResources(Config):
    trial: Resources = Resources()
    pretrain: Resources = Resources()
    autoscaling: bool = False
    """The cluster can add nodes: don't refuse requests larger than what is there now."""


class SweepConfig(Config):
    name: Identifier = "demo"
    storage: StorageURI = "runs"
    storage_shared: bool = False
    """A local storage path that every node mounts (NFS): allowed on a multi-node cluster."""
    data: DataConfig = DataConfig()
    """Shared by teachers and students."""
    eps: float | None = None
    """The threat model (L-inf radius) of the whole sweep: teachers' and students' training and
    validation, and the test evaluation (None: the dataset's default)."""
    teachers: tuple[TeacherSpec, ...] = ()
    """Every teacher the search space can pick; the missing ones are pretrained first."""
    student: TrainConfig = TrainConfig()
    """The trials' base training config; the search space overrides parts of it."""
    search: SearchConfig = SearchConfig()
    evaluation: EvalConfig = EvalConfig()
    compare: CompareConfig = CompareConfig()
    resources: SweepResources = SweepResources()

    def check(self) -> None:
        names = [t.name for t in self.teachers]
        check(len(set(names)) == len(names), "teachers", f"duplicate teacher names in {names}")
        threat = {t.train.eps for t in self.teachers if not t.checkpoint} | {self.student.eps} | (
            {self.eps} if self.eps is not None else set())
        check(len(threat) == 1, "eps", f"teachers and students train under one threat model; got eps "
              f"{sorted(threat, key=str)} (set the sweep's eps only)")


_FIELD_KEY = re.compile(r"[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*")


def _dotted(steps: Sequence[str | int]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")


def apply_sets(raw: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """A copy of the config mapping `raw` with each `KEY=VALUE` of the command line's `--set`
    applied. KEY is a field as error messages name it (`search.num_samples`,
    `teachers[0].train.epochs`); VALUE is read as YAML (`8`, `false`, `[a, b]`, `{lr: 0.1}`).
    Missing mappings on the way are created; list items must exist. The copy shares nothing, so a
    field that a YAML anchor (`&a` ... `*a`) repeated elsewhere changes alone."""
    out = _unshared(raw)
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not _FIELD_KEY.fullmatch(key.strip()):
            raise ConfigError("--set", f"expected KEY=VALUE with KEY a dotted field (e.g. search.num_samples=8), "
                              f"got {item!r}")
        steps: list[str | int] = [int(t[1:-1]) if t.startswith("[") else t
                                  for t in re.findall(r"[A-Za-z_]\w*|\[\d+\]", key)]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(key.strip(), f"--set value {text!r} is not valid YAML") from None
        node: Any = out
        for i, step in enumerate(steps):
            if isinstance(step, int) and not (isinstance(node, list) and step < len(node)):
                size = f"a list of {len(node)}" if isinstance(node, list) else "not a list"
                raise ConfigError(_dotted(steps[:i + 1]), f"cannot set: {_dotted(steps[:i]) or 'the config'} is {size}")
            if isinstance(step, str) and not isinstance(node, dict):
                raise ConfigError(_dotted(steps[:i + 1]), f"cannot set: {_dotted(steps[:i])} is not a mapping")
            if i == len(steps) - 1:
                node[step] = value
            else:
                if isinstance(step, str) and node.get(step) is None and isinstance(steps[i + 1], str):
                    node[step] = {}
                node = node[step] if isinstance(step, int) else node.get(step)
    return out


def _unshared(value: Any) -> Any:
    """A copy of YAML data in which no mapping or list appears twice (copy.deepcopy keeps an
    alias an alias)."""
    if isinstance(value, dict):
        return {k: _unshared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshared(v) for v in value]
    return value


def load_sweep_config(path: str, overrides: dict[str, Any] | None = None, sets: Sequence[str] = ()) -> SweepConfig:
    """Read a sweep YAML, merge `overrides` (a nested mapping) and apply `sets` (`KEY=VALUE`, see
    `apply_sets`); the shared `data` section and `eps` are copied into every teacher and the
    student."""
    raw = apply_sets(merge_dicts(load_yaml(path), overrides or {}), sets)
    shared = {"data": raw.get("data") or {}, **({"eps": raw["eps"]} if raw.get("eps") is not None else {})}
    trains = [("student", raw.setdefault("student", {}))]
    for i, teacher in enumerate(raw.get("teachers") or []):
        if isinstance(teacher, dict):
            trains.append((f"teachers[{i}].train", teacher.setdefault("train", {})))
    for where, train in trains:
        if not isinstance(train, dict):
            raise ConfigError(where, "expected a mapping")
        train["data"] = {**shared["data"], **(train.get("data") or {})}
        if "eps" in shared:
            train.setdefault("eps", shared["eps"])
    return from_dict(SweepConfig, raw)


class PretrainConfig(Config):
    storage: StorageURI = "runs"
    """Storage URI (local path, s3://, gs://) holding the registry, Ray runs and TensorBoard."""
    storage_shared: bool = False
    """A local storage path that every node mounts (NFS): allowed on a multi-node cluster."""
    resources: Resources = Resources()
    autoscaling: bool = False
    """The cluster can add nodes: don't refuse requests larger than what is there now."""
    teachers: tuple[TeacherSpec, ...] = ()

    def check(self) -> None:
        names = [t.name for t in self.teachers]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "teachers", f"duplicate teacher names {dup}")


class DistillConfig(Config):
    name: Identifier = "distill"
    """Run name: stable, so re-running an interrupted run resumes it."""
    storage: StorageURI = "runs"
    storage_shared: bool = False
    """A local storage path that every node mounts (NFS): allowed on a multi-node cluster."""
    resources: Resources = Resources()
    autoscaling: bool = False
    train: TrainConfig = TrainConfig()
    """The training config; `teachers` may name registry teachers instead of paths."""

