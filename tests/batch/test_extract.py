"""batch/extract.py decodes a call in blocks: any block size gives exactly what decoding
the whole file at once gives, so memory can stay flat without changing a score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from batch_fixtures import DIALOGUE, synthetic_call

from callmood.batch.extract import extract_file
from callmood.signal.audio import AudioError, read_channels, resample
from callmood.signal.features import MelConfig
from callmood.signal.segment import VadConfig, WindowPlanner, window_mels

MEL = MelConfig(n_mels=64, input_frames=160)


def whole_file(path: str) -> tuple[list, torch.Tensor]:
    """The windows and log-mels computed from the whole decoded file in memory."""
    audio, rate = read_channels(path)
    audio = resample(audio, rate, MEL.sample_rate)
    windows, mels = [], []
    for channel, waveform in enumerate(audio):
        planner = WindowPlanner(MEL.sample_rate, MEL.clip_samples, 0.25, VadConfig())
        planned = planner.add(waveform) + planner.finish()
        windows += [(channel, a / MEL.sample_rate, b / MEL.sample_rate) for a, b in planned]
        mels.append(window_mels(waveform, planned, MEL,
                                round(VadConfig().clip_lookahead_s * MEL.sample_rate)))
    return windows, torch.cat(mels)


@pytest.mark.parametrize(("seconds", "turns"), [
    (1.2, [(0, 0.1, 0.6), (1, 0.5, 1.1)]),  # shorter than a clip (1.6 s here)
    (40.0, [(c, 2.5 * s, 2.5 * e) for c, s, e in DIALOGUE]),  # many clips
])
def test_any_block_size_gives_the_whole_file_result(tmp_path, seconds, turns):
    path = str(tmp_path / "call.wav")
    synthetic_call(tmp_path / "call.wav", turns, seconds, seed=3)
    windows, mels = whole_file(path)
    assert len({c for c, _, _ in windows}) == 2  # speech on both channels
    for block_s in (0.37, 2.9, 1000.0):
        found = extract_file(path, MEL, VadConfig(), 0.25, None, block_s=block_s)
        batches = list(found.mel_batches(MEL, batch_size=5, block_s=block_s))
        assert all(len(b) <= 5 for b in batches)
        streamed = torch.cat(batches)
        # the same windows, each with the same log-mel (extraction orders them by start)
        order = [windows.index(w) for w in found.windows]
        assert sorted(found.windows) == sorted(windows) and len(order) == len(windows)
        assert torch.allclose(streamed, mels[order], atol=1e-4), block_s
        assert found.duration_s == pytest.approx(seconds, abs=1e-3)


def test_a_file_that_shrinks_between_the_passes_is_an_error(tmp_path):
    path = tmp_path / "call.wav"
    synthetic_call(path, DIALOGUE, 40.0, seed=3)
    found = extract_file(str(path), MEL, VadConfig(), 0.25, None)
    synthetic_call(path, DIALOGUE[:1], 6.0, seed=3)
    with pytest.raises(AudioError, match="changed while it was read"):
        np.concatenate(list(found.mel_batches(MEL, 8)))
