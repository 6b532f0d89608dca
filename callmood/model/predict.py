"""Emotion of whole utterances: the clips that cover each one scored, probabilities averaged.

`Inference` is the one way an utterance is scored: `callmood predict` (predict_files),
evaluation and training's validation all use it, so their figures cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from callmood.model.calibration import softmax
from callmood.model.folder import LoadedModel, ModelOutputError, predict_logits
from callmood.signal.audio import AudioError, load_mono
from callmood.signal.features import (
    MelConfig,
    Normalization,
    audio_features,
    band_levels,
    speaker_profiles,
    utterance_clips,
)
from callmood.signal.segment import utterance_audio
from callmood.workers import usable_cores


def idle_cores() -> int:
    """The cores this process may run on minus those other processes keep busy (the
    1-minute load average), at least 1."""
    cores = usable_cores()
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


@dataclass
class UtteranceScores:
    """Per utterance: probabilities averaged over its clips, and how many clips it had."""

    probs: np.ndarray  # (utterances, labels), softmax(logits / temperature)
    uncalibrated: np.ndarray | None  # the plain softmax averaged, when asked for
    clips: np.ndarray  # (utterances,)


@dataclass(frozen=True)
class Inference:
    """A network and what scoring needs with it: its log-mel settings, normalisation and
    calibrating temperature, the device and whether it runs in bf16.

    A model folder gives one (`of`); training builds one around the network it fits, on
    its device and precision, with no temperature yet.
    """

    network: torch.nn.Module
    mel: MelConfig
    norm: Normalization
    temperature: float = 1.0
    device: str | torch.device = "cpu"
    bf16: bool = False

    @classmethod
    def of(cls, model: LoadedModel) -> Inference:
        """A loaded model folder's, calibrated by its temperature, on the CPU."""
        return cls(model.model, model.mel, model.norm, model.card.temperature)

    def clip_logits(self, mels: list[torch.Tensor], speakers: list | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(clips, labels) logits of the clips that cover each utterance's log-mel
        (features.utterance_clips: a short one repeated to fill a clip, a long one covered
        by overlapping clips), and the utterance of each clip; one forward pass for all.

        `speakers`: who speaks each utterance (any hashable id). A model with
        mel.speaker_mean sees each utterance relative to the profile of all its
        speaker's utterances here; without ids, each utterance is its own speaker."""
        crops = [utterance_clips(m, self.mel.input_frames) for m in mels]
        clips = torch.cat(crops) if crops else torch.zeros(0)
        counts = [len(c) for c in crops]
        profiles = None
        if self.mel.speaker_mean and crops:
            profiles = speaker_profiles(
                torch.stack([band_levels(m) for m in mels]),
                list(range(len(mels))) if speakers is None else speakers,
                self.norm.speaker_reference)
            profiles = torch.repeat_interleave(profiles, torch.tensor(counts), dim=0)
        logits = predict_logits(self.network, clips, self.mel, self.norm, device=self.device,
                                bf16=self.bf16, speakers=profiles)
        return logits, np.repeat(np.arange(len(crops)), counts)

    def utterances(self, mels: list[torch.Tensor], uncalibrated: bool = False,
                   speakers: list | None = None) -> UtteranceScores:
        """Each utterance's probabilities: calibrated (softmax(logits / temperature)) and,
        with `uncalibrated`, the plain softmax too, averaged over its clips; `speakers` as
        for clip_logits."""
        logits, owners = self.clip_logits(mels, speakers)
        clips = np.bincount(owners, minlength=len(mels))

        def mean(values: np.ndarray) -> np.ndarray:
            out = np.zeros((len(mels), values.shape[1]), dtype=np.float64)
            np.add.at(out, owners, values)
            return out / clips[:, None]

        return UtteranceScores(mean(softmax(logits, self.temperature)),
                               mean(softmax(logits)) if uncalibrated else None, clips)


def predict_files(model: LoadedModel, files: list[str]) -> Iterator[dict]:
    """One dict per file, as each is done: emotion, confidence, probabilities, or an
    `error` message and its `error_kind` (the audio's, or "model" for non-finite scores).

    A file is one utterance (Inference.utterances), so every second of it counts.
    """
    inference = Inference.of(model)
    for path in files:
        try:
            waveform = load_mono(path, model.mel.sample_rate)
            scores = inference.utterances([audio_features(utterance_audio(waveform, model.mel),
                                                          model.mel)])
            probs = model.check_finite(scores.probs)[0]
        except (AudioError, ModelOutputError) as err:
            yield {"file": str(path), "error": f"{path}: {err.detail}", "error_kind": err.kind}
            continue
        best = int(np.argmax(probs))
        yield {"file": str(path), "emotion": model.labels[best],
               "confidence": float(probs[best]), "clips": int(scores.clips[0]),
               "duration_s": round(len(waveform) / model.mel.sample_rate, 3),
               "probabilities": dict(zip(model.labels, map(float, probs), strict=True))}
