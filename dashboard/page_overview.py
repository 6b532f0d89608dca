"""Overview page: the period's figures, emotions by role, trends and patterns."""

import pandas as pd
import streamlit as st

from callmood.dashboard import app_data, charts
from callmood.dashboard.app_data import literal, pct

st.title("Overview")
runs = app_data.query("run_status", filtered=False).iloc[0]
overview = app_data.query("overview").iloc[0]
colours = app_data.emotion_colours()

# The period's figures are numbers; the last run, a date, goes on a line of its own (as a
# metric it was cut off: "2026-03-10 02:…").
cols = st.columns(5)
cols[0].metric("Calls", int(overview.calls))
cols[1].metric("Hours scored", f"{overview.audio_hours:.2f}")
cols[2].metric("Escalated calls", int(overview.escalated_calls))
cols[3].metric("Customer negative share", pct(overview.customer_negative_share))
cols[4].metric("Errors", int(runs.errors),
               help=f"{int(runs.last_run_errors)} in the last run, {int(runs.errors)} in all")
unfinished = not (pd.isna(runs.last_run_status) or runs.last_run_status == "finished")
last_run = ("never" if pd.isna(runs.last_run_finished_at)
            else f"{runs.last_run_finished_at:%Y-%m-%d %H:%M} {app_data.timezone()}")
st.markdown(f"**Last run:** {last_run}" + (
    f" · :red[did not finish] (status {literal(runs.last_run_status)})" if unfinished else ""))

if not overview.calls:
    st.info(app_data.NO_CALLS)
    st.stop()

st.altair_chart(charts.emotion_share(app_data.query("emotion_share"), colours), width="stretch")

st.subheader("Trends")
grain = st.radio("Trend per", ["day", "week"], horizontal=True, key="trend_grain",
                 format_func=str.capitalize)
trend = app_data.query("emotion_trend", grain=grain)
for col, (role, part) in zip(st.columns(max(trend.role.nunique(), 1)), trend.groupby("role"),
                             strict=False):
    col.altair_chart(charts.emotion_trend(part, colours, grain, role), width="stretch")
daily = app_data.query("daily_negative").dropna(subset=["negative_share"])
if daily.empty:
    st.info("No customer speech in this period.")
else:
    st.altair_chart(charts.daily_negative(daily), width="stretch")

left, right = st.columns(2)
with left:
    hours = app_data.query("hour_of_day")
    if hours.empty:
        st.info("No call start times in this period.")
    else:
        st.altair_chart(charts.hour_of_day(hours, app_data.timezone()), width="stretch")
with right:
    st.markdown("**Emotion transitions within calls**")
    transitions = app_data.query("transitions")
    if transitions.empty:
        st.info("No emotion changes in this period.")
    else:
        st.dataframe(transitions.head(15), hide_index=True, column_config={
            "from_emotion": "From", "to_emotion": "To", "turns_negative": "Turns negative",
        })

st.subheader("Escalated calls")
escalated = app_data.query("top_escalated")
if escalated.empty:
    st.info("No escalated calls in this period.")
else:
    event = st.dataframe(
        escalated, hide_index=True, key="escalated_table", on_select="rerun",
        selection_mode="single-row",
        column_order=["call_id", "started_at", "agent_id", "queue", "escalation_slope",
                      "customer_negative_share", "peak_negative_emotion",
                      "peak_negative_confidence"],
        column_config={
            "call_id": "Call", "started_at": st.column_config.DatetimeColumn("Started"),
            "agent_id": "Agent", "queue": "Queue",
            "escalation_slope": st.column_config.NumberColumn("Slope (per min)", format="%.2f"),
            "customer_negative_share": st.column_config.NumberColumn(
                "Customer negative", format="percent"),
            "peak_negative_emotion": "Peak emotion",
            "peak_negative_confidence": st.column_config.NumberColumn("Peak confidence",
                                                                     format="%.2f"),
        })
    st.caption("Select a row to open the call in the call explorer.")
    if event.selection.rows:
        app_data.open_page("explorer", call=escalated.call_id.iloc[event.selection.rows[0]])
