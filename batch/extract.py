"""Per-file feature extraction: decode, resample, find speech, log-mels of the windows.

Runs in the parallel workers, so everything here takes and returns plain picklable values.
"""

from __future__ import annotations

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


def extract_file(path: str, mel: MelConfig, vad: VadConfig, overlap: float,
                 max_seconds: float | None) -> Extracted:
    """Raises AudioError for files that cannot be scored (unreadable, silent, no speech)."""
    sha = file_sha256(path)
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
