"""Altair charts for the dashboard. Each takes a non-empty frame from a canned query;
pages show a "no calls" note instead of calling them with no rows."""

from __future__ import annotations

import altair as alt
import pandas as pd

PERCENT = alt.Axis(format="%")
PERCENT_LEGEND = alt.Legend(format="%")


def emotion_scale(labels: list[str]) -> alt.Scale:
    """The same colour for an emotion on every chart."""
    return alt.Scale(domain=list(labels), scheme="tableau10")


def emotion_share(df: pd.DataFrame, labels: list[str]) -> alt.Chart:
    return alt.Chart(df, title="Share of speech time by emotion").mark_bar().encode(
        x=alt.X("share:Q", title="Share of the role's speech time", axis=PERCENT,
                stack="normalize"),
        y=alt.Y("role:N", title="Role"),
        color=alt.Color("emotion:N", title="Emotion", scale=emotion_scale(labels)),
        order=alt.Order("share:Q", sort="descending"),
        tooltip=["role", "emotion", alt.Tooltip("share:Q", format=".1%"),
                 alt.Tooltip("speech_s:Q", title="speech (s)", format=".0f")],
    )


def emotion_trend(df: pd.DataFrame, labels: list[str], grain: str, role: str) -> alt.Chart:
    period = "Week (starting Monday)" if grain == "week" else "Day"
    return alt.Chart(df, title=f"{role}: emotion share per {grain}").mark_line(
        point=True).encode(
        x=alt.X("period:T", title=period),
        y=alt.Y("share:Q", title="Share of speech time", axis=PERCENT),
        color=alt.Color("emotion:N", title="Emotion", scale=emotion_scale(labels)),
        tooltip=[alt.Tooltip("period:T", title=period), "emotion",
                 alt.Tooltip("share:Q", format=".1%")],
    )


def daily_negative(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df, title="Negative customer emotion per day").mark_line(
        point=True).encode(
        x=alt.X("call_date:T", title="Day"),
        y=alt.Y("negative_share:Q", title="Share of customer speech time", axis=PERCENT),
        tooltip=[alt.Tooltip("call_date:T", title="day"), "calls",
                 alt.Tooltip("negative_share:Q", title="negative share", format=".1%")],
    )


def hour_of_day(df: pd.DataFrame, timezone: str) -> alt.Chart:
    return alt.Chart(df, title=f"Calls by hour of day ({timezone})").mark_bar().encode(
        x=alt.X("hour:O", title=f"Hour of day ({timezone})"),
        y=alt.Y("calls:Q", title="Calls"),
        color=alt.Color("customer_negative_share:Q", title="Customer negative share",
                        scale=alt.Scale(scheme="reds", domain=[0, 1]), legend=PERCENT_LEGEND),
        tooltip=["hour", "calls",
                 alt.Tooltip("customer_negative_share:Q", title="negative share", format=".1%"),
                 alt.Tooltip("escalation_rate:Q", title="escalation rate", format=".1%")],
    )


def queue_comparison(df: pd.DataFrame) -> alt.Chart:
    long = df.melt(id_vars=["queue"], value_vars=["customer_negative_share", "escalation_rate"],
                   var_name="measure", value_name="value")
    long["measure"] = long["measure"].map({"customer_negative_share": "Customer negative share",
                                           "escalation_rate": "Escalation rate"})
    return alt.Chart(long, title="Queues compared").mark_bar().encode(
        x=alt.X("queue:N", title="Queue"),
        xOffset=alt.XOffset("measure:N"),
        y=alt.Y("value:Q", title="Share of calls / speech", axis=PERCENT),
        color=alt.Color("measure:N", title="Measure"),
        tooltip=["queue", "measure", alt.Tooltip("value:Q", format=".1%")],
    )


def timeline(segments: pd.DataFrame, labels: list[str]) -> alt.Chart:
    """One bar per segment on its role's row; colour is the emotion, opacity the
    confidence."""
    return alt.Chart(segments, title="Emotions over the call").mark_bar(height=22).encode(
        x=alt.X("start_s:Q", title="Time in call (s)"),
        x2="end_s:Q",
        y=alt.Y("role:N", title="Channel"),
        color=alt.Color("emotion:N", title="Emotion", scale=emotion_scale(labels)),
        opacity=alt.Opacity("confidence:Q", title="Confidence",
                            scale=alt.Scale(domain=[0, 1], range=[0.15, 1])),
        tooltip=["role", "emotion", alt.Tooltip("confidence:Q", format=".2f"),
                 alt.Tooltip("start_s:Q", title="start (s)", format=".1f"),
                 alt.Tooltip("end_s:Q", title="end (s)", format=".1f")],
    )
