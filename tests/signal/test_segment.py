"""Voice-activity detection and windowing of speech regions into model clips."""

from __future__ import annotations

import math

import numpy as np
import soundfile as sf
import torch
from batch_fixtures import TINY_MEL, voiced

from callmood.signal.features import MelConfig, fit_frames, log_mel
from callmood.signal.segment import (
    VadConfig,
    WindowPlanner,
    detect_speech,
    speech_span,
    take_bounds,
    utterance_audio,
    window_mels,
)


def test_detects_bursts_over_noise_within_tolerance():
    rate, rng = 16000, np.random.default_rng(0)
    audio = rng.normal(0, 10 ** (-55 / 20), rate * 12).astype(np.float32)
    truth = [(1.0, 3.0), (3.2, 4.0), (6.0, 9.5)]  # the first two are one region (short gap)
    for start, end in truth:
        burst = voiced(end - start, rate, rng)
        audio[int(start * rate):int(start * rate) + len(burst)] += burst
    regions = [(a / rate, b / rate) for a, b in detect_speech(audio, rate, VadConfig())]
    assert len(regions) == 2
    for (start, end), (found_start, found_end) in zip([(1.0, 4.0), (6.0, 9.5)], regions,
                                                      strict=True):
        assert abs(found_start - start) < 0.1 and abs(found_end - end) < 0.1


def test_an_utterance_is_trimmed_to_its_speech_only_when_the_model_asks():
    rate, rng = 16000, np.random.default_rng(4)
    audio = rng.normal(0, 10 ** (-55 / 20), int(rate * 4.0)).astype(np.float32)
    for start, end in ((1.0, 1.8), (2.1, 2.9)):  # two words, a short pause between
        burst = voiced(end - start, rate, rng)
        audio[int(start * rate):int(start * rate) + len(burst)] += burst
    span = speech_span(audio, rate)
    assert abs(len(span) / rate - 1.9) < 0.2  # from the first word to the last
    regions = detect_speech(audio, rate, VadConfig())
    assert np.array_equal(span, audio[regions[0][0]:regions[-1][1]])
    assert np.array_equal(utterance_audio(audio, MelConfig(trim_silence=True)), span)
    assert utterance_audio(audio, MelConfig()) is audio
    quiet = rng.normal(0, 1e-3, rate).astype(np.float32)
    assert speech_span(quiet, rate) is quiet  # no speech found: all of it


def test_silence_and_clicks_are_not_speech():
    rate = 16000
    audio = np.random.default_rng(1).normal(0, 1e-3, rate * 5).astype(np.float32)
    audio[rate:rate + 800] += 0.5  # a 50 ms click
    assert detect_speech(audio, rate, VadConfig()) == []
    assert detect_speech(np.zeros(10, np.float32), rate, VadConfig()) == []


def test_long_regions_become_overlapping_clips_that_cover_them():
    rate, rng = 16000, np.random.default_rng(3)
    clip = rate  # one-second clips
    audio = rng.normal(0, 10 ** (-55 / 20), rate * 12).astype(np.float32)
    for start, end in ((1.0, 1.6), (4.0, 7.4)):
        burst = voiced(end - start, rate, rng)
        audio[int(start * rate):int(start * rate) + len(burst)] += burst
    planner = WindowPlanner(rate, clip, overlap=0.25, vad=VadConfig())
    windows = planner.add(audio) + planner.finish()
    (short_region, long_region) = planner.speech
    assert windows[0] == short_region  # a short region is one window
    long = windows[1:]
    assert long[0][0] == long_region[0] and long[-1][1] == long_region[1]
    assert all(end - start == clip for start, end in long)
    assert all(b[0] - a[0] <= 0.75 * clip for a, b in zip(long, long[1:], strict=False))


