"""The nightly job on a real Dask cluster of separate processes: a `dask scheduler` and two
`dask worker`s started here, which see neither the input folder nor the model folders
(each runs in a mount namespace where those folders are empty), so the recordings come
from the S3 server and the model from the run (batch/cluster.py); each run is a client
process of its own. A worker killed with SIGKILL mid-run: the run finishes, every call
once, the local night's rows. Two runs at once with two models at the same path (two
machines' folders): each gets its own model's rows. The client killed mid-run: the
workers drop its tasks, and the next run takes over its lease and completes the night."""

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
from batch_fixtures import SAMPLE_CALLS, make_model_folder
from conftest import load_benchmark
from s3_data import Night, assert_same_scores, table_rows

from callmood.batch.cluster import PLUGIN
from callmood.results.store import MANIFEST, OBJECT_LOCK

distributed = pytest.importorskip("distributed")
pytest_plugins = ["s3_fixtures"]

CALLS = 12  # in sample_calls/
# the run lock's lease of the runs here: the next run takes over a killed run's lease once
# it is this old, within the 10 s a run waits for the lock (ObjectLock's rules)
LEASE_S = 8.0

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


@contextlib.contextmanager
def blind_cluster(tmp_path_factory, models: list[str]):
    """dask_cluster with the tests' temporary folders (the model folders among them) and
    sample_calls/ hidden from its workers; yields (address, {pid: worker process}, a
    client that watches)."""
    hide = [tmp_path_factory.getbasetemp(), SAMPLE_CALLS]
    with dask_cluster(hide) as (address, workers), \
            distributed.Client(address, timeout="30s") as observer:
        observer.wait_for_workers(2, timeout=60)
        for model in models:
            assert not any(observer.run(os.path.exists, model).values())
        assert not any(observer.run(os.path.exists, str(SAMPLE_CALLS / "calls.csv")).values())
        yield address, workers, observer


SCORE_ON_CLUSTER = """
import sys
from callmood.batch.score import ScoreConfig, score_calls
summary = score_calls([sys.argv[1]], sys.argv[2], sys.argv[3],
                      ScoreConfig(backend="dask", scheduler=sys.argv[4]), progress=False,
                      lease_s=float(sys.argv[5]))
print(summary.line())
"""


def start_run(calls: str, out: str, model: str, address: str,
              model_files: Path | None = None) -> subprocess.Popen:
    """`callmood score` of `calls` into `out` on the cluster, as a client process; one
    given `model_files` finds those files in the folder `model` (as another machine
    would find another model at the same path)."""
    command = [sys.executable, "-c", SCORE_ON_CLUSTER, calls, out, model, address,
               str(LEASE_S)]
    if model_files:
        command = hidden([Path(model)], ["sh", "-c", 'cp "$1"/* "$2" && shift 2 && '
                                                    'exec "$@"', "sh", str(model_files),
                                         model, *command])
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finished(run: subprocess.Popen) -> str:
    """The run's output, once it has ended well."""
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    return output


def manifest(s3, results: str = "results") -> list[dict]:
    """The manifest's entries; one the run replaced between listing and reading is
    skipped."""
    entries = []
    for key in s3.keys(f"{results}/{MANIFEST}"):
        with contextlib.suppress(FileNotFoundError):
            entries.append(json.loads(s3.fs.cat_file(f"{s3.name}/{key}")))
    return entries


def scored(s3, results: str = "results") -> int:
    return sum(e["status"] == "scored" for e in manifest(s3, results))


def poll_while_running(run: subprocess.Popen, ready, what: str, seconds: float = 120.0):
    """Poll `ready()` until it gives something true, and return that; fails if the run
    ends first or time runs out."""
    deadline = time.monotonic() + seconds
    while not (found := ready()):
        assert run.poll() is None, f"the run ended before {what}: {run.stdout.read()}"
        assert time.monotonic() < deadline, f"no {what} within {seconds:g} s"
        time.sleep(0.02)
    return found


def shipped_models(observer) -> list[str]:
    """The runs' model plugins the scheduler holds, and so gives to every worker."""
    def callmood_plugins(dask_scheduler) -> list[str]:  # runs on the scheduler, which
        # cannot import this module: a local function travels by value
        return [name for name in dask_scheduler.worker_plugins if name.startswith(PLUGIN)]

    return observer.run_on_scheduler(callmood_plugins)


def models_on_workers(observer) -> list[str]:
    """The runs' model plugins the workers hold, and the model folders they wrote."""
    def callmood_models(dask_worker) -> list[str]:
        folders = os.listdir(dask_worker.local_directory)
        return [name for name in [*dask_worker.plugins, *folders] if name.startswith(PLUGIN)]

    return [name for names in observer.run(callmood_models).values() for name in names]


