"""Mapping corpus emotion names onto one label set, so corpora can be trained together.

A mapping sends a corpus label to a target label, or to None to drop those utterances.
Presets: `corpus` keeps every label as it is; `calls` is the set the default model uses
for call recordings (calm counts as neutral, EmoDB's boredom is dropped: it has no
counterpart in the other corpora and is not the same as neutral).
"""

from __future__ import annotations

from callmood.training.corpora.base import Utterance

# Display and model order of the emotions callmood knows; others follow alphabetically.
CANONICAL_ORDER = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
                   "surprised", "boredom"]

PRESETS: dict[str, dict[str, str | None]] = {
    "corpus": {},
    "calls": {"calm": "neutral", "boredom": None},
}


def parse_mapping(preset: str, overrides: list[str]) -> dict[str, str | None]:
    """`--labels PRESET` plus `--map SOURCE=TARGET` (TARGET `drop` removes the label)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown label preset {preset!r}; choose from {sorted(PRESETS)}")
    mapping = dict(PRESETS[preset])
    for item in overrides:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"--map expects SOURCE=TARGET or SOURCE=drop, got {item!r}")
        mapping[source.strip().lower()] = None if target.strip().lower() == "drop" \
            else target.strip().lower()
    return mapping


def apply_mapping(utterances: list[Utterance], mapping: dict[str, str | None],
                  ) -> list[Utterance]:
    """Relabel utterances; those mapped to None are left out."""
    out = []
    for u in utterances:
        target = mapping.get(u.label.lower(), u.label.lower())
        if target is not None:
            out.append(Utterance(u.path, target, u.speaker, u.corpus))
    return out


def ordered_labels(labels: set[str] | list[str]) -> list[str]:
    known = [label for label in CANONICAL_ORDER if label in labels]
    return known + sorted(set(labels) - set(CANONICAL_ORDER))
