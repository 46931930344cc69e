"""The sweep's Optuna study, kept in the storage so the tools that read Optuna studies work on it
(optuna-dashboard, `optuna.importance`, `optuna.visualization`): `<storage>/optuna/<sweep>.log`,
an Optuna JournalStorage (an append-only log written under a lock file, safe for concurrent
writers and on NFS), the study named after the sweep.

Ray's OptunaSearch is given the journal and the study name; it creates or loads the study
(`load_if_exists=True`) and, on a resumed sweep, Tune restores the pickled searcher, whose
journal reopens the same file and replays it. Object stores (s3://, gs://) have no appends and no
lock files, so there the driver keeps a local copy of the journal and uploads it after every
trial; a resumed sweep downloads it first."""
from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import InMemoryStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune

from orchestrator.storage import Storage
from trainers.config import config_hash

FOLDER = "optuna"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna logs every study it creates (INFO) and warns that metric names are experimental:
    not news for the console."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def journal_name(sweep: str) -> str:
    return f"{sweep}.log"


def _driver_path(storage: Storage, sweep: str) -> Path:
    """The journal the driver writes: the storage's file itself, or a local copy for an object store
    (the same path on every driver of that storage, as the restored searcher remembers it)."""
    if storage.is_local:
        return storage.local(FOLDER, journal_name(sweep))
    return Path(tempfile.gettempdir()) / "robust-distill-optuna" / config_hash(storage.uri) / journal_name(sweep)


def journal(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def new_study(storage: Storage, sweep: str, directions: list[str], metric_names: list[str]) -> JournalStorage:
    """A new sweep's study, in a new journal: a journal already there is left from a start that
    never created the Tune experiment (or whose experiment was deleted), and is replaced."""
    path = _driver_path(storage, sweep)
    path.unlink(missing_ok=True)
    backend = journal(path)
    with quiet_optuna():
        study = optuna.create_study(storage=backend, study_name=sweep, directions=directions)
        study.set_metric_names(metric_names)
    publish(storage.uri, sweep)
    return backend


def fetch(storage: Storage, sweep: str) -> None:
    """Before a resumed sweep's searcher is restored: refresh the driver's copy of an object
    store's journal (a local journal is the file itself)."""
    if not storage.is_local and storage.exists(FOLDER, journal_name(sweep)):
        path = _driver_path(storage, sweep)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(storage.read_bytes(FOLDER, journal_name(sweep)))


def publish(storage_uri: str, sweep: str) -> None:
    """Upload the driver's copy of the journal to an object store (nothing to do on a disk)."""
    storage = Storage(storage_uri)
    path = _driver_path(storage, sweep)
    if not storage.is_local and path.exists():
        storage.write_bytes(path.read_bytes(), FOLDER, journal_name(sweep))


class PublishJournal(tune.Callback):
    """Uploads the journal after every finished trial (Tune tells the searcher first)."""

    def __init__(self, storage_uri: str, sweep: str) -> None:
        self.storage_uri, self.sweep = storage_uri, sweep

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        publish(self.storage_uri, self.sweep)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        publish(self.storage_uri, self.sweep)


def load_study(storage: Storage, sweep: str) -> optuna.Study | None:
    """The sweep's study as the storage holds it, copied into memory (None when there is none)."""
    if not storage.exists(FOLDER, journal_name(sweep)):
        return None
    with tempfile.TemporaryDirectory(prefix="optuna-") as folder:
        path = Path(folder) / journal_name(sweep)
        path.parent.mkdir(parents=True, exist_ok=True)  # a per-method study `<sweep>/<method>`
        path.write_bytes(storage.read_bytes(FOLDER, journal_name(sweep)))
        memory = InMemoryStorage()
        with quiet_optuna():
            optuna.copy_study(from_study_name=sweep, from_storage=journal(path), to_storage=memory)
    return optuna.load_study(study_name=sweep, storage=memory)