def test_the_planner_decides_the_same_whatever_blocks_the_audio_comes_in():
    rate, rng = 8000, np.random.default_rng(4)
    audio = rng.normal(0, 10 ** (-55 / 20), rate * 30).astype(np.float32)
    for start in range(1, 28, 3):
        burst = voiced(rng.uniform(0.3, 2.5), rate, rng)
        audio[start * rate:start * rate + len(burst)] += burst
    whole = WindowPlanner(rate, rate, 0.25, VadConfig())
    expected = whole.add(audio) + whole.finish()
    assert len(whole.speech) >= 8
    for seed in range(3):
        planner, windows, at = WindowPlanner(rate, rate, 0.25, VadConfig()), [], 0
        sizes = np.random.default_rng(seed).integers(1, 3000, size=len(audio))
        for size in sizes:
            windows += planner.add(audio[at:at + size])
            at += size
            if at >= len(audio):
                break
        assert windows + planner.finish() == expected and planner.speech == whole.speech


def test_window_mels_match_the_training_features():
    """Each window's log-mel is the training feature code's over a clip of the file's audio;
    a short window gets the audio around it (centred, kept inside the file)."""
    rng = np.random.default_rng(2)
    clip = TINY_MEL.clip_samples
    waveform = rng.normal(0, 0.1, clip * 2).astype(np.float32)
    centred = clip + 1500 - clip // 2  # start of the span centred on (clip, clip + 3000)
    windows = [(100, 100 + clip), (clip, clip + 3000), (0, 7), (2 * clip - 50, 2 * clip)]
    spans = [(100, 100 + clip), (centred, centred + clip), (0, clip), (clip, 2 * clip)]
    mels = window_mels(waveform, windows, TINY_MEL)
    assert mels.shape == (4, TINY_MEL.n_mels, TINY_MEL.input_frames)
    for mel, (start, end) in zip(mels, spans, strict=True):
        expected = log_mel(waveform[start:end], TINY_MEL)
        torch.testing.assert_close(mel, expected, atol=1e-4, rtol=1e-4)


def test_a_file_shorter_than_a_clip_is_repeated_like_training():
    waveform = np.random.default_rng(3).normal(0, 0.1, 3001).astype(np.float32)
    mels = window_mels(waveform, [(0, 3001), (1000, 2000)], TINY_MEL)
    expected = fit_frames(log_mel(waveform, TINY_MEL), TINY_MEL.input_frames)
    for mel in mels:
        torch.testing.assert_close(mel, expected, atol=1e-4, rtol=1e-4)
    # no frame holds the log of digital silence
    assert mels.min() > math.log(TINY_MEL.log_floor) + 10


def test_a_takes_speech_runs_from_its_first_to_its_last_run_of_80_ms():
    power = np.full(300, -60.0)
    power[100:200] = 0.0
    assert take_bounds(power, 100.0) == (100, 200)
    power[20:27] = 0.0  # a click of 70 ms before the take: not its start
    power[250:258] = -30.0  # a soft release of 80 ms, 30 dB under: speech still
    power[280:290] = -36.0  # 36 dB under: silence
    assert take_bounds(power, 100.0) == (100, 258)
    assert take_bounds(power, 50.0) == (20, 258)  # at 20 ms frames the click is 140 ms
    clicks = np.full(100, -60.0)
    clicks[[10, 40]] = 0.0
    assert take_bounds(clicks, 100.0) == (10, 41)  # no run long enough: all loud frames
    assert take_bounds(np.full(50, np.nan), 100.0) == (0, 50)  # nothing finite: all


def test_a_real_takes_speech_is_where_it_has_always_been_cut(shared_dir):
    """The call benchmark's generator cuts its source takes by this rule: a RAVDESS take
    (3.3 s, about a second of silence at each end) is cut at 1.00 to 2.28 s, as the
    generator cut it before the rule moved to callmood.signal (a change here changes
    every generated call)."""
    audio, rate = sf.read(shared_dir / "data/ravdess/Actor_01/03-01-01-01-01-01-01.flac",
                          dtype="float32")
    frame = rate // 100
    frames = len(audio) // frame
    power = np.mean(audio[:frames * frame].reshape(frames, frame) ** 2, axis=1) + 1e-12
    assert take_bounds(10 * np.log10(power), rate / frame) == (100, 228)
