"""A run killed with SIGKILL in the middle leaves a readable dataset; the next run finishes it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from batch_fixtures import DIALOGUE, make_model_folder, synthetic_call
from processes import kill_once_workers_run, still_alive_after

CALLMOOD = str(Path(sys.executable).parent / "callmood")


def test_kill_and_resume(tmp_path):
    model = make_model_folder(tmp_path / "model")
    folder = tmp_path / "calls"
    long_dialogue = [(c, s + k * 13, e + k * 13) for k in range(9) for c, s, e in DIALOGUE]
    for i in range(8):
        synthetic_call(folder / f"call{i}.wav", long_dialogue, 120.0, seed=i)
    out = tmp_path / "results"
    command = [CALLMOOD, "score", str(folder), "--out", str(out), "--model", str(model),
               "--workers", "1", "--no-progress"]

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(out.glob("calls/*/*.parquet")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list(out.glob("calls/*/*.parquet")))
    assert 1 <= done_before < 8
    # what was finished is readable as it is
    assert ds.dataset(out / "calls", partitioning="hive").count_rows() == done_before

    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    # a call counts as done once its manifest entry follows its Parquet files; the one
    # killed between the two is scored again, replacing its rows
    skipped = int(finished.stdout.split(" unchanged files skipped")[0].rsplit(" ", 1)[-1])
    assert done_before - 1 <= skipped <= done_before
    calls = ds.dataset(out / "calls", partitioning="hive").to_table().to_pylist()
    assert sorted(c["call_id"] for c in calls) == [f"call{i}" for i in range(8)]
    segments = ds.dataset(out / "segments", partitioning="hive").to_table().to_pylist()
    keys = [(s["call_id"], s["channel"], s["start_s"]) for s in segments]
    assert len(keys) == len(set(keys))
    assert {s["call_id"] for s in segments} == {c["call_id"] for c in calls}
    assert sum(c["n_segments"] for c in calls) == len(segments)
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]


def test_a_killed_run_leaves_no_workers_behind(tmp_path):
    model = make_model_folder(tmp_path / "model")
    folder = tmp_path / "calls"
    for i in range(6):
        synthetic_call(folder / f"call{i}.wav", DIALOGUE, 60.0, seed=i)
    out = tmp_path / "results"
    process = subprocess.Popen([CALLMOOD, "score", str(folder), "--out", str(out), "--model",
                                str(model), "--workers", "2", "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = kill_once_workers_run(process, 3)  # 2 loky workers and the resource tracker
    assert not still_alive_after(workers)


def test_unreadable_files_and_folders_are_error_rows_and_are_tried_again(tmp_path):
    """Run as a user who cannot read the file: root without the capabilities that let it
    ignore file modes (setpriv drops them), so the test means the same as root or not."""
    model = make_model_folder(tmp_path / "model")
    folder, out = tmp_path / "calls", tmp_path / "results"
    for name in ("open", "closed", "locked/inside"):
        synthetic_call(folder / f"{name}.wav", DIALOGUE, 13.0, seed=len(name))
    (folder / "closed.wav").chmod(0)
    (folder / "locked").chmod(0)
    command = [CALLMOOD, "score", str(folder), "--out", str(out), "--model", str(model),
               "--workers", "1", "--no-progress"]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux) to drop its rights")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 1, first.stdout + first.stderr
    errors = ds.dataset(out / "errors", partitioning="hive").to_table().to_pylist()
    assert sorted((Path(e["file"]).name, e["error_kind"]) for e in errors) == [
        ("closed.wav", "permission"), ("locked", "unreadable_folder")]
    assert all("owner and mode" in e["message"] for e in errors)

    (folder / "closed.wav").chmod(0o644)  # fixed: the next run scores both
    (folder / "locked").chmod(0o755)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.startswith("2 calls scored")
