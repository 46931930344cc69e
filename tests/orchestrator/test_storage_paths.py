"""The storage layer keeps every path inside its folder, whoever built it, and refuses a storage
path it could not write to."""
from __future__ import annotations

import os

import pytest

from orchestrator.storage import Storage
from trainers.config import ConfigError


@pytest.mark.parametrize("parts", [("runs", ".."), ("..",), ("runs/../..",), ("/etc",), ("runs", "/etc/passwd"),
                                   ("a//b",), ("runs", "."), ("runs", "x/../../../y")])
def test_parts_that_would_leave_or_blur_the_folder_are_refused(parts, tmp_path):
    storage = Storage(tmp_path / "store")
    with pytest.raises(ConfigError, match="storage: .* not a path inside the storage folder"):
        storage.path(*parts)


def test_a_symlink_pointing_outside_is_refused_and_one_inside_is_allowed(tmp_path):
    storage = Storage(tmp_path / "store")
    (tmp_path / "store" / "inner").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "store" / "runs")
    os.symlink(tmp_path / "store" / "inner", tmp_path / "store" / "alias")
    with pytest.raises(ConfigError, match="resolves outside the storage folder"):
        storage.write_bytes(b"x", "runs", "d1", "file.txt")
    assert list((tmp_path / "outside").iterdir()) == []
    storage.write_bytes(b"x", "alias", "file.txt")
    assert (tmp_path / "store" / "inner" / "file.txt").read_bytes() == b"x"


def test_ordinary_paths_are_unchanged(tmp_path):
    storage = Storage(tmp_path / "store")
    assert storage.path("runs", "d1/best") == f"{tmp_path}/store/runs/d1/best"
    assert storage.path("results", "", "x.parquet") == f"{tmp_path}/store/results/x.parquet"


def test_a_storage_path_that_is_a_file_or_unwritable_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file; expected a folder"):
        Storage(tmp_path / "file")
    with pytest.raises(ConfigError, match="is a file; expected a folder"):
        Storage(tmp_path / "file" / "below")
    with pytest.raises(ConfigError, match="empty path"):
        Storage("")
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="cannot write"):
            Storage(tmp_path / "ro" / "store")
