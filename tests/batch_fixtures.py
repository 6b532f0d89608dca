"""Shared helpers of the batch tests: a tiny model folder and small synthetic calls."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from callmood.model.folder import ModelCard, save_model_folder
from callmood.signal.features import MelConfig, Normalization
from callmood.training.model import build_model

LABELS = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
TINY_MEL = MelConfig(n_mels=64, input_frames=160)
SAMPLE_CALLS = Path(__file__).resolve().parent.parent / "sample_calls"


def make_model_folder(path: Path, seed: int = 0, mel: MelConfig = TINY_MEL,
                      speaker_reference: tuple[float, ...] | None = None) -> Path:
    """A randomly initialised micro ViT saved as a model folder (a second or so to build)."""
    import torch

    torch.manual_seed(seed)
    model = build_model(mel, LABELS, "random:micro")
    norm = Normalization(mean=-8.0, std=4.0, speaker_reference=speaker_reference)
    return save_model_folder(path, model, mel, norm,
                             ModelCard(name="tiny-test", labels=LABELS))


def voiced(seconds: float, rate: int, rng: np.random.Generator, f0: float = 140.0):
    """A speech-like harmonic tone with a syllable-rate envelope."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * tone * envelope).astype(np.float32)


def synthetic_call(path: Path, turns: list[tuple[int, float, float]], duration: float,
                   rate: int = 8000, channels: int = 2, subtype: str = "ULAW",
                   seed: int = 0) -> None:
    """Write a call with speech-like bursts at (channel, start_s, end_s) over line noise."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0, 10 ** (-55 / 20), (channels, int(duration * rate))).astype(
        np.float32)
    for channel, start, end in turns:
        a = int(start * rate)
        burst = voiced(end - start, rate, rng, f0=110 + 60 * channel)
        audio[channel, a:a + len(burst)] += burst
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.T, rate, subtype=subtype)


DIALOGUE = [(0, 0.5, 2.5), (1, 3.2, 7.5), (0, 8.0, 9.5), (1, 10.0, 12.0)]


def write_calls_csv(folder: Path, rows: list[dict]) -> None:
    with open(folder / "calls.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["call_id", "file", "agent_id", "queue",
                                               "started_at", "customer_channel"])
        writer.writeheader()
        writer.writerows(rows)
