"""Call explorer: pick a call, see its emotion timeline and metadata, play the audio."""

import pandas as pd
import streamlit as st

from callmood.dashboard import app_data, charts
from callmood.dashboard.app_data import literal, pct
from callmood.dashboard.audio import input_roots, read_audio

LISTED = 500  # calls in the picker

st.title("Call explorer")
# ?call=ID (a shared link or a click-through) is listed wherever it ranks among the calls
calls = app_data.query("calls_list", limit=LISTED, call_id=st.query_params.get("call"))
calls = calls.set_index("call_id", drop=False)
if calls.empty:
    st.info(app_data.NO_CALLS)
    st.stop()
if calls.matching_calls.iloc[0] > LISTED:
    st.caption(f"The newest {LISTED} of {calls.matching_calls.iloc[0]} matching calls are "
               "listed; narrow the filters to find an older one.")


def describe(call_id: str) -> str:
    row = calls.loc[call_id]
    started = "" if pd.isna(row.started_at) else f"{row.started_at:%Y-%m-%d %H:%M}"
    flag = " · escalated" if row.escalated else ""
    return f"{call_id} · {started} · agent {row.agent_id} · {row.queue}{flag}"


# ?call=ID (a shared link or a click-through) picks the call, once; the URL then follows
# the selection. Values from the URL or the data go into Markdown only through literal().
requested = st.query_params.get("call")
if requested in calls.index and st.session_state.get("_explorer_url_call") != requested:
    st.session_state["explorer_call"] = requested
elif requested and requested not in calls.index:
    st.warning(f"Call {literal(requested)} does not match the filters; showing another.")
if st.session_state.get("explorer_call") not in calls.index:
    st.session_state.pop("explorer_call", None)  # not among the filtered calls
call_id = st.selectbox("Call", list(calls.index), format_func=describe, key="explorer_call")
st.query_params["call"] = st.session_state["_explorer_url_call"] = call_id
call = calls.loc[call_id]

# Text (agent, queue, emotion) on a line that wraps: as metrics they were cut off
# ("tech_su…"); the numbers stay metrics.
peak = ("–" if pd.isna(call.peak_negative_emotion) else
        f"{literal(call.peak_negative_emotion)} {call.peak_negative_confidence:.2f}")
st.markdown(f"**Agent:** {'–' if pd.isna(call.agent_id) else literal(call.agent_id)} · "
            f"**Queue:** {'–' if pd.isna(call.queue) else literal(call.queue)} · "
            f"**Peak negative:** {peak}")
cols = st.columns(5)
cols[0].metric("Duration", f"{call.duration_s:.0f} s")
interval = ("" if pd.isna(call.customer_negative_share_low) else
            f"95 % interval {pct(call.customer_negative_share_low)}–"
            f"{pct(call.customer_negative_share_high)}: one call's share is uncertain")
cols[1].metric("Customer negative", pct(call.customer_negative_share), help=interval or None)
cols[2].metric("Escalated", "yes" if call.escalated else "no")
cols[3].metric("Live alert", "–" if pd.isna(call.live_alert_at_s) else
               f"at {call.live_alert_at_s:.0f} s",
               help="When the live alert fired, or would have for a call scored at night: the "
                    "escalation rule read on the call so far, with thresholds of its own, so "
                    "it can differ from the flag on the whole call.")

segments = app_data.query("call_segments", call_id=call_id)
if segments.empty:
    st.info("No segments of this call match the filters.")
else:
    st.altair_chart(charts.timeline(segments, app_data.emotion_colours()), width="stretch")

st.subheader("Audio")
choices = [None, *segments.index]


def segment_label(i) -> str:
    if i is None:
        return "Whole call"
    s = segments.loc[i]
    return f"{s.start_s:.1f}–{s.end_s:.1f} s · {s.role} · {s.emotion} ({s.confidence:.2f})"


picked = st.selectbox("Play", choices, format_func=segment_label, key="explorer_segment")
span = (None, None) if picked is None else (segments.start_s[picked], segments.end_s[picked])
options = app_data.storage_options()
audio = read_audio(call.source_file, input_roots(app_data.results_path(), options), *span,
                   storage_options=options)
if audio is None:
    # the name as plain text: a file name is data, never Markdown (it could hold a link)
    st.warning("The recording is not available (moved, deleted, unreadable, or not under "
               "a scored input folder):")
    st.code(call.source_file, language=None)
else:
    st.audio(audio[0], format=audio[1])

with st.expander("Segments"):
    st.dataframe(segments, hide_index=True)
with st.expander("Call metadata"):
    st.dataframe(call.astype(str).rename("value").to_frame(), width="stretch")
