"""What scoring hands to the results, whichever way a call came in: spans of a call's
channels and the label each window's probabilities give."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Segment(NamedTuple):
    """A span of one channel of a call, in seconds: a speech region or a scored window."""

    channel: int
    start_s: float
    end_s: float


def top_labels(probs: np.ndarray, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Each row's most probable label, and its probability (the confidence)."""
    best = probs.argmax(axis=1)
    return [labels[i] for i in best], probs[np.arange(len(probs)), best]
