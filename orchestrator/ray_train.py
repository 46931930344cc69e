"""Ray Train glue: `trainers.fit` as the per-worker function of a TorchTrainer
(docs/design.md#ray-stays-in-orchestrator).

Ray appears in marked places only: (1) the checkpoint Ray hands back on a restart becomes
`resume_from`, (2) every epoch `ray.train.report`s the metrics with the run folder (last/ and
best/) as the checkpoint on rank 0, (3) the GPU Ray assigned is passed to `fit`. Everything else
is the plain training function.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train.torch import TorchTrainer

from orchestrator.config import Resources
from orchestrator.results import ResultsStore
from orchestrator.storage import Storage, localize
from orchestrator.tensorboard import TensorBoardCallback
from trainers import FitResult, TrainConfig, fit
from trainers.callbacks import PrintProgress
from trainers.config import from_dict, to_dict
from trainers.errors import UserError


class RayReport:
    """Reports every epoch to Ray Train (a barrier: every rank calls it); rank 0 attaches the run
    folder as the checkpoint, so a restarted group resumes from it."""

    def __init__(self, run_dir: Path, rank: int) -> None:
        self.run_dir, self.rank = run_dir, rank

    def _report(self, metrics: dict[str, Any]) -> None:
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        checkpoint = ray.train.Checkpoint.from_directory(str(self.run_dir)) if self.rank == 0 else None
        ray.train.report(numbers, checkpoint=checkpoint)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self._report(metrics)

    def on_fit_end(self, result: FitResult) -> None:
        self._report(result.final)


class ResultsCallback:
    """Rank 0 appends one row per epoch (kind "epoch") to the results store."""

    def __init__(self, storage_uri: str, sweep: str, run: str) -> None:
        self.store, self.sweep, self.run = ResultsStore(Storage(storage_uri)), sweep, run

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        self.store.append([{"key": f"epoch/{self.sweep}/{self.run}/{epoch}", "kind": "epoch",
                            "sweep": self.sweep, "run": self.run, "epoch": epoch, "split": "val",
                            "metrics": metrics}])

    def on_fit_end(self, result: FitResult) -> None:
        self.store.append([{"key": f"final/{self.sweep}/{self.run}", "kind": "final", "sweep": self.sweep,
                            "run": self.run, "epoch": len(result.history) - 1, "split": "test",
                            "metrics": result.final}])


def train_worker(config: dict[str, Any]) -> None:
    """The Ray Train per-worker function."""
    context = ray.train.get_context()
    rank = context.get_world_rank()
    threads = max(1, int(config["cpus_per_worker"]))
    torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS but torch may not follow
    run_dir = Path(tempfile.mkdtemp(prefix="run-"))
    cfg = from_dict(TrainConfig, config["train"])
    cfg = cfg.replace(output_dir=str(run_dir), threads=threads, teachers=tuple(localize(t) for t in cfg.teachers))
    resume = None
    checkpoint = ray.train.get_checkpoint()  # (1) a restart resumes from the last report
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            shutil.copytree(folder, run_dir, dirs_exist_ok=True)
        resume = run_dir / "last"
    callbacks: list[Any] = [RayReport(run_dir, rank), PrintProgress(cfg.name, cfg.epochs, rank)]
    if rank == 0 and config.get("tensorboard_dir"):
        callbacks.append(TensorBoardCallback(config["tensorboard_dir"], config.get("hparams", {})))
    if rank == 0 and config.get("results_uri"):
        callbacks.append(ResultsCallback(config["results_uri"], config.get("sweep", ""), cfg.name))
    device = ray.train.torch.get_device() if cfg.device != "cpu" and torch.cuda.is_available() else None
    fit(cfg, callbacks=callbacks, resume_from=resume, device=device)  # (3)


def run_training(cfg: TrainConfig, *, name: str, storage: Storage, resources: Resources,
                 tensorboard_dir: str | None = None, hparams: dict[str, Any] | None = None,
                 results_uri: str | None = None, sweep: str = "",
                 callbacks: list[Any] | None = None) -> ray.train.Result:
    """Run one training job on Ray Train. `name` must be stable: a rerun with the same name resumes
    from that run's checkpoints."""
    loop_config = {"train": to_dict(cfg), "cpus_per_worker": resources.cpus_per_worker,
                   "tensorboard_dir": tensorboard_dir, "hparams": hparams or {},
                   "results_uri": results_uri, "sweep": sweep}
    trainer = TorchTrainer(
        train_worker, train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=resources.num_workers, use_gpu=resources.use_gpu,
                                               resources_per_worker=resources.per_worker()),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage.uri_of("ray"), callbacks=callbacks or [],
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures,
                                                   controller_failure_limit=3),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # Train's print patch tees every print to a logger too: each progress line twice.
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}},
            logging_config=ray.train.LoggingConfig(log_level="WARNING")))
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise_failure(err, name)
        raise


def raise_failure(error: BaseException | None, what: str) -> None:
    """Raise if a run failed (`error`: what `fit` raised, or a result's error): a user error raised
    in a worker (a checkpoint damaged after the driver checked it, say) as one UserError line;
    anything else with Ray's message. The worker's traceback stays in Ray's logs."""
    if error is None:
        return
    for failure in getattr(error, "worker_failures", {}).values():
        if isinstance(failure, UserError):
            raise UserError(f"{what}: {failure}") from None
    raise RuntimeError(f"{what} failed: {error}")


def fetch_artifacts(result: ray.train.Result, destination: Path) -> Path:
    """Copy the final run folder (best/, last/) of a finished Ray Train run to `destination`."""
    if result.checkpoint is None:
        raise RuntimeError(f"training run {result.path} finished without a checkpoint")
    destination.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as folder:
        shutil.copytree(folder, destination, dirs_exist_ok=True)
    return destination
