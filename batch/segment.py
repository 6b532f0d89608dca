"""Where the speech is: an energy voice-activity detector and the windows that get scored.

The detector compares the energy of short frames with the channel's own noise floor, so
it needs no model and behaves the same on every machine. Its thresholds are declared in
VadConfig, apart from the model's settings. Speech regions longer than the model's clip
are cut into clips that overlap; shorter ones are scored as one clip padded with the log
of silence, exactly as features.fit_frames pads a short utterance in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from callmood.training.features import MelConfig, log_mel


@dataclass(frozen=True)
class VadConfig:
    """Thresholds of the energy detector (times in seconds, levels in dB)."""

    frame_s: float = 0.02
    noise_percentile: float = 10.0  # the quietest 10% of frames estimate the noise floor
    snr_db: float = 9.0  # speech frames are this far above the noise floor ...
    floor_db: float = -60.0  # ... and above this absolute level (dBFS)
    min_speech_s: float = 0.25  # shorter bursts are clicks or breaths
    min_silence_s: float = 0.35  # shorter pauses inside speech are bridged
    pad_s: float = 0.05  # kept around each region for soft onsets and endings

    def __post_init__(self):
        if self.frame_s <= 0 or not 0 <= self.noise_percentile <= 100:
            raise ValueError(f"invalid VAD settings: {self}")


def detect_speech(waveform: np.ndarray, rate: int, vad: VadConfig) -> list[tuple[int, int]]:
    """Speech regions of one channel as (start, end) sample indices, in order."""
    frame = max(1, round(vad.frame_s * rate))
    n = len(waveform) // frame
    if n == 0:
        return []
    frames = waveform[:n * frame].reshape(n, frame).astype(np.float64)
    level = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    threshold = max(np.percentile(level, vad.noise_percentile) + vad.snr_db, vad.floor_db)
    active = np.concatenate([[False], level > threshold, [False]])
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))
    runs = list(zip(edges[::2], edges[1::2], strict=True))  # [start, end) in frames

    min_gap = vad.min_silence_s / vad.frame_s
    merged: list[list[int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] < min_gap:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    pad = round(vad.pad_s * rate)
    return [(max(0, start * frame - pad), min(len(waveform), end * frame + pad))
            for start, end in merged if (end - start) * vad.frame_s >= vad.min_speech_s]


def plan_windows(regions: list[tuple[int, int]], clip: int,
                 overlap: float) -> list[tuple[int, int]]:
    """Cut regions into (start, end) windows of at most `clip` samples.

    A region longer than a clip gets evenly spaced windows that overlap by at least
    `overlap` (a fraction of the clip), the last one ending where the region ends.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    hop = max(1, int(clip * (1 - overlap)))
    windows = []
    for start, end in regions:
        if end - start <= clip:
            windows.append((start, end))
            continue
        count = math.ceil((end - start - clip) / hop) + 1
        for s in np.linspace(start, end - clip, count).round().astype(int):
            windows.append((int(s), int(s) + clip))
    return windows


def window_mels(waveform: np.ndarray, windows: list[tuple[int, int]],
                mel: MelConfig) -> torch.Tensor:
    """(W, n_mels, input_frames) log-mels of the windows of one channel at mel.sample_rate.

    A window shorter than a clip is scored inside a clip-long span of the audio around
    it (centred, kept within the file), like the training clips, which are crops of whole
    utterances with their pauses; padding it with digital silence instead would show the
    model an input it never saw. Only a file shorter than a clip is padded, its missing
    frames set to the pad value as features.fit_frames does.
    """
    clip = mel.clip_samples
    clips = np.zeros((len(windows), clip), dtype=np.float32)
    lengths = []
    for i, (start, end) in enumerate(windows):
        centre = (start + end) // 2
        first = min(max(0, centre - clip // 2), max(0, len(waveform) - clip)) \
            if end - start < clip else start
        piece = waveform[first:first + clip]
        clips[i, :len(piece)] = piece
        lengths.append(len(piece))
    mels = log_mel(clips, mel)
    for i, length in enumerate(lengths):
        if length < clip:
            mels[i, :, 1 + length // mel.hop_length:] = mel.pad_value
    return mels
