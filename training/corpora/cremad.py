"""CREMA-D: AudioWAV/AAAA_SSS_EEE_LL.wav; actor 1001-1091, emotion code, intensity."""

from __future__ import annotations

import re
from pathlib import Path

from callmood.training.corpora.base import Utterance, audio_files

EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy",
            "NEU": "neutral", "SAD": "sad"}
LABELS = list(EMOTIONS.values())
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def scan(root: str | Path) -> tuple[list[Utterance], list[Path]]:
    utterances, skipped = [], []
    for path in audio_files(root):
        match = _NAME.match(path.stem)
        if not match or match[3] not in EMOTIONS:
            skipped.append(path)
            continue
        utterances.append(Utterance(str(path), EMOTIONS[match[3]], f"cremad:{match[1]}",
                                    "cremad"))
    return utterances, skipped
