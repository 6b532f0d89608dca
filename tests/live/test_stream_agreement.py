"""A call scored live gets exactly the windows and probabilities its recording gets from
the nightly job, however its audio was cut into messages: both use one window planner."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
from batch_fixtures import SAMPLE_CALLS, TINY_MEL, make_model_folder

from callmood.batch.worker import score_file
from callmood.live.stream import StreamScorer
from callmood.model.folder import load_model_folder
from callmood.results.meta import CallMeta
from callmood.signal.features import CLIP_OVERLAP
from callmood.signal.segment import VadConfig

FEATURES = {"log-mel": TINY_MEL, "waveform": replace(TINY_MEL, frontend="waveform"),
            "prosody": replace(TINY_MEL, prosody_rows=16)}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """features -> a micro model folder: the ViT's log-mel (with prosody rows), or
    wav2vec2's waveform."""
    return {name: str(make_model_folder(tmp_path_factory.mktemp("model"), mel=mel))
            for name, mel in FEATURES.items()}


def in_order(windows, probs):
    order = sorted(range(len(windows)), key=lambda i: (windows[i][1], windows[i][0]))
    return [tuple(windows[i]) for i in order], np.asarray(probs)[order]


@pytest.mark.parametrize(("features", "seed"), [("log-mel", 0), ("log-mel", 1),
                                              ("waveform", 0), ("prosody", 0)])
def test_streaming_in_random_chunks_gives_the_nightly_windows_and_probabilities(model_dirs,
                                                                                 features,
                                                                                 seed):
    model_dir = model_dirs[features]
    path = SAMPLE_CALLS / "audio" / "call-0001.wav"  # live and nightly differed on it
    nightly = score_file(str(path), model_dir, VadConfig(), CLIP_OVERLAP, 3600, 16)
    assert nightly.error is None
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    scorer = StreamScorer(load_model_folder(model_dir),
                          CallMeta("c", None, None, np.datetime64("2026-01-01").item(), None),
                          audio.shape[1], rate)
    rng, at = np.random.default_rng(seed), 0
    while at < len(audio):  # chunks from one sample to two seconds
        size = int(rng.integers(1, 2 * rate))
        scorer.feed(audio[at:at + size].T)
        at += size
    scorer.finish()
    live = scorer.scored_call()
    windows, probs = in_order(nightly.windows, nightly.probs)
    live_windows, live_probs = in_order(live.windows, live.probs)
    assert len(windows) > 10
    assert live_windows == windows
    np.testing.assert_allclose(live_probs, probs, atol=1e-5)
    assert sorted(live.speech) == sorted(nightly.speech)



def test_with_speaker_mean_live_runs_the_channel_profile_the_nightly_job_takes_whole(
        tmp_path):
    """A model with mel.speaker_mean: the nightly job scores each window relative to its
    channel's profile over the whole call, live relative to the channel's windows so far,
    both drawn towards the training speakers' (features.prior_profile). So they agree on
    each channel's last window, not on its first."""
    mel = replace(TINY_MEL, speaker_mean=True)
    reference = tuple(np.linspace(-4.0, -9.0, mel.n_mels))
    model_dir = str(make_model_folder(tmp_path / "model", mel=mel,
                                      speaker_reference=reference))
    path = SAMPLE_CALLS / "audio" / "call-0001.wav"
    nightly = score_file(str(path), model_dir, VadConfig(), CLIP_OVERLAP, 3600, 16)
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    scorer = StreamScorer(load_model_folder(model_dir),
                          CallMeta("c", None, None, np.datetime64("2026-01-01").item(), None),
                          audio.shape[1], rate)
    for at in range(0, len(audio), rate):
        scorer.feed(audio[at:at + rate].T)
    scorer.finish()
    live = scorer.scored_call()
    windows, probs = in_order(nightly.windows, nightly.probs)
    live_windows, live_probs = in_order(live.windows, live.probs)
    assert live_windows == windows
    for channel in (0, 1):
        mine = [i for i, w in enumerate(windows) if w[0] == channel]
        assert len(mine) > 3
        np.testing.assert_allclose(live_probs[mine[-1]], probs[mine[-1]], atol=1e-5)
        assert not np.allclose(live_probs[mine[0]], probs[mine[0]], atol=1e-4)
