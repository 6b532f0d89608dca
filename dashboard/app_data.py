"""Streamlit glue shared by the dashboard pages: which results folder, the cached
connection and query results, and the sidebar filters that every page applies."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from callmood.dashboard import charts
from callmood.dashboard.canned import run_canned
from callmood.dashboard.results_db import connect, fingerprint, resolve_timezone
from callmood.results.location import STORAGE_OPTIONS_ENV, parse_storage_options

RESULTS_ENV = "CALLMOOD_RESULTS"
NO_CALLS = "No calls in this period."
_CONTEXT = "_callmood_results"
_PENDING = "_callmood_pending_filters"
PAGES = {"overview": "page_overview.py", "agents": "page_agents.py",
         "explorer": "page_explorer.py"}


@dataclass(frozen=True)
class Results:
    path: str
    fingerprint: str
    timezone: str  # times are shown in this zone ($CALLMOOD_TIMEZONE, default UTC)


def results_arg(argv: list[str] | None = None) -> str | None:
    """``--results`` after ``streamlit run app.py --``, else $CALLMOOD_RESULTS."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--results")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.results or os.environ.get(RESULTS_ENV)


@st.cache_resource(show_spinner=False, max_entries=4)
def _connection(path: str, fingerprint: str, timezone: str):
    """One DuckDB per results folder and state; a new nightly run changes the
    fingerprint, hence a fresh connection (and fresh cached query results)."""
    return connect(path, timezone=timezone, storage_options=storage_options())


@st.cache_data(show_spinner=False, max_entries=1024)
def _query(path: str, fingerprint: str, timezone: str, name: str,
           params: tuple) -> pd.DataFrame:
    cursor = _connection(path, fingerprint, timezone).cursor()  # one per thread
    try:
        return run_canned(cursor, name, dict(params), strict=False)
    finally:
        cursor.close()


def storage_options() -> dict:
    """`callmood dashboard --storage-options`, passed on in $CALLMOOD_STORAGE_OPTIONS."""
    return parse_storage_options(os.environ.get(STORAGE_OPTIONS_ENV))


def open_results(path: str) -> Results:
    results = Results(path, fingerprint(path, storage_options()), resolve_timezone(None))
    _connection(results.path, results.fingerprint, results.timezone)  # fail early if bad
    st.session_state[_CONTEXT] = results
    return results


def query(name: str, *, filtered: bool = True, **params) -> pd.DataFrame:
    """A canned query with the sidebar filters (each query takes those it declares)."""
    results: Results = st.session_state[_CONTEXT]
    values = {**(filters() if filtered else {}), **params}
    return _query(results.path, results.fingerprint, results.timezone, name,
                  tuple(sorted(values.items())))


def results_path() -> str:
    return st.session_state[_CONTEXT].path


def timezone() -> str:
    """The zone times are shown in (`callmood dashboard --timezone`, default UTC)."""
    return st.session_state[_CONTEXT].timezone


def options() -> pd.Series:
    return query("filter_options", filtered=False).iloc[0]


def emotion_colours() -> dict[str, str]:
    """The one emotion -> colour map of every chart, by meaning (the labels' valence)."""
    opts = options()
    return charts.emotion_colours(list(opts.emotions),
                                  dict(zip(opts.emotions, opts.valences, strict=True)))


def filters() -> dict:
    state = st.session_state
    dates = tuple(state.get("f_dates") or ())
    return {
        "date_from": dates[0] if dates else None,
        "date_to": dates[1] if len(dates) > 1 else None,
        "queue": state.get("f_queue"),
        "agent": state.get("f_agent"),
        "role": state.get("f_role"),
        "emotion": state.get("f_emotion"),
        "min_confidence": state.get("f_min_confidence", 0.0),
    }


def _day(value) -> dt.date | None:
    return None if pd.isna(value) else pd.Timestamp(value).date()


def _follow_the_data(key: str, default) -> None:
    """Give the widget `key` the value `default` unless the user chose another: a range
    nobody touched grows with each nightly run, in a dashboard left open overnight (a
    keyed widget keeps its old value when only its default changes)."""
    state, shown = st.session_state, f"_default_{key}"
    if key not in state or (shown in state and tuple(state[key]) == tuple(state[shown])):
        state[key] = default
    state[shown] = default


def sidebar_filters() -> None:
    # A click-through from another page asked for these; set before the widgets exist.
    for key, value in st.session_state.pop(_PENDING, {}).items():
        st.session_state[key] = value
    opts = options()
    first, last = _day(opts.first_day), _day(opts.last_day)
    _follow_the_data("f_dates", (first, last) if first else ())
    with st.sidebar:
        st.header("Filters")
        st.date_input("Date range", key="f_dates", format="YYYY-MM-DD")
        st.selectbox("Queue", list(opts.queues), index=None, placeholder="All queues",
                     key="f_queue")
        st.selectbox("Agent", list(opts.agents), index=None, placeholder="All agents",
                     key="f_agent")
        st.selectbox("Role", list(opts.roles), index=None, placeholder="All roles",
                     key="f_role")
        st.selectbox("Emotion", list(opts.emotions), index=None, placeholder="Any emotion",
                     key="f_emotion", help="Keep the calls with at least one segment of "
                     "this emotion (of the chosen role, at the minimum confidence).")
        st.slider("Minimum confidence", 0.0, 1.0, 0.0, 0.05, key="f_min_confidence",
                  help="Ignore segments scored below this confidence: in the emotion "
                       "filter, the emotion shares, the daily negative share and the "
                       "timeline. Per-call figures (a call's negative share, escalation; "
                       "the headline, agents and queues) are the nightly job's, over all "
                       "of the call's segments.")


def open_page(page: str, call: str | None = None, **filter_values) -> None:
    """Switch to a page with some filters set (e.g. an agent's calls), or to a call."""
    st.session_state[_PENDING] = {f"f_{k}": v for k, v in filter_values.items()}
    st.switch_page(PAGES[page], query_params={"call": call} if call else None)


def pct(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.0f}%"


def literal(value) -> str:
    """`value` as Markdown that shows its exact text: a code span, on one line.

    Streamlit renders Markdown in alerts, captions, metric values and tooltips, and call
    ids, agents, queues, file names and error texts come from URLs and from sidecar CSVs
    anyone can write: raw, "[Sign in](https://…)" would be a live link and "![x](…)" an
    image request. Backslash escapes are not enough (Streamlit still links a bare
    https://… or www.… address); nothing in a code span is parsed.
    """
    text = " ".join(str(value).splitlines())
    fence = "`" * (1 + max(map(len, re.findall("`+", text)), default=0))
    return f"{fence} {text} {fence}"  # one space of padding each side is not shown
