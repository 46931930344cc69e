"""One storage URI for everything a sweep writes: a local path, `file://`, `s3://` or `gs://`,
through pyarrow's filesystems (the same URI Ray uses for its storage_path)."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from trainers.config import ConfigError, absolute_path, config_hash

# Set by Ray's job supervisor in the environment of a `ray job submit` entry point.
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def resolve_storage(uri: str | Path) -> str:
    """The absolute form of a storage URI given by a user (see trainers.config.absolute_path).
    A local path must be a folder, or not exist yet under a folder this process can write to.
    Inside a submitted Ray job a relative path is refused: the job's working directory is a
    temporary copy that Ray deletes, so everything written there would be lost."""
    uri = str(uri)
    if not uri.strip():
        raise ConfigError("storage", "an empty path; give a folder (e.g. runs), s3://... or gs://...")
    if "://" not in uri and not os.path.isabs(os.path.expanduser(uri)) and SUBMITTED_JOB_ENV in os.environ:
        raise ConfigError("storage", f"{uri!r} is relative to the working directory of this submitted Ray job, a "
                          "temporary copy that Ray deletes; give --storage an absolute path on a disk every node "
                          "mounts, or s3://... / gs://...")
    uri = absolute_path(uri)
    if "://" not in uri:
        _check_local_folder(Path(uri))
    return uri


def _check_local_folder(path: Path) -> None:
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError("storage", f"{existing} is a file; expected a folder (existing or new)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("storage", f"{path}: cannot write in {existing}; expected a writable folder")


class Storage:
    def __init__(self, uri: str | Path) -> None:
        self.uri = resolve_storage(uri)
        self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """A path inside the storage root, as the filesystem sees it. Every caller goes through
        here, so a part that would leave the root ('..', an absolute path, a symlink pointing
        outside) is refused whatever built it."""
        segments = [seg for part in parts if part for seg in part.split("/")]
        if any(seg in ("", ".", "..") for seg in segments) or any(p.startswith("/") for p in parts if p):
            raise ConfigError("storage", f"{'/'.join(parts)!r} is not a path inside the storage folder {self.uri}")
        path = "/".join([self.root, *segments])
        if self.is_local and not _inside(os.path.realpath(path), os.path.realpath(self.root)):
            raise ConfigError("storage", f"{'/'.join(parts)!r} resolves outside the storage folder {self.uri} "
                              "(through a symbolic link)")
        return path

    def uri_of(self, *parts: str) -> str:
        """A URI (local path for local storage) for tools that take one, such as Ray or TensorBoard."""
        path = self.path(*parts)
        return path if self.is_local else f"{self.uri.split('://', 1)[0]}://{path}"

    def local(self, *parts: str) -> Path:
        if not self.is_local:
            raise ValueError(f"storage {self.uri} is not local")
        return Path(self.path(*parts))

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a file so readers never see it half-written: temp name + rename on local disks;
        object stores publish a single PUT atomically."""
        path = self.path(*parts)
        folder, name = path.rsplit("/", 1)
        self.fs.create_dir(folder, recursive=True)
        # A dot prefix keeps readers that list the folder (pyarrow datasets) away from temp files.
        target = f"{folder}/.{name}.tmp-{uuid.uuid4().hex[:8]}" if self.is_local else path
        with self.fs.open_output_stream(target) as out:
            out.write(data)
        if target != path:
            self.fs.move(target, path)

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def list_files(self, *parts: str, suffix: str = "") -> list[str]:
        """Paths of the files directly inside a folder (none if it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.File and i.path.endswith(suffix))

    def list_dirs(self, *parts: str) -> list[str]:
        """Names of the folders directly inside a folder (none if it does not exist)."""
        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.Directory)

    def delete_dir(self, *parts: str) -> None:
        self.fs.delete_dir(self.path(*parts))

    def upload_dir(self, local: Path, *parts: str) -> str:
        dest = self.path(*parts)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(Path(local).resolve()), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        return dest

    def replace_dir(self, local: Path, *parts: str) -> str:
        """Upload a folder in place of whatever the destination held (no stale files left). On a
        local disk the new folder is uploaded under a temporary name and swapped in by rename, so
        a crash leaves the old folder or the new one, never a mix or nothing."""
        dest = self.path(*parts)
        if not self.is_local:
            if self.exists(*parts):
                self.fs.delete_dir(dest)
            return self.upload_dir(local, *parts)
        folder, name = dest.rsplit("/", 1)
        tmp, old = (f"{folder}/.{name}.{kind}-{uuid.uuid4().hex[:8]}" for kind in ("tmp", "old"))
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(local).resolve(), tmp)
        if os.path.exists(dest):
            os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
        return dest

    def download_dir(self, local: Path, *parts: str) -> Path:
        Path(local).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(*parts), str(Path(local).resolve()), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return Path(local)


def localize(uri: str, cache: Path | None = None) -> str:
    """A local directory for a checkpoint that may live in object storage (downloaded once)."""
    if "://" not in uri or uri.startswith("file://"):
        return uri.removeprefix("file://")
    cache = cache or Path(tempfile.gettempdir()) / "teacher-cache"
    target = cache / config_hash(uri)
    if not (target / "model.json").exists():
        Storage(uri).download_dir(target)
    return str(target)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
