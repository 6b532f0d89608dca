"""What scoring hands to the results, whichever way a call came in: spans of a call's
channels, the scored call, and the label each window's probabilities give."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np


class Segment(NamedTuple):
    """A span of one channel of a call, in seconds: a speech region or a scored window."""

    channel: int
    start_s: float
    end_s: float


@dataclass
class ScoredCall:
    """One call as scoring hands it to the results, from a nightly worker or a live stream:
    its windows (Segment) and their probabilities, or why it failed. The windows travel
    as one probability matrix, a row each, which the writer turns into segment rows."""

    path: str
    sha256: str | None = None
    duration_s: float = 0.0
    channels: int = 0
    speech: list[Segment] = field(default_factory=list)  # the VAD's speech regions
    windows: list[Segment] = field(default_factory=list)  # the windows scored
    probs: np.ndarray | None = None
    error_kind: str | None = None
    error: str | None = None


def top_labels(probs: np.ndarray, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Each row's most probable label, and its probability (the confidence)."""
    best = probs.argmax(axis=1)
    return [labels[i] for i in best], probs[np.arange(len(probs)), best]
