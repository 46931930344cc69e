"""Evaluation tasks (checkpoint x attack x example shard) and the Ray actor pool that runs them.

A task is plain data; `run_task` is the same function in-process and inside an actor, so the pool's
result equals the single-process result exactly. Actors cache loaded models and datasets, hold a
GPU (or a fraction) when asked, and get tasks ordered by checkpoint so the cache hits.
"""
from __future__ import annotations

import hashlib
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import ray
import torch
from ray.util import ActorPool

from attacks import AttackSpec
from attacks.autoattack import library_warnings
from attacks.scoring import clean_correct, robust_correct
from orchestrator.results import pack_mask
from orchestrator.storage import localize
from trainers.checkpoint import load_model
from trainers.data import Dataset, as_float, load_dataset
from trainers.distributed import derive_seed
from trainers.errors import UserError
from trainers.modes import eval_mode


def split_id(data: dict[str, Any], split: str) -> str:
    """The dataset and split of stored rows: the test split is fixed, a validation (or training)
    split depends on how it was carved (val_size, split_seed)."""
    if split == "test":
        return f"{data['name']}/test"
    return f"{data['name']}/{split}-{data.get('val_size')}-{data.get('split_seed')}"


@dataclass(frozen=True)
class EvalTask:
    checkpoint: str
    checkpoint_id: str
    """The weights' SHA-256: results are keyed by what was evaluated, not where it was stored."""
    run: str
    data: dict[str, Any]
    """load_dataset arguments (name, root, val_size, split_seed)."""
    split: str
    shard: int
    start: int
    stop: int
    spec: AttackSpec
    seed: int
    batch_size: int = field(compare=False)
    eps: float = field(compare=False)
    """The evaluation's threat model (a suite entry may set its own eps); the sanity checks run at it."""

    @property
    def shard_key(self) -> str:
        return f"eval/{self.checkpoint_id[:16]}/{split_id(self.data, self.split)}/{self.start}-{self.stop}"

    @property
    def key(self) -> str:
        attack = hashlib.sha256(self.spec.key.encode()).hexdigest()[:16]
        return f"{self.shard_key}/{attack}/seed{self.seed}"

    @property
    def clean_key(self) -> str:
        return f"{self.shard_key}/clean"

    @property
    def shard_seed(self) -> int:
        return derive_seed(self.seed, self.start) % (2 ** 31)


class Cache:
    """A small LRU of loaded models and datasets."""

    def __init__(self, device: torch.device, models: int = 2) -> None:
        self.device, self.size = device, models
        self.models: OrderedDict[str, torch.nn.Module] = OrderedDict()
        self.datasets: dict[str, Dataset] = {}

    def model(self, path: str) -> torch.nn.Module:
        if path not in self.models:
            self.models[path] = load_model(localize(path), device=self.device)[0]
            while len(self.models) > self.size:
                self.models.popitem(last=False)
        self.models.move_to_end(path)
        return self.models[path]

    def dataset(self, data: dict[str, Any]) -> Dataset:
        key = repr(sorted(data.items()))
        if key not in self.datasets:
            self.datasets[key] = load_dataset(**data)
        return self.datasets[key]


def run_task(task: EvalTask, cache: Cache) -> dict[str, Any]:
    """Clean and robust per-point correctness of one shard under one attack, and the messages of
    AutoAttack's own checks. Other task types (orchestrator.sanity) run with their `run_on`."""
    if not isinstance(task, EvalTask):
        return task.run_on(cache)
    start = time.perf_counter()
    split = cache.dataset(task.data).split(task.split)
    x = as_float(split.x[task.start:task.stop]).to(cache.device)
    y = split.y[task.start:task.stop].to(cache.device)
    model = cache.model(task.checkpoint)
    with eval_mode(model), library_warnings() as warnings:
        clean = clean_correct(model, x, y, task.batch_size)
        robust = robust_correct(model, x, y, task.spec, seed=task.shard_seed, batch_size=task.batch_size,
                                clean=clean)
    return {"key": task.key, "n": len(y), "clean": pack_mask(clean), "robust": pack_mask(robust),
            "clean_correct": int(clean.sum()), "robust_correct": int(robust.sum()),
            "warnings": list(dict.fromkeys(warnings)), "seconds": time.perf_counter() - start}


@ray.remote
class EvalActor:
    def __init__(self, threads: int) -> None:
        torch.set_num_threads(max(1, threads))  # Ray sets OMP_NUM_THREADS; torch may not follow
        device = torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")
        self.cache = Cache(device)

    def run(self, task: EvalTask) -> dict[str, Any]:
        """A user error (a checkpoint damaged after the driver checked it) comes back as data:
        Ray would retry it and hand the driver a multi-line remote traceback."""
        try:
            return run_task(task, self.cache)
        except UserError as err:
            traceback.print_exc()  # into the actor's log in Ray's log folder
            return {"key": task.key, "user_error": str(err)}


def run_local(tasks: Iterable[EvalTask], device: torch.device | None = None) -> Iterator[tuple[EvalTask, dict[str, Any]]]:
    """The single-process path: the same tasks, in order, in this process."""
    cache = Cache(device or torch.device("cpu"))
    for task in tasks:
        yield task, run_task(task, cache)


class EvalPool:
    """`actors` evaluation actors kept alive across calls of `run` (a context manager)."""

    def __init__(self, actors: int, *, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
                 retries: int = 2) -> None:
        options = {"num_cpus": cpus_per_actor, "num_gpus": gpus_per_actor, "max_restarts": retries,
                   "max_task_retries": retries}
        self.actors = [EvalActor.options(**options).remote(int(cpus_per_actor)) for _ in range(max(1, actors))]
        self.retries = retries

    def run(self, tasks: list[EvalTask]) -> Iterator[tuple[EvalTask, dict[str, Any]]]:
        """Yields (task, result) as tasks finish; a failed task (or a dead actor) is retried by Ray."""
        ordered = sorted(tasks, key=lambda t: (t.checkpoint, t.start))  # cache hits within an actor
        by_key = {t.key: t for t in ordered}
        submit: Callable[[Any, EvalTask], Any] = lambda actor, task: actor.run.options(  # noqa: E731
            retry_exceptions=self.retries > 0).remote(task)
        for result in ActorPool(self.actors).map_unordered(submit, ordered):
            if "user_error" in result:
                raise UserError(result["user_error"])
            yield by_key[result["key"]], result

    def __enter__(self) -> "EvalPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        for actor in self.actors:
            ray.kill(actor)


def run_pool(tasks: list[EvalTask], *, actors: int, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
             retries: int = 2) -> Iterator[tuple[EvalTask, dict[str, Any]]]:
    """Run tasks on a fresh pool of `actors` actors; yields (task, result) as they finish."""
    with EvalPool(actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor, retries=retries) as pool:
        yield from pool.run(tasks)
