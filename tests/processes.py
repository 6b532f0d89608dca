"""Helpers for tests that start servers, kill processes and check what they leave running
(Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields: state, ppid, ...
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_once_workers_run(process: subprocess.Popen, workers: int) -> set[int]:
    """SIGKILL `process` once it has `workers` live children; returns those children."""
    deadline = time.monotonic() + 120
    while len(found := {w for w in children(process.pid) if alive(w)}) < workers \
            and time.monotonic() < deadline:
        assert process.poll() is None, "the process ended before its workers started"
        time.sleep(0.01)
    time.sleep(1.0)  # the workers are up, maybe still idle or importing
    found |= {w for w in children(process.pid) if alive(w)}
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return found


def still_alive_after(pids: set[int], seconds: float = 60.0) -> list[int]:
    """The pids still running after up to `seconds`. A worker killed before its
    initializer ran exits when it gets there, after its imports: seconds, or tens of
    seconds on a loaded machine."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def wait_for_http(url: str, process: subprocess.Popen, seconds: float = 60.0) -> None:
    """Wait until `url` answers 200; fails if `process` ends first or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"the server ended (status {process.returncode})"
        assert time.monotonic() < deadline, f"{url} did not answer within {seconds:g} s"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                assert response.status == 200
                return
        except OSError:
            time.sleep(0.2)
