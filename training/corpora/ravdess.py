"""RAVDESS speech: Actor_AA/03-01-EE-II-SS-RR-AA.(wav|flac), 24 actors, 8 emotions."""

from __future__ import annotations

import re
from pathlib import Path

from callmood.training.corpora.base import Utterance, audio_files

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
            "06": "fearful", "07": "disgust", "08": "surprised"}
LABELS = list(EMOTIONS.values())
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def scan(root: str | Path) -> tuple[list[Utterance], list[Path]]:
    """Utterances (modality 03 = audio-only, channel 01 = speech) and the files skipped."""
    utterances, skipped = [], []
    for path in audio_files(root):
        match = _NAME.match(path.stem)
        if not match or match[1] != "03" or match[2] != "01" or match[3] not in EMOTIONS:
            skipped.append(path)
            continue
        utterances.append(Utterance(str(path), EMOTIONS[match[3]], f"ravdess:{match[7]}",
                                    "ravdess"))
    return utterances, skipped
