"""Where a recording is read from: a local path (callmood/signal/audio.py's decoder, as
ever) or an object in an object store (an fsspec URL such as ``s3://bucket/key``), read
by streaming it: ranged reads of READ_BLOCK bytes through fsspec, never a whole local
copy, so a worker's memory is the same for a call in a bucket as for a file on disk.

An object is described and decoded by the same code as a local file (signal.audio's
describe and decode_blocks, on the open object), with the same AudioError kinds.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    read_blocks,
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


def probe_recording(path: str, storage_options: dict | None = None) -> AudioInfo:
    """The header of a recording; AudioError for a missing, empty, non-audio or truncated
    one."""
    if not is_url(path):
        return probe(path)
    with _open(path, storage_options) as f:
        return describe(f, path, f.size)


def read_recording_blocks(path: str, sample_rate: int, block_seconds: float,
                          max_seconds: float | None = None,
                          storage_options: dict | None = None) -> Iterator[np.ndarray]:
    """(channels, samples) float32 blocks at `sample_rate`, as signal.audio.read_blocks
    gives them for a local file."""
    if not is_url(path):
        yield from read_blocks(path, sample_rate, block_seconds, max_seconds)
        return
    check_length(probe_recording(path, storage_options), max_seconds)
    with _open(path, storage_options) as raw:
        yield from decode_blocks(raw, path, sample_rate, block_seconds)
