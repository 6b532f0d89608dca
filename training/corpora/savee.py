"""SAVEE: four male speakers (DC, JE, JK, KL); SPEAKER_<code><nn>.wav or SPEAKER/<code><nn>.wav.

Codes: a anger, d disgust, f fear, h happiness, n neutral, sa sadness, su surprise.
"""

from __future__ import annotations

import re
from pathlib import Path

from callmood.training.corpora.base import Utterance, audio_files

EMOTIONS = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral",
            "sa": "sad", "su": "surprised"}
LABELS = list(EMOTIONS.values())
SPEAKERS = ("DC", "JE", "JK", "KL")
_FLAT = re.compile(r"^(DC|JE|JK|KL)_(sa|su|a|d|f|h|n)(\d\d)$")
_NESTED = re.compile(r"^(sa|su|a|d|f|h|n)(\d\d)$")


def scan(root: str | Path) -> tuple[list[Utterance], list[Path]]:
    utterances, skipped = [], []
    for path in audio_files(root):
        flat = _FLAT.match(path.stem)
        nested = _NESTED.match(path.stem) if path.parent.name in SPEAKERS else None
        if flat:
            speaker, code = flat[1], flat[2]
        elif nested:
            speaker, code = path.parent.name, nested[1]
        else:
            skipped.append(path)
            continue
        utterances.append(Utterance(str(path), EMOTIONS[code], f"savee:{speaker}", "savee"))
    return utterances, skipped
