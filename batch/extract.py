"""Per-file feature extraction: decode, resample, find speech, log-mels of the windows.

Runs in the parallel workers, so everything here takes and returns plain picklable values.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import torch
from callmood.batch.scan import file_sha256
from callmood.batch.segment import VadConfig, detect_speech, plan_windows, window_mels
from callmood.training.audio import AudioError, check_not_silent, read_channels, resample
from callmood.training.features import MelConfig


@dataclass
class Extracted:
    """One file's speech: VAD regions, the windows to score and their log-mels."""

    sha256: str
    duration_s: float
    channels: int
    speech: list[tuple[int, float, float]]  # (channel, start_s, end_s) VAD regions
    windows: list[tuple[int, float, float]]  # (channel, start_s, end_s), one per mel
    mels: torch.Tensor  # (len(windows), n_mels, input_frames)


def check_wav_complete(path: str) -> None:
    """Refuse a WAV file shorter than its header says (libsndfile reads what is there).

    A truncated copy or an upload cut short would otherwise be scored as a shorter call.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"RIFF":
            return
        size = os.fstat(f.fileno()).st_size
        f.seek(12)
        while header := f.read(8):
            if len(header) < 8:
                return
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                declared, present = length, size - f.tell()
                if present < declared:
                    raise AudioError(path, "truncated",
                                     f"file is truncated: the WAV header declares {declared} "
                                     f"bytes of audio, the file holds {present}")
                return
            f.seek(length + length % 2, os.SEEK_CUR)


def extract_file(path: str, mel: MelConfig, vad: VadConfig, overlap: float,
                 max_seconds: float | None) -> Extracted:
    """Raises AudioError for files that cannot be scored (unreadable, silent, no speech)."""
    sha = file_sha256(path)
    check_wav_complete(path)
    audio, rate = read_channels(path, max_seconds=max_seconds)
    check_not_silent(audio, path)
    duration = audio.shape[1] / rate
    audio = resample(audio, rate, mel.sample_rate)
    speech, windows, mels = [], [], []
    for channel, waveform in enumerate(audio):
        regions = detect_speech(waveform, mel.sample_rate, vad)
        planned = plan_windows(regions, mel.clip_samples, overlap)
        speech += [(channel, a / mel.sample_rate, b / mel.sample_rate) for a, b in regions]
        windows += [(channel, a / mel.sample_rate, b / mel.sample_rate) for a, b in planned]
        if planned:
            mels.append(window_mels(waveform, planned, mel))
    if not windows:
        raise AudioError(path, "no_speech", "no speech found (only noise or silence)")
    return Extracted(sha, duration, audio.shape[0], speech, windows, torch.cat(mels))
