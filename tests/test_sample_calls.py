"""The committed sample calls: files, metadata, ground truth, and VAD against it."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest
from batch_fixtures import SAMPLE_CALLS

from callmood.signal.audio import probe, read_channels, resample
from callmood.signal.segment import VadConfig, detect_speech


def read_csv(name):
    with open(SAMPLE_CALLS / name, newline="") as f:
        return list(csv.DictReader(f))


CALLS = read_csv("calls.csv")
TRUTH = read_csv("ground_truth.csv")


def test_calls_csv_describes_every_recording():
    files = sorted(p.relative_to(SAMPLE_CALLS).as_posix()
                   for p in (SAMPLE_CALLS / "audio").iterdir())
    assert sorted(c["file"] for c in CALLS) == files
    assert 10 <= len(CALLS) <= 15
    assert sum((SAMPLE_CALLS / f).stat().st_size for f in files) < 10e6
    infos = [probe(SAMPLE_CALLS / f) for f in files]
    assert all(30 <= i.duration_s <= 180 for i in infos)
    subtypes = {(i.format, i.subtype, i.sample_rate, i.channels) for i in infos}
    assert ("WAV", "ULAW", 8000, 2) in subtypes and len(subtypes) >= 4
    assert len({c["agent_id"] for c in CALLS}) >= 3 and len({c["queue"] for c in CALLS}) >= 2


def test_ground_truth_uses_only_the_held_out_actors():
    assert {t["speaker"] for t in TRUTH} <= {"ravdess:01", "ravdess:11", "ravdess:20",
                                             "ravdess:21"}
    assert "calm" not in {t["emotion"] for t in TRUTH}
    assert {t["call_id"] for t in TRUTH} == {c["call_id"] for c in CALLS}


@pytest.mark.parametrize("call", CALLS, ids=lambda c: c["call_id"])
def test_vad_finds_the_inserted_utterances(call):
    audio, rate = read_channels(SAMPLE_CALLS / call["file"])
    audio = resample(audio, rate, 16000)
    truth = defaultdict(list)
    for t in TRUTH:
        if t["call_id"] == call["call_id"]:
            truth[int(t["channel"])].append((float(t["start_s"]), float(t["end_s"])))
    grid = np.arange(audio.shape[1]) / 16000
    for channel, utterances in truth.items():
        found = [(a / 16000, b / 16000)
                 for a, b in detect_speech(audio[channel], 16000, VadConfig())]
        speech = np.zeros(len(grid), bool)
        detected = np.zeros(len(grid), bool)
        for a, b in utterances:
            speech |= (grid >= a) & (grid < b)
        for a, b in found:
            detected |= (grid >= a) & (grid < b)
        assert (speech & detected).sum() / speech.sum() > 0.65  # recall
        assert (speech & detected).sum() / detected.sum() > 0.9  # precision
        onset_errors = []
        for a, b in utterances:  # every utterance is found, near where it starts
            starts = [fa for fa, fb in found if fa < b and fb > a]
            assert starts, (channel, a, b)
            onset_errors.append(max(0.0, min(starts) - a))
        # a breath of 80 ms or more before the voice is the truth's start: at most ~1 s early
        assert max(onset_errors) < 1.0 and np.median(onset_errors) < 0.1, onset_errors
