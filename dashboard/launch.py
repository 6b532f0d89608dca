"""Start the Streamlit dashboard on a results folder (``callmood dashboard``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb

from callmood.dashboard.results_db import TIMEZONE_ENV, resolve_results, set_timezone

APP = Path(__file__).with_name("app.py")
# Put first so that options given on the command line (later) win. The page has no login:
# it listens on this machine only unless --server.address says otherwise (README).
DEFAULT_OPTIONS = ["--server.headless", "true", "--browser.gatherUsageStats", "false",
                   "--client.toolbarMode", "minimal", "--server.address", "127.0.0.1"]


def streamlit_command(results: str | os.PathLike, options: list[str] | tuple = ()) -> list[str]:
    root = resolve_results(results)
    return [sys.executable, "-m", "streamlit", "run", str(APP), *DEFAULT_OPTIONS,
            *options, "--", "--results", str(root)]


def exec_dashboard(results: str | os.PathLike, options: list[str] | tuple = (),
                   timezone: str | None = None) -> None:
    """Become the Streamlit server (exec): a service manager's SIGTERM or a Ctrl-C then
    reaches the server itself, and no orphaned server outlives its launcher."""
    env = dict(os.environ)
    if timezone:
        with duckdb.connect() as con:  # a wrong name fails here, not in the page
            set_timezone(con, timezone)
        env[TIMEZONE_ENV] = timezone
    command = streamlit_command(results, options)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
