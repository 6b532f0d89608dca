"""Agents and queues: sortable tables with sparklines; a row opens its calls."""

import streamlit as st

from callmood.dashboard import app_data, charts

SHARE = st.column_config.NumberColumn
COLUMNS = {
    "calls": st.column_config.NumberColumn("Calls"),
    "audio_hours": st.column_config.NumberColumn("Hours", format="%.2f"),
    "customer_negative_share": SHARE("Customer negative", format="percent"),
    "escalation_rate": SHARE("Escalation rate", format="percent"),
    "escalated_calls": st.column_config.NumberColumn("Escalated"),
    "negative_share_change": SHARE("Negative Δ vs previous period", format="percent"),
    "escalation_rate_change": SHARE("Escalation Δ vs previous period", format="percent"),
    "previous_calls": st.column_config.NumberColumn("Calls, previous period"),
    "agents": st.column_config.NumberColumn("Agents"),
    "mean_duration_s": st.column_config.NumberColumn("Mean length (s)", format="%.0f"),
    "daily_negative_share": st.column_config.LineChartColumn(
        "Customer negative per day", y_min=0.0, y_max=1.0),
}


def table(df, key: str, first: str, title: str):
    return st.dataframe(df, hide_index=True, key=key, on_select="rerun",
                        selection_mode="single-row",
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
