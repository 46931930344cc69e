"""The Parquet results store: atomic appends, newest row per key, filters, masks, URIs."""
from __future__ import annotations

import torch

from orchestrator.results import ResultsStore, pack_mask, unpack_mask
from orchestrator.storage import Storage


def test_newest_row_per_key_wins_and_filters_apply(tmp_path):
    store = ResultsStore(Storage(tmp_path))
    store.append([{"key": "a", "kind": "eval", "run": "r1", "correct": 1},
                  {"key": "b", "kind": "epoch", "run": "r1", "metrics": {"loss": 0.5}}])
    store.append([{"key": "a", "kind": "eval", "run": "r1", "correct": 7}])
    rows = store.read()
    assert len(rows) == 2
    assert {r["key"]: r["correct"] for r in rows}["a"] == 7
    assert store.read(kind="epoch")[0]["metrics"] == {"loss": 0.5}
    assert store.keys(kind="eval") == {"a"}
    assert store.read(kind="missing") == []


def test_appends_are_whole_files_and_temp_files_are_ignored(tmp_path):
    storage = Storage(tmp_path)
    store = ResultsStore(storage)
    store.append([{"key": "x", "kind": "eval"}])
    (tmp_path / "results" / ".part-0.parquet.tmp-1234").write_bytes(b"half written")
    assert [r["key"] for r in store.read()] == ["x"]
    files = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert len([f for f in files if f.endswith(".parquet")]) == 1


def test_unknown_columns_are_refused(tmp_path):
    store = ResultsStore(Storage(tmp_path))
    try:
        store.append([{"key": "x", "kind": "eval", "accuracy": 0.5}])
    except ValueError as err:
        assert "accuracy" in str(err)
    else:
        raise AssertionError("an unknown column was accepted")
    assert store.read() == []


def test_masks_round_trip_for_any_length():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 9, 397, 1000):
        mask = torch.rand(n, generator=gen) < 0.5
        assert torch.equal(unpack_mask(pack_mask(mask), n), mask)


def test_file_uri_and_plain_path_are_the_same_store(tmp_path):
    ResultsStore(Storage(f"file://{tmp_path}")).append([{"key": "k", "kind": "trial"}])
    assert ResultsStore(Storage(tmp_path)).keys() == {"k"}


def test_replace_dir_leaves_no_stale_files(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "sub").mkdir(parents=True)
    (old / "sub" / "stale.bin").write_bytes(b"x")
    new.mkdir()
    (new / "model.json").write_text("{}")
    storage = Storage(f"file://{tmp_path / 'store'}")
    storage.replace_dir(old, "runs", "a")
    storage.replace_dir(new, "runs", "a")
    assert sorted(p.name for p in (tmp_path / "store" / "runs" / "a").rglob("*")) == ["model.json"]


def test_membership_filters_and_column_projection(tmp_path):
    store = ResultsStore(Storage(tmp_path))
    store.append([{"key": k, "kind": "eval", "run": k, "mask": pack_mask(torch.ones(3, dtype=torch.bool)),
                   "metrics": {"i": i}} for i, k in enumerate("abc")])
    store.append([{"key": "b", "kind": "eval", "run": "b", "mask": b"", "metrics": {"i": 9}}])
    rows = store.read(columns=["mask"], kind="eval", key={"b", "c"})
    assert [(r["key"], r["mask"]) for r in rows] == [("b", b""), ("c", pack_mask(torch.ones(3, dtype=torch.bool)))]
    assert all(set(r) == {"key", "mask", "written_at"} for r in rows)
    assert [r["metrics"]["i"] for r in store.read(key=["a", "b"])] == [0, 9]
    assert store.keys(key=("a", "z")) == {"a"}
