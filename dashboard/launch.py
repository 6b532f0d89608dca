"""Start the Streamlit dashboard on a results folder (``callmood dashboard``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb

from callmood.dashboard.results_db import TIMEZONE_ENV, resolve_results, set_timezone
from callmood.results.location import STORAGE_OPTIONS_ENV, parse_storage_options

APP = Path(__file__).with_name("app.py")
# Put first so that options given on the command line (later) win. The page has no login:
# it listens on this machine only unless --server.address says otherwise (README).
DEFAULT_OPTIONS = ["--server.headless", "true", "--browser.gatherUsageStats", "false",
                   "--client.toolbarMode", "minimal", "--server.address", "127.0.0.1"]


def streamlit_command(results: str | os.PathLike, options: list[str] | tuple = (),
                      storage_options: dict | None = None) -> list[str]:
    root = resolve_results(results, storage_options)
    return [sys.executable, "-m", "streamlit", "run", str(APP), *DEFAULT_OPTIONS,
            *options, "--", "--results", str(root)]


def exec_dashboard(results: str | os.PathLike, options: list[str] | tuple = (),
                   timezone: str | None = None, storage_options: str | None = None) -> None:
    """Become the Streamlit server (exec): a service manager's SIGTERM or a Ctrl-C then
    reaches the server itself, and no orphaned server outlives its launcher.
    `storage_options` (--storage-options' JSON) reach the page in its environment, not
    on its command line, which other users of the machine can read."""
    env = dict(os.environ)
    if timezone:
        with duckdb.connect() as con:  # a wrong name fails here, not in the page
            set_timezone(con, timezone)
        env[TIMEZONE_ENV] = timezone
    if storage_options:
        env[STORAGE_OPTIONS_ENV] = storage_options
    command = streamlit_command(results, options, parse_storage_options(storage_options))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
