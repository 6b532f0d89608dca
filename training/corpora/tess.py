"""TESS: two speakers (OAF, YAF); files SPEAKER_word_emotion.wav, often in per-emotion folders."""

from __future__ import annotations

import re
from pathlib import Path

from callmood.training.corpora.base import Utterance, audio_files

EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
            "neutral": "neutral", "ps": "surprised", "pleasant_surprise": "surprised",
            "pleasant_surprised": "surprised", "sad": "sad"}
LABELS = ["angry", "disgust", "fearful", "happy", "neutral", "surprised", "sad"]
_NAME = re.compile(r"^(OAF|YAF)_([a-z]+)_([a-z_]+)$", re.IGNORECASE)


def scan(root: str | Path) -> tuple[list[Utterance], list[Path]]:
    utterances, skipped = [], []
    for path in audio_files(root):
        match = _NAME.match(path.stem)
        emotion = EMOTIONS.get(match[3].lower()) if match else None
        if emotion is None:
            skipped.append(path)
            continue
        utterances.append(Utterance(str(path), emotion, f"tess:{match[1].upper()}", "tess"))
    return utterances, skipped
