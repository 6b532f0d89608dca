"""Emotion of whole audio files: overlapping clips cover each file, probabilities averaged."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from callmood.model.folder import LoadedModel, ModelOutputError
from callmood.signal.audio import AudioError, load_mono
from callmood.signal.features import log_mel, utterance_clips
from callmood.workers import usable_cores


def idle_cores() -> int:
    """The cores this process may run on minus those other processes keep busy (the
    1-minute load average), at least 1."""
    cores = usable_cores()
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


def predict_files(model: LoadedModel, files: list[str]) -> Iterator[dict]:
    """One dict per file, as each is done: emotion, confidence, probabilities, or an
    `error` message and its `error_kind` (the audio's, or "model" for non-finite scores).

    The clips are those evaluation scores an utterance on (features.utterance_clips): a
    file shorter than the clip is repeated to fill it, a longer one is covered by clips
    that overlap, so every second of the file counts.
    """
    for path in files:
        try:
            waveform = load_mono(path, model.mel.sample_rate)
            clips = utterance_clips(log_mel(waveform, model.mel), model.mel.input_frames)
            probs = model.predict_mels(clips).mean(axis=0)
        except (AudioError, ModelOutputError) as err:
            yield {"file": str(path), "error": f"{path}: {err.detail}", "error_kind": err.kind}
            continue
        best = int(np.argmax(probs))
        yield {"file": str(path), "emotion": model.labels[best],
               "confidence": float(probs[best]), "clips": len(clips),
               "duration_s": round(len(waveform) / model.mel.sample_rate, 3),
               "probabilities": dict(zip(model.labels, map(float, probs), strict=True))}
