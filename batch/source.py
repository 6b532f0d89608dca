"""Where a recording is read from: a local path (callmood/signal/audio.py's decoder, as
ever) or an object in an object store (an fsspec URL such as ``s3://bucket/key``), read
by streaming it: ranged reads of READ_BLOCK bytes through fsspec, never a whole local
copy, so a worker's memory is the same for a call in a bucket as for a file on disk.

An object is described and decoded by the same code as a local file (signal.audio's
describe and decode_blocks, on the open object), with the same AudioError kinds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from callmood.digest import file_sha256, sha256_hex
from callmood.results.location import explain, is_url, open_location
from callmood.signal.audio import (
    AudioError,
    AudioInfo,
    check_length,
    decode_blocks,
    describe,
    probe,
)

READ_BLOCK = 4 << 20  # bytes per ranged read of an object (its read-ahead buffer)


def _open(url: str, storage_options: dict | None):
    fs, path = open_location(url, storage_options)
    try:
        return fs.open(path, "rb", block_size=READ_BLOCK, cache_type="readahead")
    except FileNotFoundError:
        raise AudioError(url, "missing", "object not found") from None
    except PermissionError as err:
        raise AudioError(url, "permission", str(explain(url, err))) from None


def content_sha256(path: str, storage_options: dict | None = None) -> str:
    """The sha256 of a recording's bytes, read in blocks wherever it lives."""
    if not is_url(path):
        return file_sha256(path)
    with _open(path, storage_options) as f:
        return sha256_hex(f)


class _Hashed:
    """A seekable binary file that hashes its bytes as they are read: those read in order
    from the start are hashed once, and `sha256` reads only what the reader skipped. (No
    `readinto`, so soundfile reads through `read`.)"""

    def __init__(self, raw: BinaryIO):
        self.raw, self.digest, self.hashed = raw, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        at = self.raw.tell()
        data = self.raw.read(size)
        if at <= self.hashed < at + len(data):
            self.digest.update(data[self.hashed - at:])
            self.hashed = at + len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def sha256(self) -> str:
        self.raw.seek(self.hashed)
        while self.read(1 << 20):  # the rest, hashed as it is read
            pass
        return self.digest.hexdigest()


class Recording:
    """A recording open once: its header, its samples in blocks, and the sha256 of its
    bytes. An object in a store is hashed as it is decoded, so it is fetched once for all
    three (up to READ_BLOCK bytes in one ranged read). A local file is decoded by
    libsndfile from its path and hashed apart (from the page cache): read through Python,
    a signal's exception (the worker's time limit) would be lost in soundfile's callback,
    as it is for an object (batch/worker.py's time limit raises it again once out)."""

    def __init__(self, path: str, info: AudioInfo, hashed: _Hashed | None = None):
        self.path, self.info, self._object = path, info, hashed  # hashed: an object's

    def blocks(self, sample_rate: int, block_seconds: float) -> Iterator[np.ndarray]:
        """(channels, samples) float32 blocks at `sample_rate` (signal.audio.read_blocks)."""
        if self._object is None:
            yield from decode_blocks(self.path, self.path, sample_rate, block_seconds)
            return
        self._object.seek(0)
        yield from decode_blocks(self._object, self.path, sample_rate, block_seconds)

    def sha256(self) -> str:
        return file_sha256(self.path) if self._object is None else self._object.sha256()

    def kept_bytes(self) -> bytes | None:
        """The whole object, if one ranged read fetched it all (at most READ_BLOCK bytes),
        from that read's buffer, no new request: a second pass decodes it from memory.
        None for a local file or a larger object (read again, streaming)."""
        if self._object is None or self._object.raw.size > READ_BLOCK:
            return None
        self._object.raw.seek(0)
        return self._object.raw.read()


@contextlib.contextmanager
def open_recording(path: str, storage_options: dict | None = None) -> Iterator[Recording]:
    """A local path or an fsspec URL, open as a Recording; AudioError for a missing, empty,
    non-audio or truncated one."""
    if not is_url(path):
        yield Recording(path, probe(path))
        return
    with _open(path, storage_options) as raw:
        hashed = _Hashed(raw)
        yield Recording(path, describe(hashed, path, raw.size), hashed)


def read_recording_blocks(path: str, sample_rate: int, block_seconds: float,
                          max_seconds: float | None = None,
                          storage_options: dict | None = None,
                          kept: bytes | None = None) -> Iterator[np.ndarray]:
    """(channels, samples) float32 blocks at `sample_rate`, as signal.audio.read_blocks
    gives them for a local file; from `kept` (Recording.kept_bytes) if given."""
    if kept is not None:
        yield from decode_blocks(io.BytesIO(kept), path, sample_rate, block_seconds)
        return
    with open_recording(path, storage_options) as recording:
        check_length(recording.info, max_seconds)
        yield from recording.blocks(sample_rate, block_seconds)
