"""callmood/results/call_summary.py: roles, the calls row's figures, persistence, the share
interval and the escalation rule, on hand-built probabilities (no model, no audio)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from callmood.results.call_summary import (
    AlertConfirmation,
    CallAnalytics,
    persist,
    roles_for,
    summarize_call,
)

LABELS = ["neutral", "happy", "sad", "angry"]
VALENCE = {"neutral": 0, "happy": 1, "sad": -1, "angry": -1}
# each segment alone and counted by its top label, so the rule's thresholds are what is tested
RULE = CallAnalytics(shares="argmax", persistence_s=0.0, agent_persistence_s=0.0,
                     min_rise=0.15, min_evidence=0.0, min_segments=2)


def row(negative: float, sad_share: float = 0.5) -> list[float]:
    """Probabilities with `negative` split between sad and angry, the rest neutral."""
    return [1 - negative, 0.0, negative * sad_share, negative * (1 - sad_share)]


def call(duration_s: float, segments: list[tuple[str, float, float, float]],
         config: CallAnalytics = RULE, speech=None, valence=VALENCE) -> dict:
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


def test_the_rule_needs_min_segments_in_each_third():
    three = customer([10.0, 60.0, 110.0], [0.1, 0.45, 0.8])
    assert call(120.0, three)["escalation_slope"] == pytest.approx(0.42)
    assert call(120.0, three)["escalated"] is False  # one segment per third < 2
    assert call(120.0, three, replace(RULE, min_segments=1))["escalated"] is True


def test_the_rise_needs_its_evidence():
    # the same mean rise of 0.3, once steady and once from two loud segments among noise
    steady = customer(TIMES, [0.2, 0.2, 0.2, 0.5, 0.5, 0.5])
    noisy = customer(TIMES, [0.0, 0.4, 0.3, 0.3, 0.9, 0.1])
    sure = replace(RULE, min_evidence=3.0)
    assert call(120.0, steady, sure)["escalated"] is True
    assert call(120.0, noisy)["escalated"] is True
    assert call(120.0, noisy, sure)["escalated"] is False


def test_the_rise_threshold_is_inclusive():
    # a step of 0.25 (exact in binary) from the first third to the last
    step = customer(TIMES, [0.25, 0.25, 0.25, 0.5, 0.5, 0.5])
    got = call(120.0, step)
    assert got["escalated"] is True
    assert call(120.0, step, replace(RULE, min_rise=0.25))["escalated"] is True
    assert call(120.0, step, replace(RULE, min_rise=0.25 + 1e-9))["escalated"] is False
    small = customer(TIMES, [0.25, 0.25, 0.25, 0.375, 0.375, 0.375])  # rise 0.125
    assert call(120.0, small)["escalated"] is False


def test_the_thirds_are_of_the_call_not_of_the_customers_speech():
    # a steep rise within the first minute of a ten-minute call: no last third to compare
    early = customer([5.0, 15.0, 45.0, 55.0], [0.1, 0.3, 0.7, 0.9])
    got = call(600.0, early)
    assert got["escalation_slope"] > 0.9 and got["escalated"] is False
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


def test_an_agents_speech_does_not_stand_in_for_a_silent_customer():
    """A stereo call whose customer never spoke (one-way audio): the agent's rising
    negativity is neither an escalation nor a live alert, as live scoring, which reads the
    customer's channel only, never alerts on it."""
    eager = replace(RULE, live_min_rise=0.1, live_min_evidence=0.0, live_min_segments=1,
                    confirm_segments=1)
    agent_only = customer(TIMES, [0.1, 0.24, 0.38, 0.52, 0.66, 0.8], role="agent")
    got = call(120.0, agent_only, eager)
    assert got["escalated"] is False and got["live_alert_at_s"] is None
    assert got["peak_negative_emotion"] is None and got["escalation_slope"] is None


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
    assert got["live_alert_at_s"] is None
    assert set(got) == {"speech_s_agent", "speech_s_customer", "customer_negative_share",
                        "customer_negative_share_low", "customer_negative_share_high",
                        "peak_negative_emotion", "peak_negative_confidence",
                        "peak_negative_at_s", "escalation_slope", "escalated",
                        "live_alert_at_s",
                        *(f"{role}_share_{label}" for role in ("agent", "customer")
                          for label in LABELS)}


# --- persistence, shares from probability mass, the share interval


def test_persistence_outvotes_a_lone_segment_but_follows_a_lasting_change():
    times = np.arange(0.0, 60.0, 3.0)
    probs = np.array([row(0.2)] * len(times))
    probs[5] = row(0.8)  # one window heard as negative among neutral ones
    probs[12:] = row(0.8)  # from 36 s on the speaker is negative
    smoothed = persist(times, probs, persistence_s=30.0, evidence_weight=0.7)
    negative = smoothed[:, 2:].sum(axis=1)
    assert negative[5] < 0.5 < probs[5, 2:].sum()
    assert (negative[14:] > 0.5).all()
    assert np.allclose(smoothed.sum(axis=1), 1.0)
    # without persistence every segment is read alone
    assert persist(times, probs, persistence_s=0.0, evidence_weight=0.7) is probs


def test_agents_and_customers_persist_by_their_own_settings():
    """A lone negative window: an agent's is outvoted (agents change slowly), a customer's
    counts when the customers' persistence is short."""
    times = np.arange(1.0, 60.0, 3.0)
    lone = [0.2] * len(times)
    lone[10] = 0.9
    analytics = replace(RULE, shares="mass", persistence_s=0.0, agent_persistence_s=60.0)
    got = call(60.0, customer(times, lone) + customer(times, lone, role="agent"), analytics)
    assert got["agent_share_angry"] + got["agent_share_sad"] < 0.2
    assert got["customer_share_angry"] + got["customer_share_sad"] == pytest.approx(
        np.mean(lone))


