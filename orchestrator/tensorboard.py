"""TensorBoard: one event directory per run with per-epoch scalars and the run's HParams session
(start and end), rank 0 writing; for a sweep, one HParams experiment at the sweep's root, written
by the driver, that declares every searched parameter with its domain and the metrics.

TensorBoard's HParams view shows one experiment: the first `_hparams_/experiment` summary it
finds. So trials never write one (each would declare only its own parameters); the sweep's driver
writes it once, under a fixed file name, so writing it again on a resumed sweep replaces it. Runs
outside a sweep (teachers, `orchestrator.distill`) write sessions only: TensorBoard then builds
the experiment from the union of their sessions' parameters."""
from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import SummaryWriter

from orchestrator.storage import Storage
from trainers.callbacks import FitResult

PERF = {"lr", "epoch_time", "images_per_s"}
HPARAM_METRICS = ("val/w_robust", "val/clean", "val/pgd")
# Sorts before the timestamped files; one name, so a rewrite replaces the sweep's experiment.
EXPERIMENT_FILE = "events.out.tfevents.0.sweep-experiment"


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


def _set(target: Any, value: Any) -> None:
    """Fill a protobuf Value (a map entry or a list item, set in place) with `value`."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, (int, float)):
        target.number_value = float(value)
    else:
        target.string_value = str(value)


def _type(values: Sequence[Any]) -> int:
    """The one TensorBoard type of a categorical's choices; unset for mixed choices."""
    kinds = {"bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else "string" for v in values}
    return {frozenset({"bool"}): api_pb2.DATA_TYPE_BOOL, frozenset({"number"}): api_pb2.DATA_TYPE_FLOAT64,
            frozenset({"string"}): api_pb2.DATA_TYPE_STRING}.get(frozenset(kinds), api_pb2.DATA_TYPE_UNSET)


def hparam_info(name: str, dist: BaseDistribution) -> api_pb2.HParamInfo:
    """A searched parameter as a column: its choices (categorical) or its interval (int, float)."""
    if isinstance(dist, CategoricalDistribution):
        info = api_pb2.HParamInfo(name=name, type=_type(dist.choices), differs=True)
        for choice in dist.choices:
            _set(info.domain_discrete.values.add(), choice)
        return info
    interval = api_pb2.Interval(min_value=float(dist.low), max_value=float(dist.high))
    return api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64, domain_interval=interval, differs=True)


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])


def experiment_summary(domains: dict[str, BaseDistribution], free: Sequence[str] = ()) -> summary_pb2.Summary:
    """The experiment: every parameter in `domains`, the string parameters in `free` (derived
    values without a fixed domain, such as a trial's teacher set) and the validation metrics."""
    infos = [hparam_info(name, dist) for name, dist in domains.items()]
    infos += [api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_STRING, differs=True) for name in free]
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=tag) for tag in HPARAM_METRICS]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def session_start_summary(hparams: dict[str, Any]) -> summary_pb2.Summary:
    info = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        _set(info.hparams[name], value)
    return _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info))


def session_end_summary(status: int = api_pb2.STATUS_SUCCESS) -> summary_pb2.Summary:
    info = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info))


def write_experiment(storage: Storage, folder: Sequence[str], domains: dict[str, BaseDistribution],
                     free: Sequence[str] = ()) -> str:
    """Write the experiment as the event file EXPERIMENT_FILE in `folder` of the storage (local
    or object store alike); returns its path."""
    buf = io.BytesIO()
    records = RecordWriter(buf)
    records.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
    records.write(event_pb2.Event(wall_time=time.time(), summary=experiment_summary(domains, free)).SerializeToString())
    storage.write_bytes(buf.getvalue(), *folder, EXPERIMENT_FILE)
    return storage.path(*folder, EXPERIMENT_FILE)


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
        self.writer.file_writer.add_summary(session_start_summary(flat_hparams(hparam_values)))

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
        self.writer.file_writer.add_summary(session_end_summary())
        self.writer.close()
        self._sync()
