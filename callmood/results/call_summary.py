"""Call-level figures from scored segments: speech per role, emotion shares, escalation.

Which emotions are negative comes from the model folder's valence map (label -> -1/0/1).
A call escalates when the customer's negative probability rises over the call: its least
squares slope per minute is at least `min_slope_per_min` AND the last third of the call
is at least `min_rise` more negative than the first third.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROLES = ("agent", "customer")


@dataclass(frozen=True)
class EscalationConfig:
    min_slope_per_min: float = 0.05
    min_rise: float = 0.15
    min_segments: int = 4  # customer segments needed to judge a trend


def roles_for(channels: int, customer_channel: int | None) -> list[str]:
    """Role of each channel: customer / agent from metadata, else mono or ch<N>."""
    if customer_channel is not None and 0 <= customer_channel < channels and channels > 1:
        return ["customer" if c == customer_channel else "agent" for c in range(channels)]
    if channels == 1:
        return ["mono"]
    return [f"ch{c}" for c in range(channels)]


def _negative_probability(probs: np.ndarray, negative: np.ndarray) -> np.ndarray:
    return probs[:, negative].sum(axis=1) if negative.any() else np.zeros(len(probs))


def escalation(times_s: np.ndarray, negative_p: np.ndarray, duration_s: float,
               config: EscalationConfig) -> tuple[float | None, bool]:
    """(slope of negative probability per minute, escalated?) of the customer's segments."""
    if len(times_s) < 2 or np.ptp(times_s) == 0:
        return None, False
    slope = float(np.polyfit(times_s / 60.0, negative_p, 1)[0])
    first = negative_p[times_s < duration_s / 3]
    last = negative_p[times_s > 2 * duration_s / 3]
    rising = (len(first) > 0 and len(last) > 0
              and float(last.mean() - first.mean()) >= config.min_rise)
    escalated = (len(times_s) >= config.min_segments and slope >= config.min_slope_per_min
                 and rising)
    return slope, escalated


def summarize_call(labels: list[str], valence: dict[str, int], duration_s: float,
                   speech: list[tuple[str, float, float]],
                   segments: list[tuple[str, float, float]], probs: np.ndarray,
                   config: EscalationConfig) -> dict:
    """The computed columns of a `calls` row.

    speech: (role, start_s, end_s) VAD regions; segments: (role, start_s, end_s) scored
    windows, one row of `probs` (N, labels) each. Shares weigh segments by duration.
    """
    negative = np.array([valence.get(label, 0) < 0 for label in labels])
    roles = np.array([role for role, _, _ in segments])
    starts = np.array([s for _, s, _ in segments])
    ends = np.array([e for _, _, e in segments])
    predicted = probs.argmax(axis=1)
    row: dict = {}
    for role in ROLES:
        row[f"speech_s_{role}"] = float(sum(e - s for r, s, e in speech if r == role))
        mine = roles == role
        weights = (ends - starts)[mine]
        for i, label in enumerate(labels):
            share = (float(weights[predicted[mine] == i].sum() / weights.sum())
                     if weights.sum() > 0 else None)
            row[f"{role}_share_{label}"] = share

    # a share of customer speech needs a known customer channel: None without one, since
    # the agent's speech would dilute it
    shares = [row[f"customer_share_{label}"] for label in labels]
    row["customer_negative_share"] = (
        float(sum(s for s, neg in zip(shares, negative, strict=True) if neg))
        if shares and shares[0] is not None else None)

    # the peak and the trend are still worth flagging without roles (mono, unknown
    # channels): there the whole call stands in for the customer
    focus = roles == "customer" if (roles == "customer").any() else np.ones(len(roles), bool)

    peak = {"peak_negative_emotion": None, "peak_negative_confidence": None,
            "peak_negative_at_s": None}
    confident = probs.max(axis=1)
    candidates = np.flatnonzero(focus & negative[predicted])
    if len(candidates):
        best = candidates[np.argmax(confident[candidates])]
        peak = {"peak_negative_emotion": labels[predicted[best]],
                "peak_negative_confidence": float(confident[best]),
                "peak_negative_at_s": float(starts[best])}
    row.update(peak)

    times = (starts[focus] + ends[focus]) / 2
    slope, escalated = escalation(times, _negative_probability(probs[focus], negative),
                                  duration_s, config)
    row["escalation_slope"] = slope
    row["escalated"] = escalated
    return row
