"""The teacher registry: pretrained teachers under `<storage>/teachers/<spec hash>/<version>/`
(best/ and last/ checkpoints) plus one index row per teacher (spec hash, name, architecture,
method, dataset, validation and test clean / PGD accuracy, the version's path). A spec already
registered is never retrained unless forced; distillation configs refer to teachers by registry
name or by checkpoint path.

Publishing is the index row: a version's folders are uploaded first and the row (one atomic
results-store append) points at them, so a crash leaves the previous teacher whole, and a retrained
teacher gets a new path (no cache or running worker ever reads half-replaced weights)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestrator.results import ResultsStore
from orchestrator.storage import Storage
from trainers import TrainConfig
from trainers.config import Config, ConfigError, Identifier, LocalPath, absolute_path, config_hash, to_dict

IGNORED = ("name", "output_dir", "threads", "device")


class TeacherSpec(Config):
    name: Identifier
    """Registry name that distillation configs and search spaces refer to."""
    train: TrainConfig = TrainConfig()
    checkpoint: LocalPath | None = None
    """An existing checkpoint (e.g. weights imported with trainers.checkpoint.import_state_dict):
    used as is, never trained."""

    @property
    def hash(self) -> str:
        """Identity of what is trained (the name, paths and thread counts do not change it)."""
        data = {k: v for k, v in to_dict(self.train).items() if k not in IGNORED}
        return config_hash(data)


class TeacherRegistry:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.index = ResultsStore(storage, "teachers/index")

    def rows(self) -> list[dict[str, Any]]:
        return [r for r in self.index.read(kind="teacher")
                if self.storage.exists("teachers", r["key"], r["metrics"].get("version", ""), "best", "model.json")]

    def lookup(self, spec: TeacherSpec) -> dict[str, Any] | None:
        return next((r for r in self.rows() if r["key"] == spec.hash), None)

    def register(self, spec: TeacherSpec, artifacts: Path, final: dict[str, Any]) -> dict[str, Any]:
        """Publish a finished run folder (best/, last/) as a new version, then its index row; the
        versions it replaces are removed after the row is written."""
        version = f"v{time.time_ns()}"
        for tag in ("best", "last"):
            self.storage.upload_dir(artifacts / tag, "teachers", spec.hash, version, tag)
        cfg = spec.train
        metrics = {"name": spec.name, "arch": cfg.model.arch, "method": cfg.method.name,
                   "profile": cfg.method.profile, "dataset": cfg.data.name, "seed": cfg.seed,
                   "epochs": cfg.epochs, "version": version,
                   "path": self.storage.uri_of("teachers", spec.hash, version, "best"),
                   **{k: final[k] for k in ("val_clean", "val_pgd", "val_w_robust", "best_val_w_robust",
                                            "test_clean", "test_pgd", "test_w_robust") if k in final}}
        self.index.append([{"key": spec.hash, "kind": "teacher", "run": spec.name, "metrics": metrics}])
        for old in self.storage.list_dirs("teachers", spec.hash):
            if old != version:
                self.storage.delete_dir("teachers", spec.hash, old)
        return {"key": spec.hash, "metrics": metrics}

    def resolve(self, ref: str, field: str = "teachers") -> str:
        """A checkpoint directory for a teacher given by path/URI, registry name or spec hash;
        `field` names the config field or option that gave it in errors."""
        if "://" in ref or Path(ref).exists():
            return absolute_path(ref)
        matches = [r for r in self.rows() if ref in (r["run"], r["key"])]
        if not matches:
            known = sorted({r["run"] for r in self.rows()})
            raise ConfigError(field, f"{ref!r} is neither a checkpoint path nor a teacher in the registry "
                              f"at {self.storage.uri} (known: {', '.join(known) or 'none'})")
        return matches[-1]["metrics"]["path"]
