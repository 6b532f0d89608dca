"""Two real `callmood live` servers on one results folder, as behind a load balancer,
with nightly `callmood score` runs: one starting while a call is in progress on each
server, one after both servers were stopped mid-call. Every call is in the results
exactly once: scored live, or from its recording where the live call was cut short."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from live_fixtures import CALLMOOD, CALLS, ROOT, call_audio, receive_until, start_server
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from callmood.dashboard.results_db import connect as open_results
from callmood.results.store import ResultsStore


def arrive(recordings: Path, call_ids: list[str]) -> None:
    """The recordings of `call_ids` arrive in `recordings`, with their calls.csv rows."""
    (recordings / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    if (recordings / "calls.csv").exists():
        with open(recordings / "calls.csv") as f:
            rows = list(csv.DictReader(f))
    for call_id in call_ids:
        shutil.copy(ROOT / "sample_calls" / CALLS[call_id]["file"],
                    recordings / CALLS[call_id]["file"])
        rows.append(CALLS[call_id])
    with open(recordings / "calls.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def nightly(recordings: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen([CALLMOOD, "score", str(recordings), "--out", str(results),
                             "--no-progress", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def begin(ws, call_id: str, audio_of: str, seconds: float | None = None) -> None:
    """Start `call_id` (with its calls.csv details when it has a recording) and send
    `seconds` (default all) of `audio_of`'s audio at once, without the stop."""
    row = CALLS.get(call_id, {})
    audio, rate = call_audio(audio_of)
    ws.send(json.dumps({"type": "start", "call_id": call_id, "sample_rate": rate,
                        "encoding": "pcm16", "channels": 2, "customer_channel": 1,
                        "agent_id": row.get("agent_id"), "queue": row.get("queue"),
                        "started_at": row.get("started_at")}))
    audio = audio[:int(seconds * rate)] if seconds else audio
    for i in range(0, len(audio), rate // 2):
        ws.send(audio[i:i + rate // 2].astype("<i2").tobytes())


def whole_call(url: str, call_id: str, audio_of: str) -> dict:
    with connect(url) as ws:
        begin(ws, call_id, audio_of)
        ws.send(json.dumps({"type": "stop"}))
        return receive_until(ws, "summary")[-1]


def held_by(results: Path, process: subprocess.Popen) -> None:
    """Wait until `process` holds the results folder's lock."""
    deadline = time.monotonic() + 120
    lock = results / ".lock"
    while not lock.exists() or lock.read_text().strip() != f"pid {process.pid}":
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the nightly run never held the results"
        time.sleep(0.02)


def test_two_servers_and_nightly_runs_write_each_call_once(tmp_path):
    results, recordings = tmp_path / "results", tmp_path / "recordings"
    arrive(recordings, ["call-0004"])  # a call nobody streamed
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with ThreadPoolExecutor(2) as pool:
        (a, url_a), (b, url_b) = pool.map(
            lambda name: start_server(tmp_path / name, results=results), ("a", "b"))
    try:
        assert whole_call(url_a, "call-0001", "call-0001")["complete"]
        assert whole_call(url_b, "live-b1", "call-0002")["complete"]  # it has no recording
        arrive(recordings, ["call-0001"])  # scored live: the night does not score it again

        # a call in progress on each server; they end while a nightly run holds the folder
        with connect(url_a) as on_a, connect(url_b) as on_b:
            begin(on_a, "call-0002", "call-0002")
            begin(on_b, "call-0005", "call-0005")
            night = nightly(recordings, results)
            held_by(results, night)
            for ws in (on_a, on_b):
                ws.send(json.dumps({"type": "stop"}))
                assert receive_until(ws, "summary")[-1]["complete"]
        out, err = night.communicate(timeout=300)
        assert night.returncode == 0, err
        assert "1 calls scored" in out and "1 unchanged" in out

        # both servers stopped mid-call: the calls are written as far as they were scored
        with connect(url_a) as on_a, connect(url_b) as on_b:
            begin(on_a, "call-0003", "call-0003", seconds=20)
            begin(on_b, "live-b3", "call-0006", seconds=20)
            for ws in (on_a, on_b):
                assert receive_until(ws, "segment")
            a.terminate()
            b.terminate()
            for ws in (on_a, on_b):  # the summary, then the close
                events = []
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        events.append(json.loads(ws.recv(timeout=60)))
                assert closed.value.rcvd.code == 1001
                assert events[-1]["type"] == "summary" and events[-1]["complete"] is False
        assert a.wait(60) == 0 and b.wait(60) == 0
    finally:
        a.kill()
        b.kill()

    arrive(recordings, ["call-0002", "call-0003", "call-0005"])
    night = nightly(recordings, results)
    out, err = night.communicate(timeout=300)
    assert night.returncode == 0, err
    # call-0003 was cut short: its recording is scored; the others were scored live
    assert "1 calls scored" in out and "4 unchanged" in out

    with open_results(results) as con:
        rows = con.sql("SELECT call_id, source_file, n_segments FROM calls").fetchall()
        marked = {f for (f,) in con.sql(
            "SELECT file FROM errors WHERE error_kind = 'incomplete'").fetchall()}
        segments = dict(con.sql("SELECT call_id, count(*) FROM segments GROUP BY 1"
                                ).fetchall())
    ids = [call_id for call_id, _, _ in rows]
    assert sorted(ids) == ["call-0001", "call-0002", "call-0003", "call-0004", "call-0005",
                           "live-b1", "live-b3"]  # each exactly once
    source = {call_id: file for call_id, file, _ in rows}
    for call_id in ("call-0001", "call-0002", "call-0005", "live-b1", "live-b3"):
        assert source[call_id] == f"live:{call_id}"
    for call_id in ("call-0003", "call-0004"):
        assert source[call_id] == str(recordings / CALLS[call_id]["file"])
    assert segments == {call_id: n for call_id, _, n in rows}
    assert marked == {"live:call-0003", "live:live-b3"}
    store = ResultsStore(str(results))
    assert store.manifest_entry("live:call-0003")["status"] == "moved"  # replaced
    assert store.manifest_entry("live:live-b3")["incomplete"]  # no recording came
    assert store.spooled_files() == []
