"""Charts for the dashboard: Altair charts and the tables' sparkline images, all in one
colour map. Each chart takes a non-empty frame from a canned query; pages show a "no
calls" note instead of calling them with no rows."""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd

PERCENT = alt.Axis(format="%")
PERCENT_LEGEND = alt.Legend(format="%")

# Colours follow meaning: negative emotions warm, neutral grey or blue, positive green.
# Which kind an emotion is comes from its valence (labels.json, from the model folder);
# within a kind, emotions take the kind's colours in label order, except that a few
# common names keep a colour of their own so that they look the same for every model.
NEGATIVE_COLOUR = "#d62728"  # red: also the negative share's line and sparklines
PALETTES = {
    "negative": (NEGATIVE_COLOUR, "#ff7f0e", "#e6a700", "#8c564b", "#b2182b", "#f4a582"),
    "neutral": ("#9e9e9e", "#4e79a7", "#a0cbe8", "#5f6b7a"),
    "positive": ("#2ca02c", "#98df8a", "#1a7431", "#59a14f"),
}
OWN_COLOUR = {("negative", "angry"): NEGATIVE_COLOUR, ("negative", "sad"): "#ff7f0e",
              ("neutral", "neutral"): "#9e9e9e", ("positive", "happy"): "#2ca02c"}
ESCALATION_COLOUR = "#8b1a1a"  # dark red, beside the negative share in the queue chart
SPARKLINE_BASE = "#c8c8c8"


def _kind(valence: float) -> str:
    return "negative" if valence < 0 else "positive" if valence > 0 else "neutral"


def emotion_colours(labels: Sequence[str], valence: Mapping[str, float]) -> dict[str, str]:
    """label -> '#rrggbb' by meaning; a label without a valence counts as neutral."""
    kinds = {label: _kind(valence.get(label, 0)) for label in labels}
    colours = {label: OWN_COLOUR[kinds[label], label] for label in labels
               if (kinds[label], label) in OWN_COLOUR}
    for label in labels:
        if label not in colours:
            palette = PALETTES[kinds[label]]
            free = [c for c in palette if c not in colours.values()]
            colours[label] = free[0] if free else palette[len(colours) % len(palette)]
    return {label: colours[label] for label in labels}


def emotion_scale(colours: Mapping[str, str]) -> alt.Scale:
    """The same colour for an emotion on every chart (see emotion_colours)."""
    return alt.Scale(domain=list(colours), range=list(colours.values()))


def sparkline(values: Sequence[float | None] | None, width: int = 120, height: int = 28,
              y_max: float = 1.0, colour: str = NEGATIVE_COLOUR) -> str | None:
    """One value per day (0..y_max) as a small SVG line, for an ImageColumn: a day without
    a value (None or NaN) is a gap, a lone day a dot; a grey base line spans the range.
    None when no day has a value. (Streamlit's LineChartColumn shows a list with a missing
    value as text, and cannot leave a gap.)"""
    if values is None or not len(values):
        return None
    points = [None if v is None or math.isnan(v) else min(max(float(v), 0.0), y_max)
              for v in values]
    if all(v is None for v in points):
        return None
    pad = 3.0
    step = (width - 2 * pad) / max(len(points) - 1, 1)

    def xy(i: int, v: float) -> str:
        x = width / 2 if len(points) == 1 else pad + i * step
        return f"{x:.1f},{height - pad - v / y_max * (height - 2 * pad):.1f}"

    runs, run = [], []
    for i, v in enumerate([*points, None]):
        if v is None:
            if run:
                runs.append(run)
            run = []
        else:
            run.append(xy(i, v))
    shapes = [f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
              f'stroke="{SPARKLINE_BASE}" stroke-width="1"/>']
    for run in runs:
        if len(run) == 1:
            x, y = run[0].split(",")
            shapes.append(f'<circle cx="{x}" cy="{y}" r="2.2" fill="{colour}"/>')
        else:
            shapes.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
                          'stroke-width="1.8" stroke-linejoin="round" stroke-linecap="round"/>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">{"".join(shapes)}</svg>')
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def emotion_share(df: pd.DataFrame, colours: Mapping[str, str]) -> alt.Chart:
    return alt.Chart(df, title="Share of speech time by emotion").mark_bar().encode(
        x=alt.X("share:Q", title="Share of the role's speech time", axis=PERCENT,
                stack="normalize"),
        y=alt.Y("role:N", title="Role"),
        color=alt.Color("emotion:N", title="Emotion", scale=emotion_scale(colours)),
        order=alt.Order("share:Q", sort="descending"),
        tooltip=["role", "emotion", alt.Tooltip("share:Q", format=".1%"),
                 alt.Tooltip("speech_s:Q", title="speech (s)", format=".0f")],
    )


def emotion_trend(df: pd.DataFrame, colours: Mapping[str, str], grain: str,
                  role: str) -> alt.Chart:
    period = "Week (starting Monday)" if grain == "week" else "Day"
    return alt.Chart(df, title=f"{role}: emotion share per {grain}").mark_line(
        point=True).encode(
        x=alt.X("period:T", title=period),
        y=alt.Y("share:Q", title="Share of speech time", axis=PERCENT),
        color=alt.Color("emotion:N", title="Emotion", scale=emotion_scale(colours)),
        tooltip=[alt.Tooltip("period:T", title=period), "emotion",
                 alt.Tooltip("share:Q", format=".1%")],
    )


def daily_negative(df: pd.DataFrame) -> alt.Chart:
    return alt.Chart(df, title="Negative customer emotion per day").mark_line(
        color=NEGATIVE_COLOUR, point=alt.OverlayMarkDef(color=NEGATIVE_COLOUR)).encode(
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
        color=alt.Color("measure:N", title="Measure", scale=alt.Scale(
            domain=["Customer negative share", "Escalation rate"],
            range=[NEGATIVE_COLOUR, ESCALATION_COLOUR])),
        tooltip=["queue", "measure", alt.Tooltip("value:Q", format=".1%")],
    )


def timeline(segments: pd.DataFrame, colours: Mapping[str, str]) -> alt.Chart:
    """One bar per segment on its role's row; colour is the emotion, opacity the
    confidence."""
    return alt.Chart(segments, title="Emotions over the call").mark_bar(height=22).encode(
        x=alt.X("start_s:Q", title="Time in call (s)"),
        x2="end_s:Q",
        y=alt.Y("role:N", title="Channel"),
        color=alt.Color("emotion:N", title="Emotion", scale=emotion_scale(colours)),
        opacity=alt.Opacity("confidence:Q", title="Confidence",
                            scale=alt.Scale(domain=[0, 1], range=[0.15, 1])),
        tooltip=["role", "emotion", alt.Tooltip("confidence:Q", format=".2f"),
                 alt.Tooltip("start_s:Q", title="start (s)", format=".1f"),
                 alt.Tooltip("end_s:Q", title="end (s)", format=".1f")],
    )
