"""One storage URI for everything a sweep writes: a local path, `file://`, `s3://` or `gs://`,
through pyarrow's filesystems (the same URI Ray uses for its storage_path)."""
from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.fs as pafs


class Storage:
    def __init__(self, uri: str | Path) -> None:
        uri = str(uri)
        self.uri = uri if "://" in uri else str(Path(uri).expanduser().resolve())
        self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """A path inside the storage root, as the filesystem sees it."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

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

    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

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

    def upload_dir(self, local: Path, *parts: str) -> str:
        dest = self.path(*parts)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(Path(local).resolve()), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        return dest

    def replace_dir(self, local: Path, *parts: str) -> str:
        """Upload a folder in place of whatever the destination held (no stale files left)."""
        if self.exists(*parts):
            self.fs.delete_dir(self.path(*parts))
        return self.upload_dir(local, *parts)

    def download_dir(self, local: Path, *parts: str) -> Path:
        Path(local).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(*parts), str(Path(local).resolve()), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return Path(local)