def assert_night(s3, output: str, results: str, expected: Night, unchanged: int = 0
                 ) -> None:
    """Every call once in `results`, with the rows `expected` holds; the run that wrote
    `output` found `unchanged` of them scored already, scored the others, and none
    failed."""
    line = next(line for line in output.splitlines() if " calls scored " in line)
    assert line.startswith(f"{CALLS - unchanged} calls scored "), output
    assert ", 0 files failed" in line and f", {unchanged} unchanged files" in line, output
    assert sorted(e["status"] for e in manifest(s3, results)) == ["scored"] * CALLS
    for table in ("calls", "segments"):
        assert_same_scores(table_rows(str(expected.results), table),
                           table_rows(s3.url(results), table), 1e-6)


@pytest.fixture(scope="module")
def other_night(tmp_path_factory, s3_endpoint) -> Night:
    """sample_calls/ scored from the local disk by another model (local_night's with
    other weights)."""
    from callmood.batch.score import ScoreConfig, score_calls

    folder = tmp_path_factory.mktemp("other-night")
    model = str(make_model_folder(folder / "model", seed=1))
    score_calls([str(SAMPLE_CALLS)], str(folder / "results"), model, ScoreConfig(workers=2),
                progress=False)
    return Night(model, folder / "results")


def test_a_night_on_a_cluster_of_processes_survives_a_killed_worker(s3, local_night,
                                                                    tmp_path_factory):
    calls = s3.upload(SAMPLE_CALLS, "calls")
    with blind_cluster(tmp_path_factory, [local_night.model]) as (address, workers,
                                                                  observer):
        pids = observer.run(os.getpid)
        run = start_run(calls, s3.url("results"), local_night.model, address)
        # once the first call is written, kill a worker that is scoring one
        busy = poll_while_running(run, lambda: scored(s3) and [
            w for w, keys in observer.processing().items() if keys],
            "a worker busy after the first call was written")
        victim = pids[busy[0]]
        os.kill(victim, signal.SIGKILL)
        workers[victim].wait()
        output = finished(run)
        # what the dead worker was scoring was given to the other one

        def processed_twice(dask_scheduler) -> list[str]:  # runs on the scheduler
            started = Counter(t.key for t in dask_scheduler.transition_log
                              if t.finish == "processing")
            return [str(key) for key, n in started.items() if n > 1]

        assert observer.run_on_scheduler(processed_twice)
        assert len(observer.scheduler_info()["workers"]) == 1
    assert_night(s3, output, "results", local_night)


def test_two_runs_at_once_with_the_same_model_path_keep_their_own_models(
        s3, local_night, other_night, tmp_path_factory):
    """Two clients with different models at the same path, both on the cluster at once:
    each run's workers score with its own model, also after the other run has ended."""
    calls = s3.upload(SAMPLE_CALLS, "calls")
    with blind_cluster(tmp_path_factory, [local_night.model, other_night.model]) as (
            address, _, observer):
        runs = {"results-a": start_run(calls, s3.url("results-a"), local_night.model,
                                       address),
                "results-b": start_run(calls, s3.url("results-b"), local_night.model,
                                       address, model_files=Path(other_night.model))}
        at_once = 0  # the most runs whose models the cluster held together
        while any(run.poll() is None for run in runs.values()):
            at_once = max(at_once, len(shipped_models(observer)))
            time.sleep(0.05)
        outputs = {results: finished(run) for results, run in runs.items()}
        assert at_once == 2
        assert not shipped_models(observer) and not models_on_workers(observer)
    assert_night(s3, outputs["results-a"], "results-a", local_night)
    assert_night(s3, outputs["results-b"], "results-b", other_night)


def test_a_killed_client_s_night_is_completed_by_the_next_run(s3, local_night,
                                                              tmp_path_factory):
    calls, out = s3.upload(SAMPLE_CALLS, "calls"), s3.url("results")
    with blind_cluster(tmp_path_factory, [local_night.model]) as (address, _, observer):
        killed = start_run(calls, out, local_night.model, address)
        poll_while_running(killed, lambda: scored(s3), "the first call written")
        killed.kill()
        killed.communicate()
        done = scored(s3)
        assert done < CALLS, "the run was over before its client was killed"
        # the killed client's lease is left, and its model; its tasks are dropped
        lease = s3.fs.cat_file(f"{s3.name}/results/{OBJECT_LOCK}").decode()
        assert f" pid {killed.pid} " in lease
        assert len(shipped_models(observer)) == 1

        def tasks(dask_worker) -> int:
            return len(dask_worker.state.tasks)

        deadline = time.monotonic() + 60
        while any(observer.run(tasks).values()):
            assert time.monotonic() < deadline, "the workers still hold the killed " \
                                                "client's tasks after 60 s"
            time.sleep(0.1)
        # the next run waits for that lease to lapse, takes it over and scores the rest
        # with its own model; the killed run's is removed from the workers
        output = finished(start_run(calls, out, local_night.model, address))
        assert not shipped_models(observer) and not models_on_workers(observer)
    assert not s3.fs.exists(f"{s3.name}/results/{OBJECT_LOCK}")
    assert_night(s3, output, "results", local_night, unchanged=done)