def test_shares_are_expected_speech_time_not_top_label_counts():
    segments = [("customer", 0.0, 2.0, 0.45), ("customer", 2.0, 4.0, 0.45)]
    mass = call(10.0, segments, replace(RULE, shares="mass"))
    assert mass["customer_negative_share"] == pytest.approx(0.45)
    assert call(10.0, segments)["customer_negative_share"] == 0.0  # 0.55 neutral wins


def test_the_share_interval_holds_the_share_and_narrows_with_evidence():
    few = call(120.0, customer(np.arange(5.0, 120.0, 12.0), [0.5] * 10),
               replace(RULE, shares="mass", share_error_sd=0.0))
    many = call(600.0, customer(np.arange(5.0, 600.0, 10.0), [0.5] * 60),
                replace(RULE, shares="mass", share_error_sd=0.0))
    for got in (few, many):
        assert got["customer_negative_share_low"] < 0.5 < got["customer_negative_share_high"]
    assert (many["customer_negative_share_high"] - many["customer_negative_share_low"]
            < few["customer_negative_share_high"] - few["customer_negative_share_low"])
    wide = call(120.0, customer(np.arange(5.0, 120.0, 12.0), [0.5] * 10),
                replace(RULE, shares="mass", share_error_sd=0.1))
    assert wide["customer_negative_share_low"] < few["customer_negative_share_low"]
    assert wide["customer_negative_share_low"] >= 0.0
    assert wide["customer_negative_share_high"] <= 1.0


@pytest.mark.parametrize(("settings", "message"), [
    ({"shares": "mode"}, "shares"),
    ({"evidence_weight": 0.0}, "evidence_weight"),
    ({"min_rise": "0.2"}, "min_rise must be a number"),
    ({"confirm_segments": 0}, "at least 1"),
    ({"live_min_segments": 0}, "at least 1"),
    ({"live_min_evidence": -1.0}, ">= 0"),
    ({"min_segments": 2.5}, "min_segments must be a whole number"),
    ({"persistence_s": float("nan")}, "finite"),
    ({"share_error_sd": -0.1}, ">= 0"),
    ({"min_evidence": True}, "must be a number"),
])
def test_a_setting_out_of_range_is_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        CallAnalytics.from_dict(settings)


def test_one_segment_in_a_third_is_no_evidence():
    """Its spread is not known (a variance of one value), so a rule that asks for
    evidence does not flag it; without the evidence test the rise alone decides."""
    one_each = customer([10.0, 110.0], [0.1, 0.6])
    sure = replace(RULE, min_segments=1, min_evidence=1.0)
    assert call(120.0, one_each, sure)["escalated"] is False
    assert call(120.0, one_each, replace(sure, min_evidence=0.0))["escalated"] is True


def test_an_argmax_share_sits_inside_its_interval():
    segments = customer(np.arange(2.0, 60.0, 3.0), [0.45] * 20)  # neutral wins each window
    got = call(60.0, segments, replace(RULE, share_error_sd=0.05))
    assert got["customer_negative_share"] == 0.0
    assert got["customer_negative_share_low"] == 0.0 < got["customer_negative_share_high"]


def test_a_calls_row_says_when_the_live_alert_fired_as_live_scoring_reads_it():
    """The row's live_alert_at_s is the end of the segment after which AlertConfirmation,
    fed the customer's segments one by one (each on those that had ended), first fires;
    agent segments are not the rule's; a calm call has none."""
    mids = np.arange(5.0, 120.0, 10.0)
    negative = np.where(mids > 60, 0.9, 0.1)
    rule = replace(RULE, live_min_rise=0.3, live_min_evidence=0.0, live_min_segments=2,
                   confirm_segments=2)
    confirmation = AlertConfirmation(rule)
    fired = next(mid + 1.0 for i, mid in enumerate(mids)
                 if confirmation.after_segment(mids[:i + 1], negative[:i + 1], mid + 1.0))
    agents = customer(mids + 3.0, np.full(len(mids), 0.9), role="agent")
    got = call(125.0, customer(mids, negative) + agents, rule)
    assert got["live_alert_at_s"] == fired
    assert call(125.0, customer(mids, np.full(len(mids), 0.1)) + agents,
                rule)["live_alert_at_s"] is None
    # the live alert has thresholds of its own: a stricter one fires later or never
    assert call(125.0, customer(mids, negative), replace(rule, live_min_rise=0.95))[
        "live_alert_at_s"] is None


def test_an_alert_needs_the_rule_to_hold_for_segments_in_a_row():
    mids = np.arange(5.0, 120.0, 10.0)
    negative = np.where(mids > 60, 0.9, 0.1)
    # the live rule's thresholds, the nightly ones made the same to compare with the flag
    rule = replace(RULE, min_rise=0.3, live_min_rise=0.3, live_min_evidence=0.0,
                   live_min_segments=2, confirm_segments=2)
    confirmation = AlertConfirmation(rule)
    fired = [confirmation.after_segment(mids[:i + 1], negative[:i + 1], mids[i] + 4)
             for i in range(len(mids))]
    first_hold = next(i for i in range(len(mids)) if call(
        mids[i] + 4, customer(mids[:i + 1], negative[:i + 1]), rule)["escalated"])
    assert fired.index(True) == first_hold + 1  # held at first_hold and at the next one
    # a segment on which the rule does not hold starts the count again
    again = AlertConfirmation(rule)
    assert not again.after_segment(mids[:first_hold + 1], negative[:first_hold + 1],
                                   mids[first_hold] + 4)
    assert not again.after_segment(mids[:1], negative[:1], mids[0] + 4)
    assert again.held == 0
