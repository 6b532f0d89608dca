"""callmood/results/call_summary.py: roles, the calls row's figures and the escalation rule,
on hand-built probabilities (no model, no audio)."""

from __future__ import annotations

import numpy as np
import pytest

from callmood.results.call_summary import EscalationConfig, roles_for, summarize_call

LABELS = ["neutral", "happy", "sad", "angry"]
VALENCE = {"neutral": 0, "happy": 1, "sad": -1, "angry": -1}
RULE = EscalationConfig()  # slope >= 0.05 per minute, rise >= 0.15, 4 segments


def row(negative: float, sad_share: float = 0.5) -> list[float]:
    """Probabilities with `negative` split between sad and angry, the rest neutral."""
    return [1 - negative, 0.0, negative * sad_share, negative * (1 - sad_share)]


def call(duration_s: float, segments: list[tuple[str, float, float, float]],
         config: EscalationConfig = RULE, speech=None, valence=VALENCE) -> dict:
    """The summary of segments (role, start_s, end_s, negative probability)."""
    probs = np.array([row(p) for *_, p in segments]).reshape(len(segments), len(LABELS))
    windows = [(role, s, e) for role, s, e, _ in segments]
    return summarize_call(LABELS, valence, duration_s, speech or windows, windows, probs,
                          config)


def customer(times_s, negative, role="customer", width_s=2.0):
    return [(role, t - width_s / 2, t + width_s / 2, p)
            for t, p in zip(times_s, negative, strict=True)]


# --- roles


@pytest.mark.parametrize(("channels", "customer_channel", "roles"), [
    (2, 1, ["agent", "customer"]),
    (2, 0, ["customer", "agent"]),
    (3, 2, ["agent", "agent", "customer"]),
    (2, None, ["ch0", "ch1"]),
    (3, None, ["ch0", "ch1", "ch2"]),
    (2, 2, ["ch0", "ch1"]),  # a customer channel the recording lacks: unknown roles
    (2, -1, ["ch0", "ch1"]),
    (1, None, ["mono"]),
    (1, 0, ["mono"]),  # one channel holds both speakers, whatever the metadata says
])
def test_roles_for(channels, customer_channel, roles):
    assert roles_for(channels, customer_channel) == roles


# --- the escalation rule

TIMES = [10.0, 30.0, 50.0, 70.0, 90.0, 110.0]  # midpoints, in a 120 s call


def test_a_customer_growing_negative_escalates():
    rising = [0.1, 0.24, 0.38, 0.52, 0.66, 0.8]  # +0.14 per 20 s: 0.42 per minute
    got = call(120.0, customer(TIMES, rising) + customer(TIMES, [0.9] * 6, role="agent"))
    assert got["escalation_slope"] == pytest.approx(0.42)
    assert got["escalated"] is True


def test_a_flat_customer_does_not_escalate_however_negative():
    got = call(120.0, customer(TIMES, [0.9] * 6))
    assert got["escalation_slope"] == pytest.approx(0.0, abs=1e-9)
    assert got["escalated"] is False


def test_a_falling_customer_does_not_escalate():
    got = call(120.0, customer(TIMES, [0.8, 0.66, 0.52, 0.38, 0.24, 0.1]))
    assert got["escalation_slope"] == pytest.approx(-0.42)
    assert got["escalated"] is False


def test_the_agent_growing_negative_is_not_the_customers_escalation():
    got = call(120.0, customer(TIMES, [0.2] * 6)
               + customer(TIMES, [0.1, 0.24, 0.38, 0.52, 0.66, 0.8], role="agent"))
    assert got["escalation_slope"] == pytest.approx(0.0, abs=1e-9)
    assert got["escalated"] is False


def test_the_rule_needs_min_segments_customer_segments():
    three = customer([10.0, 60.0, 110.0], [0.1, 0.45, 0.8])
    assert call(120.0, three)["escalation_slope"] == pytest.approx(0.42)
    assert call(120.0, three)["escalated"] is False  # 3 < 4
    assert call(120.0, three, EscalationConfig(min_segments=3))["escalated"] is True


def test_the_slope_threshold_is_inclusive_and_gates_a_rise():
    # 30 minutes from 0.2 to 0.5: the thirds differ by 0.2, but only 0.01 per minute
    slow = customer(np.linspace(30, 1770, 10), np.linspace(0.2, 0.5, 10))
    got = call(1800.0, slow)
    slope = got["escalation_slope"]
    assert slope == pytest.approx(0.3 / 29) and got["escalated"] is False
    assert call(1800.0, slow, EscalationConfig(min_slope_per_min=slope))["escalated"]
    assert not call(1800.0, slow, EscalationConfig(min_slope_per_min=slope + 1e-9))[
        "escalated"]


def test_the_rise_threshold_is_inclusive_and_gates_a_slope():
    # a step of 0.25 (exact in binary) from the first third to the last
    step = customer(TIMES, [0.25, 0.25, 0.25, 0.5, 0.5, 0.5])
    got = call(120.0, step)
    assert got["escalation_slope"] > 0.05 and got["escalated"] is True
    assert call(120.0, step, EscalationConfig(min_rise=0.25))["escalated"] is True
    assert call(120.0, step, EscalationConfig(min_rise=0.25 + 1e-9))["escalated"] is False
    small = customer(TIMES, [0.25, 0.25, 0.25, 0.375, 0.375, 0.375])  # rise 0.125
    got = call(120.0, small)
    assert got["escalation_slope"] > 0.05 and got["escalated"] is False


