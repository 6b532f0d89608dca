"""The record every corpus adapter produces: one labelled utterance of one speaker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class CorpusError(ValueError):
    """A corpus folder or manifest that cannot be read."""


@dataclass(frozen=True)
class Utterance:
    path: str
    label: str  # the corpus's own emotion name (before any label mapping)
    speaker: str  # corpus-qualified, e.g. "ravdess:01", so corpora never share speakers
    corpus: str


def audio_files(root: str | Path) -> list[Path]:
    """All audio files below `root`, sorted; a clear error if the folder is missing or empty."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: corpus folder not found")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise CorpusError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found")
    return files


def skip_report(corpus: str, skipped: list[Path]) -> str:
    head = ", ".join(p.name for p in skipped[:3])
    return f"{corpus}: skipped {len(skipped)} files whose names do not follow the layout ({head})"
