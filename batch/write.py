"""The results folder: atomic Parquet and JSON writes, the manifest, and the run lock.

Every file is written under a temporary name and renamed into place (object stores make
a write visible only when it completes), so a run killed at any moment leaves only whole
files. Each call has one Parquet file per table with a name derived from its call id, so
re-scoring a call replaces its rows instead of adding to them. A call counts as done once
its manifest entry (``_manifest/<hash of the path>.json``) is written, after its Parquet
files; a call interrupted before that is simply scored again by the next run.

``--out`` may be any fsspec URL; the lock that keeps two runs apart needs a local folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from callmood.batch.schema import PARTITION_KEYS
from fsspec.implementations.local import LocalFileSystem

MANIFEST = "_manifest"
LABELS = "labels.json"
LOCK = ".lock"
_TMP = ".tmp-"


class ResultsError(RuntimeError):
    """The results folder cannot be used for this run (locked, or other labels)."""


def digest(text: str, length: int = 16) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def part_path(table: str, partition: str, name: str) -> str:
    """`segments/call_date=2026-11-20/part-<name>.parquet`, relative to the results root."""
    return f"{table}/{PARTITION_KEYS[table]}={partition}/part-{name}.parquet"


class ResultsStore:
    def __init__(self, url: str):
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def _write_bytes(self, relative: str, data: bytes) -> None:
        final = self._path(relative)
        folder, name = final.rsplit("/", 1)
        self.fs.makedirs(folder, exist_ok=True)
        if not self.local:
            with self.fs.open(final, "wb") as f:
                f.write(data)
            return
        temp = f"{folder}/{_TMP}{name}.{uuid.uuid4().hex[:8]}"
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)

    def write_table(self, relative: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self._write_bytes(relative, buffer.getvalue())

    def write_json(self, relative: str, value: dict) -> None:
        self._write_bytes(relative, (json.dumps(value, indent=2) + "\n").encode())

    def read_json(self, relative: str) -> dict | None:
        try:
            with self.fs.open(self._path(relative), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def delete(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(relative))

    def remove_leftovers(self) -> int:
        """Delete temporary files a killed run left behind; returns how many."""
        leftovers = [p for p in self.fs.find(self.root)
                     if p.rsplit("/", 1)[-1].startswith(_TMP)]
        for path in leftovers:
            self.fs.rm(path)
        return len(leftovers)

    def manifest(self) -> dict[str, dict]:
        """Manifest entries of every finished file, keyed by the file's path."""
        folder = self._path(MANIFEST)
        if not self.fs.exists(folder):
            return {}
        entries = {}
        for path in self.fs.ls(folder, detail=False):
            if path.endswith(".json") and not path.rsplit("/", 1)[-1].startswith(_TMP):
                with self.fs.open(path, "rb") as f:
                    entry = json.loads(f.read())
                entries[entry["path"]] = entry
        return entries

    def put_manifest(self, entry: dict) -> None:
        self.write_json(f"{MANIFEST}/{digest(entry['path'])}.json", entry)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the results folder for one run; a second run is refused with a clear message."""
        if not self.local:
            yield
            return
        path = self._path(LOCK)
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise ResultsError(f"{self.url} is being written by another `callmood score` "
                                   f"run ({holder}); wait for it to finish or use another "
                                   "--out") from None
            f.truncate(0)
            f.write(f"pid {os.getpid()}")
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)
