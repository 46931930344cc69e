"""The results store: one Parquet dataset of rows (run, epoch, split, attack, shard) with the
attack's parameters, counts, per-point correctness and metrics. Writers append whole files
atomically; a row's `key` is its identity, and readers keep the newest row per key, so re-runs
and resumed sweeps never duplicate anything."""
from __future__ import annotations

import datetime as dt
import io
import json
import time
import uuid
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from orchestrator.storage import Storage

SCHEMA = pa.schema([
    ("key", pa.string()),
    ("kind", pa.string()),            # epoch | trial | eval | teacher
    ("sweep", pa.string()),
    ("run", pa.string()),
    ("epoch", pa.int32()),
    ("split", pa.string()),
    ("attack", pa.string()),
    ("attack_params", pa.string()),   # JSON
    ("shard", pa.int32()),
    ("n", pa.int64()),
    ("correct", pa.int64()),
    ("mask", pa.binary()),            # per-point correctness, numpy.packbits
    ("metrics", pa.string()),         # JSON
    ("written_at", pa.timestamp("us", tz="UTC")),
])
DEFAULTS: dict[str, Any] = {"sweep": "", "run": "", "epoch": -1, "split": "", "attack": "",
                            "attack_params": "{}", "shard": -1, "n": 0, "correct": 0, "mask": b"",
                            "metrics": "{}"}


def pack_mask(mask: torch.Tensor) -> bytes:
    return np.packbits(mask.cpu().numpy().astype(bool)).tobytes()


def unpack_mask(data: bytes, n: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:n].astype(bool))


class ResultsStore:
    def __init__(self, storage: Storage, folder: str = "results") -> None:
        self.storage, self.folder = storage, folder

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        records = []
        for row in rows:
            unknown = set(row) - set(SCHEMA.names)
            if unknown or "key" not in row or "kind" not in row:
                raise ValueError(f"results row needs key and kind and only schema fields; got extra {sorted(unknown)}")
            record = {**DEFAULTS, **row, "written_at": now}
            for field in ("metrics", "attack_params"):
                if not isinstance(record[field], str):
                    record[field] = json.dumps(record[field], sort_keys=True, default=float)
            records.append(record)
        if not records:
            return
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA), buf)
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        self.storage.write_bytes(buf.getvalue(), self.folder, name)

    def read(self, **filters: Any) -> list[dict[str, Any]]:
        """Newest row per key, optionally filtered by equality on columns (e.g. kind="eval")."""
        files = self.storage.list_files(self.folder, suffix=".parquet")
        files = [f for f in files if not f.rsplit("/", 1)[-1].startswith(".")]
        if not files:
            return []
        table = pa.concat_tables([pq.read_table(f, filesystem=self.storage.fs, schema=SCHEMA) for f in files])
        latest: dict[str, dict[str, Any]] = {}
        for row in table.to_pylist():
            if any(row[k] != v for k, v in filters.items()):
                continue
            if row["key"] not in latest or row["written_at"] >= latest[row["key"]]["written_at"]:
                latest[row["key"]] = row
        for row in latest.values():
            row["metrics"] = json.loads(row["metrics"])
            row["attack_params"] = json.loads(row["attack_params"])
        return sorted(latest.values(), key=lambda r: (r["run"], r["epoch"], r["attack"], r["shard"], r["key"]))

    def keys(self, **filters: Any) -> set[str]:
        return {r["key"] for r in self.read(**filters)}