def test_the_thirds_are_of_the_call_not_of_the_customers_speech():
    # a steep rise within the first minute of a ten-minute call: no last third to compare
    early = customer([5.0, 20.0, 35.0, 50.0], [0.1, 0.4, 0.7, 0.9])
    got = call(600.0, early)
    assert got["escalation_slope"] > 1.0 and got["escalated"] is False
    assert call(60.0, early)["escalated"] is True  # the same segments in a one-minute call


def test_no_trend_from_fewer_than_two_moments():
    one = call(120.0, customer([60.0], [0.9]))
    assert one["escalation_slope"] is None and one["escalated"] is False
    same_time = call(120.0, customer([60.0] * 5, [0.1, 0.3, 0.5, 0.7, 0.9]))
    assert same_time["escalation_slope"] is None and same_time["escalated"] is False


def test_a_model_without_negative_labels_never_escalates():
    got = call(120.0, customer(TIMES, [0.1, 0.24, 0.38, 0.52, 0.66, 0.8]),
               valence={"happy": 1})
    assert got["escalation_slope"] == pytest.approx(0.0, abs=1e-9)
    assert got["escalated"] is False
    assert got["customer_negative_share"] == 0.0 and got["peak_negative_emotion"] is None


# --- mono calls and calls without a customer channel


@pytest.mark.parametrize("role", ["mono", "ch1"])
def test_without_a_customer_the_whole_call_stands_in_for_the_trend(role):
    rising = customer(TIMES, [0.1, 0.24, 0.38, 0.52, 0.66, 0.8], role=role)
    flat_other = customer(TIMES, [0.1] * 6, role="ch0") if role == "ch1" else []
    got = call(120.0, rising + flat_other)
    # ch1's flat partner is in the trend too: half the slope (the rise: 0.28)
    assert got["escalation_slope"] == pytest.approx(0.42 if role == "mono" else 0.21)
    assert got["escalated"] is True
    # no share of customer speech without a customer
    assert got["customer_negative_share"] is None
    assert all(got[f"customer_share_{label}"] is None for label in LABELS)
    assert all(got[f"agent_share_{label}"] is None for label in LABELS)
    assert got["speech_s_customer"] == got["speech_s_agent"] == 0.0
    # the peak is still flagged, from any channel
    assert got["peak_negative_emotion"] in ("sad", "angry")
    assert got["peak_negative_at_s"] == 109.0


# --- the calls row's other figures


def test_shares_weigh_segments_by_duration_and_speech_comes_from_the_vad():
    segments = [("customer", 0.0, 1.0, 0.9),  # angry/sad argmax, 1 s
                ("customer", 2.0, 5.0, 0.1),  # neutral, 3 s
                ("agent", 5.0, 7.0, 0.0)]  # neutral, 2 s
    probs = np.array([[0.1, 0.0, 0.3, 0.6], [0.9, 0.0, 0.05, 0.05], [1.0, 0.0, 0.0, 0.0]])
    speech = [("customer", 0.0, 5.5), ("agent", 5.0, 7.5), ("agent", 8.0, 9.0)]
    got = summarize_call(LABELS, VALENCE, 10.0, speech,
                         [(r, s, e) for r, s, e, _ in segments], probs, RULE)
    assert got["speech_s_customer"] == 5.5 and got["speech_s_agent"] == 3.5
    assert got["customer_share_angry"] == 0.25 and got["customer_share_neutral"] == 0.75
    assert got["customer_share_sad"] == got["customer_share_happy"] == 0.0
    assert got["customer_negative_share"] == 0.25
    assert got["agent_share_neutral"] == 1.0 and got["agent_share_angry"] == 0.0
    assert (got["peak_negative_emotion"], got["peak_negative_at_s"]) == ("angry", 0.0)
    assert got["peak_negative_confidence"] == pytest.approx(0.6)


def test_the_peak_is_the_customers_most_confident_negative_segment():
    segments = [("agent", 0.0, 2.0), ("customer", 3.0, 5.0), ("customer", 6.0, 8.0),
                ("customer", 9.0, 11.0)]
    probs = np.array([[0.0, 0.0, 0.0, 1.0],  # the agent, furious: not the customer's peak
                      [0.1, 0.0, 0.7, 0.2],  # sad 0.7
                      [0.1, 0.0, 0.1, 0.8],  # angry 0.8: the peak
                      [0.0, 0.9, 0.1, 0.0]])  # happy, the most confident: not negative
    got = summarize_call(LABELS, VALENCE, 12.0, segments, segments, probs, RULE)
    assert got["peak_negative_emotion"] == "angry"
    assert got["peak_negative_confidence"] == pytest.approx(0.8)
    assert got["peak_negative_at_s"] == 6.0


def test_a_call_with_no_segments():
    got = summarize_call(LABELS, VALENCE, 30.0, [], [], np.zeros((0, len(LABELS))), RULE)
    assert got["speech_s_agent"] == got["speech_s_customer"] == 0.0
    assert got["customer_negative_share"] is None
    assert got["peak_negative_emotion"] is None and got["peak_negative_at_s"] is None
    assert got["escalation_slope"] is None and got["escalated"] is False
    assert set(got) == {"speech_s_agent", "speech_s_customer", "customer_negative_share",
                        "peak_negative_emotion", "peak_negative_confidence",
                        "peak_negative_at_s", "escalation_slope", "escalated",
                        *(f"{role}_share_{label}" for role in ("agent", "customer")
                          for label in LABELS)}
