"""The nightly job on a real Dask cluster of separate processes: a `dask scheduler` and two
`dask worker`s started here, which see neither the input folder nor the model folder
(each runs in a mount namespace where those folders are empty), so the recordings come
from the S3 server and the model from the run (batch/cluster.py). One worker is killed
with SIGKILL mid-run: the run finishes, every call once, the local night's rows."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from batch_fixtures import SAMPLE_CALLS
from conftest import load_benchmark
from s3_data import assert_same_scores, table_rows

from callmood.results.store import MANIFEST

distributed = pytest.importorskip("distributed")
pytest_plugins = ["s3_fixtures"]

# a mount namespace in which each folder given after the command is an empty tmpfs
HIDING = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
          'for d in "$@"; do [ "$d" = -- ] && break; mount -t tmpfs none "$d"; shift; '
          'done; shift; exec "$@"', "sh"]


def hidden(folders: list[Path], command: list[str]) -> list[str]:
    return [*HIDING, *map(str, folders), "--", *command]


@contextlib.contextmanager
def dask_cluster(hide: list[Path], workers: int = 2):
    """bench_storage's cluster of processes, its workers in a namespace where the folders
    `hide` are empty; yields (address, {pid: worker process})."""
    if subprocess.run(hidden(hide, ["true"]), capture_output=True).returncode:
        pytest.skip("needs mount namespaces (unshare --user --mount) to hide the folders "
                    "from the workers")
    with load_benchmark("bench_storage").dask_cluster(
            workers, hide[0] / "dask", wrap=lambda command: hidden(hide, command),
            cwd=Path(sys.executable).parent) as cluster:
        yield cluster


SCORE_ON_CLUSTER = """
import sys
from callmood.batch.score import ScoreConfig, score_calls
summary = score_calls([sys.argv[1]], sys.argv[2], sys.argv[3],
                      ScoreConfig(backend="dask", scheduler=sys.argv[4]), progress=False)
print(summary.line())
"""


def manifest(s3) -> list[dict]:
    """The manifest's entries; one the run replaced between listing and reading is
    skipped."""
    entries = []
    for key in s3.keys(f"results/{MANIFEST}"):
        with contextlib.suppress(FileNotFoundError):
            entries.append(json.loads(s3.fs.cat_file(f"{s3.name}/{key}")))
    return entries


def test_a_night_on_a_cluster_of_processes_survives_a_killed_worker(s3, local_night,
                                                                    tmp_path_factory):
    calls, out = s3.upload(SAMPLE_CALLS, "calls"), s3.url("results")
    hide = [tmp_path_factory.getbasetemp(), SAMPLE_CALLS]  # the model and the recordings
    with dask_cluster(hide) as (address, workers), \
            distributed.Client(address, timeout="30s") as observer:
        observer.wait_for_workers(2, timeout=60)
        pids = observer.run(os.getpid)
        # the workers cannot read the model folder or the input folder
        assert not any(observer.run(os.path.exists, local_night.model).values())
        assert not any(observer.run(os.path.exists, str(SAMPLE_CALLS / "calls.csv")).values())
        run = subprocess.Popen([sys.executable, "-c", SCORE_ON_CLUSTER, calls, out,
                                local_night.model, address],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # once the first call is written, kill a worker that is scoring one
        deadline, busy, scored = time.monotonic() + 120, [], 0
        while not (busy and scored) and time.monotonic() < deadline:
            assert run.poll() is None, f"the run ended before a worker was killed: " \
                                       f"{run.stdout.read()}"
            busy = [w for w, keys in observer.processing().items() if keys]
            scored = sum(e["status"] == "scored" for e in manifest(s3))
            time.sleep(0.02)
        assert busy and scored, "no worker was busy after the first call was written"
        victim = pids[busy[0]]
        os.kill(victim, signal.SIGKILL)
        workers[victim].wait()
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, output
        assert scored < 12, "the run was over before the worker was killed"
        # what the dead worker was scoring was given to the other one

        def processed_twice(dask_scheduler) -> list[str]:  # runs on the scheduler, which
            # cannot import this module: a local function travels by value
            started = Counter(t.key for t in dask_scheduler.transition_log
                              if t.finish == "processing")
            return [str(key) for key, n in started.items() if n > 1]

        assert observer.run_on_scheduler(processed_twice)
        assert len(observer.scheduler_info()["workers"]) == 1

    assert "12 calls scored" in output
    assert sorted(e["status"] for e in manifest(s3)) == ["scored"] * 12
    for table in ("calls", "segments"):  # every call once, as the local night scored it
        assert_same_scores(table_rows(str(local_night.results), table),
                           table_rows(out, table), 1e-6)
