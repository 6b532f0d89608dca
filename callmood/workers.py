"""Worker processes that end with the process that started them.

joblib's loky workers outlive a parent killed with SIGKILL (an operator's kill -9, a
time limit) and go on computing: a stopped nightly run or training then leaves two
processes burning the cores that the next run needs. Both the scoring job and the
feature extraction start their workers through `workers_die_with_this_process`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import joblib


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1


def die_with(parent_pid: int) -> None:
    """The loky workers' initializer: have the kernel kill this worker when the process
    `parent_pid` dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before this worker got here
        os._exit(1)


def workers_die_with_this_process() -> joblib.parallel_config:
    """joblib settings under which loky workers die with this process (also idle ones)."""
    return joblib.parallel_config(backend="loky", initializer=die_with,
                                  initargs=(os.getpid(),))
