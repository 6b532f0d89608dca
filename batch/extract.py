"""Per-file feature extraction: decode, resample, find speech, log-mels of the windows.

Runs in the parallel workers. Memory does not grow with the length of a call: the file
is decoded twice in blocks of BLOCK_S seconds, once to find the speech (frame levels
are all that is kept) and once to cut the windows' clips, which leave in batches
(`Extracted.mel_batches`) to be scored before the next are cut. A 6-hour call needs
about what a 10-minute one does (benchmarks/bench_long_calls.py). An object in a store
small enough for one ranged read (batch/source.py's READ_BLOCK, 4 MiB: some 4 minutes of
stereo G.711) is kept in memory between the passes instead of fetched again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from callmood.batch.source import open_recording, read_recording_blocks
from callmood.results.scored import Segment
from callmood.signal.audio import AudioError, check_length, check_peak
from callmood.signal.features import MelConfig, audio_features, band_levels, speaker_profiles
from callmood.signal.segment import VadConfig, WindowPlanner, clip_start, window_mels

BLOCK_S = 60.0


@dataclass
class Extracted:
    """One file's speech: VAD regions and the windows to score, ordered by where their
    clips start."""

    path: str
    sha256: str
    duration_s: float
    channels: int
    samples: int  # per channel, at the model's sample rate
    speech: list[Segment]  # the VAD's regions
    windows: list[Segment]
    clips: list[tuple[int, int]]  # (channel, first sample of the clip), one per window
    max_seconds: float | None
    storage_options: dict | None = None  # of a recording in an object store
    kept: bytes | None = None  # a small object's bytes, read once (Recording.kept_bytes)

    def mel_batches(self, mel: MelConfig, batch_size: int,
                    block_s: float = BLOCK_S) -> Iterator[torch.Tensor]:
        """(<= batch_size, n_mels, input_frames) log-mels of the windows, in order."""
        clip = mel.clip_samples
        blocks = read_recording_blocks(self.path, mel.sample_rate, block_s, self.max_seconds,
                                       self.storage_options, self.kept)
        if self.samples < clip:  # a recording shorter than a clip is repeated to fill one
            audio = np.concatenate(list(blocks), axis=1)
            for channel in range(self.channels):
                count = sum(c == channel for c, _ in self.clips)
                if count:
                    yield window_mels(audio[channel], [(0, self.samples)] * count, mel)
            return
        buffer, offset, done, pending = np.zeros((self.channels, 0), np.float32), 0, 0, []
        for block in blocks:
            buffer = np.concatenate([buffer, block], axis=1)
            end = offset + buffer.shape[1]
            while done < len(self.clips) and self.clips[done][1] + clip <= end:
                channel, first = self.clips[done]
                pending.append(buffer[channel, first - offset:first - offset + clip])
                done += 1
                if len(pending) == batch_size:
                    yield audio_features(np.stack(pending), mel)
                    pending = []
            keep = min(self.clips[done][1], end) if done < len(self.clips) else end
            buffer, offset = buffer[:, keep - offset:], keep
        if pending:
            yield audio_features(np.stack(pending), mel)
        if done < len(self.clips):
            raise AudioError(self.path, "corrupt", "the audio changed while it was read")

    def window_speaker_profiles(self, mel: MelConfig, batch_size: int,
                                reference: tuple[float, ...] | None) -> torch.Tensor:
        """(windows, n_mels, 1): each window's speaker profile (features.speaker_profiles),
        its channel's over all the channel's windows: one channel is one speaker on one
        line. Costs one more pass over the recording, for models with mel.speaker_mean."""
        levels = torch.cat([band_levels(m) for m in self.mel_batches(mel, batch_size)])
        return speaker_profiles(levels, [c for c, _ in self.clips], reference)


def extract_file(path: str, mel: MelConfig, vad: VadConfig, overlap: float,
                 max_seconds: float | None, block_s: float = BLOCK_S,
                 storage_options: dict | None = None) -> Extracted:
    """Raises AudioError for files that cannot be scored (unreadable, silent, no speech).
    `path` may be an fsspec URL (batch/source.py)."""
    clip = mel.clip_samples
    planners: list[WindowPlanner] = []
    planned: list[tuple[int, int, int]] = []  # (channel, start, end) windows
    peak = 0.0
    with open_recording(path, storage_options) as recording:  # one read: decoded, hashed
        check_length(recording.info, max_seconds)  # the header first: a huge file is not read
        for block in recording.blocks(mel.sample_rate, block_s):
            planners = planners or [WindowPlanner(mel.sample_rate, clip, overlap, vad)
                                    for _ in block]
            for channel, (planner, samples) in enumerate(zip(planners, block, strict=True)):
                planned += [(channel, a, b) for a, b in planner.add(samples)]
            peak = max(peak, float(np.abs(block).max(initial=0.0)))
        sha = recording.sha256()
        kept = recording.kept_bytes()
    check_peak(peak, path)
    for channel, planner in enumerate(planners):
        planned += [(channel, a, b) for a, b in planner.finish()]
    if not planned:
        raise AudioError(path, "no_speech", "no speech found (only noise or silence)")
    samples, rate = planners[0].samples, mel.sample_rate
    lookahead = round(vad.clip_lookahead_s * rate)
    starts = [0 if samples < clip else clip_start(a, b, clip, samples, lookahead)
              for _, a, b in planned]
    order = sorted(range(len(planned)), key=lambda i: (starts[i], planned[i][0]))
    speech = [Segment(channel, a / rate, b / rate) for channel, planner in enumerate(planners)
              for a, b in planner.speech]
    return Extracted(path, sha, samples / rate, len(planners), samples, speech,
                     [Segment(planned[i][0], planned[i][1] / rate, planned[i][2] / rate)
                      for i in order],
                     [(planned[i][0], starts[i]) for i in order], max_seconds,
                     storage_options, kept)
