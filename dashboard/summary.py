"""A short plain-text summary of a results folder (``callmood query RESULTS --summary``)."""

from __future__ import annotations

import duckdb
import pandas as pd

from callmood.dashboard.canned import run_canned
from callmood.dashboard.results_db import timezone_of


def _pct(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * value:.0f}%"


def summarize(con: duckdb.DuckDBPyConnection, top: int = 5) -> str:
    runs = run_canned(con, "run_status").iloc[0]
    overview = run_canned(con, "overview").iloc[0]
    lines = []
    if runs["runs"]:
        status = runs["last_run_status"]
        ended = "finished" if status in (None, "finished") or pd.isna(status) else \
            f"did not finish ({status}), last seen"
        lines.append(
            f"Last run {runs['last_run_id']} {ended} "
            f"{runs['last_run_finished_at']:%Y-%m-%d %H:%M} {timezone_of(con)}; "
            f"{runs['runs']} run(s), "
            f"{runs['errors']} error(s) in all, "
            f"{runs['last_run_errors']} in the last run."
        )
    if not overview["calls"]:
        lines.append("No calls scored yet.")
        return "\n".join(lines)
    lines.append(
        f"Calls: {overview['calls']} from {overview['first_day']:%Y-%m-%d} to "
        f"{overview['last_day']:%Y-%m-%d}, {overview['audio_hours']:.2f} h of audio, "
        f"{overview['agents']} agent(s), {overview['queues']} queue(s)."
    )
    lines.append(
        f"Customer negative share: {_pct(overview['customer_negative_share'])}; "
        f"escalated calls: {overview['escalated_calls']}."
    )
    lines.append("Emotions by role (share of speech time):")
    shares = run_canned(con, "emotion_share")
    for role, group in shares.groupby("role", sort=True):
        parts = ", ".join(f"{row.emotion} {_pct(row.share)}" for row in group.itertuples())
        lines.append(f"  {role:<9} {parts}")
    escalated = run_canned(con, "top_escalated", {"limit": top})
    if len(escalated):
        lines.append(f"Escalating calls (top {min(top, len(escalated))}, steepest first):")
        for row in escalated.itertuples():
            slope = "n/a" if pd.isna(row.escalation_slope) else f"{row.escalation_slope:+.2f}/min"
            peak = (f"peak {row.peak_negative_emotion} {row.peak_negative_confidence:.2f}"
                    if isinstance(row.peak_negative_emotion, str) else "no negative peak")
            lines.append(
                f"  {row.call_id}  {row.call_date:%Y-%m-%d}  agent {row.agent_id}  "
                f"queue {row.queue}  slope {slope}  {peak}"
            )
    return "\n".join(lines)
