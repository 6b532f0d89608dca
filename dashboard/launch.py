"""Start the Streamlit dashboard on a results folder (``callmood dashboard``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from callmood.dashboard.results_db import TIMEZONE_ENV, resolve_results, set_timezone

APP = Path(__file__).with_name("app.py")
# Put first so that options given on the command line (later) win.
DEFAULT_OPTIONS = ["--server.headless", "true", "--browser.gatherUsageStats", "false",
                   "--client.toolbarMode", "minimal"]


def streamlit_command(results: str | os.PathLike, options: list[str] | tuple = ()) -> list[str]:
    root = resolve_results(results)
    return [sys.executable, "-m", "streamlit", "run", str(APP), *DEFAULT_OPTIONS,
            *options, "--", "--results", str(root)]


def run_dashboard(results: str | os.PathLike, options: list[str] | tuple = (),
                  timezone: str | None = None) -> int:
    """Run Streamlit in the foreground until it exits; returns its exit status."""
    env = dict(os.environ)
    if timezone:
        with duckdb.connect() as con:  # a wrong name fails here, not in the page
            set_timezone(con, timezone)
        env[TIMEZONE_ENV] = timezone
    try:
        return subprocess.run(streamlit_command(results, options), env=env).returncode
    except KeyboardInterrupt:
        return 130
