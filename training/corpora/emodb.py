"""EmoDB: SSTTTEV.(wav|flac); speaker SS, text TTT, emotion letter E (German initials)."""

from __future__ import annotations

import re
from pathlib import Path

from callmood.training.corpora.base import Utterance, audio_files

EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy",
            "T": "sad", "N": "neutral"}
LABELS = list(EMOTIONS.values())
_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([WLEAFTN])([a-z])$")


def scan(root: str | Path) -> tuple[list[Utterance], list[Path]]:
    utterances, skipped = [], []
    for path in audio_files(root):
        match = _NAME.match(path.stem)
        if not match:
            skipped.append(path)
            continue
        utterances.append(Utterance(str(path), EMOTIONS[match[3]], f"emodb:{match[1]}",
                                    "emodb"))
    return utterances, skipped
