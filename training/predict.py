"""Emotion of whole audio files: clips of the model's length, probabilities averaged."""

from __future__ import annotations

import numpy as np
import torch

from callmood.training.audio import AudioError, load_mono
from callmood.training.features import fit_frames, log_mel
from callmood.training.model_folder import LoadedModel


def file_clips(mel: torch.Tensor, frames: int, pad_value: float) -> torch.Tensor:
    """(n_mels, T) -> (k, n_mels, frames) consecutive clips covering the whole file."""
    starts = range(0, max(1, mel.shape[-1] - frames // 2), frames)
    return torch.stack([fit_frames(mel[:, s:s + frames], frames, pad_value) for s in starts])


def predict_files(model: LoadedModel, files: list[str]) -> list[dict]:
    """One dict per file: emotion, confidence, probabilities, or an `error` message."""
    rows = []
    for path in files:
        try:
            waveform = load_mono(path, model.mel.sample_rate)
        except AudioError as err:
            rows.append({"file": str(path), "error": str(err), "error_kind": err.kind})
            continue
        clips = file_clips(log_mel(waveform, model.mel), model.mel.input_frames,
                           model.mel.pad_value)
        probs = model.predict_mels(clips).mean(axis=0)
        best = int(np.argmax(probs))
        rows.append({"file": str(path), "emotion": model.labels[best],
                     "confidence": float(probs[best]), "clips": len(clips),
                     "duration_s": round(len(waveform) / model.mel.sample_rate, 3),
                     "probabilities": dict(zip(model.labels, map(float, probs), strict=True))})
    return rows
