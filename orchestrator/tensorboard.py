"""TensorBoard: one event directory per run with per-epoch scalars and the HParams summary, so
trials compare side by side in TensorBoard's HParams view (rank 0 writes; others do nothing)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from orchestrator.storage import Storage
from trainers.callbacks import FitResult

PERF = {"lr", "epoch_time", "images_per_s"}
HPARAM_METRICS = ("val/w_robust", "val/clean", "val/pgd")


def scalar_tag(key: str) -> str:
    """val_clean -> val/clean, test_pgd -> test/pgd, lr -> perf/lr, w_0 -> train/w_0."""
    for prefix in ("val", "test_last", "test"):
        if key.startswith(prefix + "_"):
            return f"{prefix}/{key[len(prefix) + 1:]}"
    return f"perf/{key}" if key in PERF else f"train/{key}"


def flat_hparams(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {'method/mc_samples': 4, ...} with TensorBoard-compatible values."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "/"))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


class TensorBoardCallback:
    """Writes to `logdir`; a remote URI (s3://, gs://) is written locally and uploaded after
    every epoch, since TensorBoard's writer cannot write to object stores by itself."""

    def __init__(self, logdir: str | Path, hparam_values: dict[str, Any], rank: int = 0) -> None:
        self.writer = None
        if rank != 0:
            return
        self.remote = Storage(logdir) if "://" in str(logdir) and not str(logdir).startswith("file://") else None
        self.local = Path(tempfile.mkdtemp(prefix="tb-")) if self.remote else Path(str(logdir).removeprefix("file://"))
        self.writer = SummaryWriter(log_dir=str(self.local))
        exp, ssi, sei = hparams(flat_hparams(hparam_values), {tag: 0.0 for tag in HPARAM_METRICS})
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "wall_time"):
                self.writer.add_scalar(scalar_tag(key), value, epoch + 1)
        self.writer.flush()
        self._sync()

    def _sync(self) -> None:
        if self.remote is not None:
            self.remote.upload_dir(self.local)

    def on_fit_end(self, result: FitResult) -> None:
        if self.writer is None:
            return
        step = len(result.history)
        for key, value in result.final.items():
            if key.startswith("test") and isinstance(value, (int, float)):
                self.writer.add_scalar(scalar_tag(key), value, step)
        self.writer.close()
        self._sync()
