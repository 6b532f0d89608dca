"""Agents and queues: sortable tables with sparklines; a row opens its calls."""

import streamlit as st

from callmood.dashboard import app_data, charts

SHARE = st.column_config.NumberColumn
PREVIOUS = "the previous period (the same number of days just before the date range)"
NO_PREVIOUS = "– : no previous period to compare with"
COLUMNS = {
    "calls": st.column_config.NumberColumn("Calls"),
    "audio_hours": st.column_config.NumberColumn("Hours", format="%.2f"),
    "customer_negative_share": SHARE("Customer negative", format="percent"),
    "negative_interval": st.column_config.TextColumn(
        "95 % interval",
        help="Where the customer negative share lies with 95 % confidence: its spread over "
             "the calls and each call's own uncertainty. Few calls give a wide interval."),
    "few_calls": st.column_config.CheckboxColumn(
        "Few calls", help="Fewer than 10 calls with customer speech: read the figures as a "
                          "hint, not a measurement."),
    "escalation_rate": SHARE("Escalation rate", format="percent"),
    "escalated_calls": st.column_config.NumberColumn("Escalated"),
    "negative_share_change": SHARE(
        "Negative Δ vs previous period", format="percent",
        help=f"Change of the customer negative share from {PREVIOUS}. {NO_PREVIOUS} (no "
             "calls, or no customer speech, in it)."),
    "escalation_rate_change": SHARE(
        "Escalation Δ vs previous period", format="percent",
        help=f"Change of the escalation rate from {PREVIOUS}. {NO_PREVIOUS} (no calls in it)."),
    "previous_calls": st.column_config.NumberColumn(
        "Calls, previous period",
        help=f"Calls in {PREVIOUS}. {NO_PREVIOUS} (no calls in it)."),
    "agents": st.column_config.NumberColumn("Agents"),
    "mean_duration_s": st.column_config.NumberColumn("Mean length (s)", format="%.0f"),
    # An image: a line chart column shows a list with a missing day as text, and no gaps.
    "daily_negative_share": st.column_config.ImageColumn(
        "Customer negative per day", width="medium",
        help="The customer negative share of each day of the date range, 0 to 100 %; a gap "
             "is a day without calls (or without customer speech)."),
}


def interval_text(low, high) -> str | None:
    """'22–38 %', or None (shown as –) when there is no share."""
    if low != low or high != high:  # NaN
        return None
    return f"{100 * low:.0f}–{100 * high:.0f} %"


def table(df, key: str, first: str, title: str):
    shown = df.assign(
        daily_negative_share=df.daily_negative_share.map(charts.sparkline),
        negative_interval=[interval_text(lo, hi) for lo, hi in
                           zip(df.negative_share_low, df.negative_share_high, strict=True)],
    ).drop(columns=["negative_share_low", "negative_share_high"])
    # what a reader looks for first, before the table scrolls sideways
    first_columns = [first, "calls", "customer_negative_share", "negative_interval",
                     "few_calls", "daily_negative_share"]
    shown = shown[first_columns + [c for c in shown.columns if c not in first_columns]]
    return st.dataframe(shown, hide_index=True, key=key, on_select="rerun",
                        selection_mode="single-row", placeholder="–",
                        column_config={first: title, **COLUMNS})


st.title("Agents and queues")
agents = app_data.query("agents")
if agents.empty:
    st.info(app_data.NO_CALLS)
    st.stop()

st.subheader("Agents")
event = table(agents, "agents_table", "agent_id", "Agent")
st.caption("Sort by clicking a column header. Select a row to see that agent's calls. "
           "The previous period is the same number of days just before the date range.")
if event.selection.rows:
    app_data.open_page("explorer", agent=agents.agent_id.iloc[event.selection.rows[0]])

st.subheader("Queues")
queues = app_data.query("queues")
event = table(queues, "queues_table", "queue", "Queue")
st.caption("Select a row to see that queue's calls.")
if event.selection.rows:
    app_data.open_page("explorer", queue=queues.queue.iloc[event.selection.rows[0]])
st.altair_chart(charts.queue_comparison(queues), width="stretch")
