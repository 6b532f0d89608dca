"""Decoding audio files into float waveforms, with errors that name the file and the problem.

Training and batch scoring both read audio through this module, so a file that one
rejects the other rejects with the same words.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

# A file whose peak never reaches this (about -80 dBFS) carries no usable speech.
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """A file that cannot be used as audio; `kind` is a short machine-readable reason."""

    def __init__(self, path: str | Path, kind: str, detail: str):
        self.path = str(path)
        self.kind = kind
        self.detail = detail
        super().__init__(f"{path}: {detail}")


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def unreadable_by_user(path: str | Path, err: PermissionError) -> AudioError:
    return AudioError(path, "permission", f"cannot be read by this user ({err.strerror}); "
                      "check the file's owner and mode. It is tried again next run")


def probe(path: str | Path) -> AudioInfo:
    """Read the header only; raises AudioError for missing, non-audio or empty files."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "missing", "file not found")
    try:
        with open(path, "rb") as f:
            return describe(f, path, os.fstat(f.fileno()).st_size)
    except PermissionError as err:
        raise unreadable_by_user(path, err) from None


def describe(source: BinaryIO, path: str | Path, size: int) -> AudioInfo:
    """The header of a recording open as `source` (seekable, `size` bytes), wherever it
    lives (probe: a local file; batch/source.py: an object in a store); AudioError for
    an empty, non-audio or truncated one."""
    if size == 0:
        raise AudioError(path, "empty", "file is empty (0 bytes)")
    try:
        info = sf.info(source)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, "unreadable", f"not a readable audio file ({err})") from None
    if info.frames <= 0:
        raise AudioError(path, "empty", "audio file holds no samples")
    check_wav_complete(source, path, size)
    return AudioInfo(str(path), info.samplerate, info.channels, info.frames, info.format,
                     info.subtype)


# the data size a recorder writes while it streams a WAV whose length it cannot know yet;
# libsndfile then reads to the end of the file
STREAMED_SIZE = 0xFFFFFFFF


def check_wav_complete(f: BinaryIO, path: str | Path, size: int) -> None:
    """Refuse a WAV file (open as `f`, `size` bytes) shorter than its header says
    (libsndfile reads what is there).

    A truncated copy or an upload cut short would otherwise be scored as a shorter call.
    """
    f.seek(0)
    if f.read(4) != b"RIFF":
        return
    f.seek(12)
    while header := f.read(8):
        if len(header) < 8:
            return
        chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk == b"data":
            if length == STREAMED_SIZE:
                return
            declared, present = length, size - f.tell()
            if present < declared:
                raise AudioError(path, "truncated",
                                 f"file is truncated: the WAV header declares {declared} "
                                 f"bytes of audio, the file holds {present}")
            return
        f.seek(length + length % 2, os.SEEK_CUR)


def check_length(info: AudioInfo, max_seconds: float | None) -> None:
    if max_seconds is not None and info.duration_s > max_seconds:
        raise AudioError(info.path, "too_long",
                         f"{info.duration_s / 3600:.1f} h of audio exceeds the limit of "
                         f"{max_seconds / 3600:.1f} h")


def _check_finite(data: np.ndarray, path: str | Path) -> None:
    if not np.isfinite(data).all():
        raise AudioError(path, "corrupt", "audio holds NaN or infinite samples")


def read_channels(path: str | Path, max_seconds: float | None = None,
                  ) -> tuple[np.ndarray, int]:
    """Decode every channel: float32 array of shape (channels, samples) and the sample rate."""
    info = probe(path)
    check_length(info, max_seconds)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, "corrupt", f"audio data cannot be decoded ({err})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "empty", "audio file holds no samples")
    _check_finite(data, path)
    return np.ascontiguousarray(data.T), rate


def read_blocks(path: str | Path, sample_rate: int, block_seconds: float,
                max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Decode in (channels, samples) float32 blocks at `sample_rate`, so that memory does
    not grow with the file. Concatenated, the blocks are exactly
    resample(*read_channels(path)) (soxr resamples a stream as it does a whole array);
    the errors are those of read_channels."""
    check_length(probe(path), max_seconds)
    yield from decode_blocks(str(path), path, sample_rate, block_seconds)


def decode_blocks(source: str | BinaryIO, path: str | Path, sample_rate: int,
                  block_seconds: float) -> Iterator[np.ndarray]:
    """read_blocks' decoding of `source` (a local file's name or an open binary file,
    e.g. an object streamed from a store), with its errors naming `path`."""
    decoded = 0
    try:
        with sf.SoundFile(source) as f:
            stream = None if f.samplerate == sample_rate else soxr.ResampleStream(
                f.samplerate, sample_rate, f.channels, dtype="float32")
            size = max(1, int(block_seconds * f.samplerate))
            while True:
                data = f.read(size, dtype="float32", always_2d=True)
                last = len(data) < size
                _check_finite(data, path)
                decoded += len(data)
                if stream is not None:
                    data = stream.resample_chunk(data, last=last)
                if len(data):
                    yield np.ascontiguousarray(data.T)
                if last:
                    break
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, "corrupt", f"audio data cannot be decoded ({err})") from None
    if decoded == 0:
        raise AudioError(path, "empty", "audio file holds no samples")


def resample(waveform: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample along the last axis (soxr, high quality)."""
    if rate_in == rate_out:
        return waveform
    if waveform.ndim == 1:
        return soxr.resample(waveform, rate_in, rate_out).astype(np.float32, copy=False)
    out = soxr.resample(waveform.T, rate_in, rate_out)
    return np.ascontiguousarray(out.T, dtype=np.float32)


def check_not_silent(waveform: np.ndarray, path: str | Path) -> None:
    if waveform.size == 0:
        raise AudioError(path, "empty", "audio file holds no samples")
    check_peak(float(np.max(np.abs(waveform))), path)


def check_peak(peak: float, path: str | Path) -> None:
    if peak < SILENCE_PEAK:
        raise AudioError(path, "silent", "audio is silent (peak below -80 dBFS)")


def load_mono(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode, mix to mono, resample to `sample_rate`; reject silent audio."""
    channels, rate = read_channels(path)
    mono = channels.mean(axis=0)
    check_not_silent(mono, path)
    return resample(mono, rate, sample_rate)
