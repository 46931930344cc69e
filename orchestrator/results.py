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
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
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

    def read(self, columns: Sequence[str] | None = None, **filters: Any) -> list[dict[str, Any]]:
        """Newest row per key. Filters are pushed down to the Parquet scan: `kind="eval"` is
        equality, a list or set (`key=[...]`) membership; `columns` reads only those (and the key),
        e.g. everything but the per-point masks."""
        table = self._scan(filters, columns)
        latest: dict[str, dict[str, Any]] = {}
        for row in table.sort_by("written_at").to_pylist():  # later rows replace earlier ones
            latest[row["key"]] = row
        rows = list(latest.values())
        for row in rows:
            for field in ("metrics", "attack_params"):
                if field in row:
                    row[field] = json.loads(row[field])
        order = [c for c in ("run", "epoch", "attack", "shard", "key") if c in table.column_names]
        return sorted(rows, key=lambda r: tuple(r[c] for c in order))

    def keys(self, **filters: Any) -> set[str]:
        return set(self._scan(filters, ["key"]).column("key").to_pylist())

    def _scan(self, filters: dict[str, Any], columns: Sequence[str] | None) -> pa.Table:
        names = list(SCHEMA.names) if columns is None else list(dict.fromkeys(["key", *columns, "written_at"]))
        files = [f for f in self.storage.list_files(self.folder, suffix=".parquet")
                 if not f.rsplit("/", 1)[-1].startswith(".")]
        if not files:
            return SCHEMA.empty_table().select(names)
        condition = None
        for column, value in filters.items():
            test = ds.field(column).isin(list(value)) if isinstance(value, (list, set, tuple)) else (
                ds.field(column) == value)
            condition = test if condition is None else condition & test
        dataset = ds.dataset(files, schema=SCHEMA, format="parquet", filesystem=self.storage.fs)
        return dataset.to_table(columns=names, filter=condition)
