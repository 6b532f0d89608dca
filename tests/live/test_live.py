"""Live scoring: a real `callmood live` server on localhost and real WebSocket clients
stream sample calls in both protocols (faster than real time)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from batch_fixtures import DIALOGUE, make_model_folder, synthetic_call
from live_fixtures import (
    CALLMOOD,
    call_audio,
    free_port,
    receive_until,
    start_server,
    stream_callmood,
    stream_media,
)
from websockets.sync.client import connect

from callmood.dashboard.results_db import connect as open_results
from callmood.live.stream import StreamScorer
from callmood.model.folder import load_model_folder, write_call_analytics
from callmood.results.call_summary import CallAnalytics
from callmood.results.meta import CallMeta
from callmood.results.store import ResultsStore
from callmood.signal import segment as signal_segment
from callmood.signal.segment import LevelMeter, VadConfig

ROOT = Path(__file__).resolve().parents[2]


# An eager escalation rule, given with --analytics: the alert path is what is tested here,
# not the fitted rule's judgement of the escalating call-0002 (which it does not flag).
EAGER = {"min_rise": 0.1, "min_evidence": 0.0, "min_segments": 1,
         "live_min_rise": 0.1, "live_min_evidence": 0.0, "live_min_segments": 1,
         "confirm_segments": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    (folder / "eager.json").write_text(json.dumps(EAGER))
    process, url = start_server(folder, options=("--analytics", str(folder / "eager.json")))
    yield url, folder / "results"
    process.terminate()
    process.wait(10)




def test_both_protocols_alerts_errors_and_results(server):
    url, results = server
    with connect(url) as ws:
        audio, rate = call_audio("call-0002")
        length_s = len(audio) / rate
        escalating = stream_callmood(ws, "call-0002")
        segments = [e for e in escalating if e["type"] == "segment"]
        assert len(segments) >= 8
        assert {e["role"] for e in segments} == {"agent", "customer"}
        for e in segments:
            assert e["call_id"] == "call-0002" and 0 <= e["start_s"] < e["end_s"] <= length_s
            assert sum(e["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        ends = [e["end_s"] for e in segments if e["role"] == "customer"]
        assert ends == sorted(ends)  # each channel's events come in call order
        alerts = [e for e in escalating if e["type"] == "alert"]
        assert len(alerts) == 1 and alerts[0]["at_s"] < length_s
        assert escalating[-1]["type"] == "summary" and escalating[-1]["escalated"]
        # the call's row says when the alert fired: the end of the segment it fired after
        assert escalating[-1]["live_alert_at_s"] == alerts[0]["segment_end_s"]
        assert 0 < alerts[0]["segment_end_s"] <= alerts[0]["at_s"]

        # garbage gets an error event; the connection and the next call still work
        ws.send("{not json")
        assert json.loads(ws.recv(timeout=30))["type"] == "error"
        ws.send(b"\x00\x01")
        assert "before a start" in json.loads(ws.recv(timeout=30))["message"]
        ws.send(json.dumps({"type": "start", "call_id": "x", "sample_rate": 8000,
                            "encoding": "opus"}))
        assert "unknown encoding" in json.loads(ws.recv(timeout=30))["message"]
        for start, expected in (({"channels": 2, "customer_channel": 5}, "customer_channel 5"),
                                ({"sample_rate": 8000.5}, "whole number"),
                                ({"customer_channel": "one"}, "whole number")):
            ws.send(json.dumps({"type": "start", "call_id": "x", "sample_rate": 8000,
                                **start}))
            assert expected in json.loads(ws.recv(timeout=30))["message"]
        ws.send(json.dumps({"type": "start", "call_id": "x", "sample_rate": 8000}))
        ws.send(json.dumps({"event": "media", "media": {"track": "inbound", "payload": ""}}))
        assert "callmood-protocol call" in json.loads(ws.recv(timeout=30))["message"]
        ws.send(json.dumps({"type": "stop"}))
        assert receive_until(ws, "summary")[-1]["segments"] == 0

    with connect(url) as ws:
        calm = stream_media(ws, "call-0001")
        assert [e for e in calm if e["type"] == "alert"] == []
        assert calm[-1]["type"] == "summary" and not calm[-1]["escalated"]
        assert {e["role"] for e in calm if e["type"] == "segment"} == {"agent", "customer"}

    # each call is in the results exactly once, as the nightly job writes it
    with open_results(results) as con:
        rows = con.sql("SELECT call_id, n_segments, escalated FROM calls ORDER BY 1").fetchall()
        assert [(r[0], r[2]) for r in rows] == [("call-0001", False), ("call-0002", True)]
        counts = dict(con.sql("SELECT call_id, count(*) FROM segments GROUP BY 1").fetchall())
        assert counts == {r[0]: r[1] for r in rows}

    # the nightly run does not score them again when their recordings arrive
    nightly = subprocess.run([CALLMOOD, "score", str(ROOT / "sample_calls"), "--out",
                              str(results), "--no-progress"], capture_output=True, text=True)
    assert nightly.returncode == 0, nightly.stderr
    assert "10 calls scored" in nightly.stdout and "2 unchanged" in nightly.stdout
    with open_results(results) as con:
        ids = [r[0] for r in con.sql("SELECT call_id FROM calls").fetchall()]
        assert len(ids) == len(set(ids)) == 12


def test_a_frame_split_across_messages_is_joined(server):
    """Audio after an odd-sized binary message used to be refused and dropped, which
    shifted every later segment of the call."""
    url, _ = server
    audio, rate = call_audio("call-0003")
    data = audio.astype("<i2").tobytes()
    segments = {}
    for call_id, step in (("aligned", rate * 4), ("split", 999)):  # 999: not 4-byte frames
        with connect(url) as ws:
            ws.send(json.dumps({"type": "start", "call_id": call_id, "sample_rate": rate,
                                "encoding": "pcm16", "channels": 2, "customer_channel": 1}))
            for i in range(0, len(data), step):
                ws.send(data[i:i + step])
            ws.send(json.dumps({"type": "stop"}))
            events = receive_until(ws, "summary")
        assert not [e for e in events if e["type"] == "error"]
        segments[call_id] = [(e["channel"], e["start_s"], e["end_s"]) for e in events
                             if e["type"] == "segment"]
    assert segments["split"] == segments["aligned"] and len(segments["split"]) >= 8


def test_a_results_folder_of_another_label_set_is_refused_at_start(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "labels.json").write_text(json.dumps({"labels": ["calm", "upset"]}))
    started = subprocess.run([CALLMOOD, "live", "--port", str(free_port()), "--results",
                              str(results)], capture_output=True, text=True, timeout=120)
    assert started.returncode == 1
    assert "holds scores for the labels ['calm', 'upset']" in started.stderr
    assert "Traceback" not in started.stderr


def half_a_call(url: str, call_id: str) -> list[dict]:
    """Start a call, send 20 s of it, return once three segments have come back."""
    audio, rate = call_audio("call-0003")
    with connect(url) as ws:
        ws.send(json.dumps({"type": "start", "call_id": call_id, "sample_rate": rate,
                            "encoding": "pcm16", "channels": 2, "customer_channel": 1}))
        for i in range(0, 20 * rate, rate // 2):  # 20 s of it
            ws.send(audio[i:i + rate // 2].astype("<i2").tobytes())
        events = []
        while sum(e["type"] == "segment" for e in events) < 3:
            events.append(json.loads(ws.recv(timeout=60)))
        return events


def written(results: Path, call_id: str) -> list[tuple]:
    """(duration_s, n_segments) of the call in the results, waiting up to 30 s for it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if results.is_dir():
            with open_results(results) as con:
                rows = con.sql("SELECT duration_s, n_segments FROM calls WHERE call_id = $id",
                               params={"id": call_id}).fetchall()
            if rows:
                return rows
        time.sleep(0.3)
    return []


def test_a_dropped_connection_keeps_what_was_scored(server):
    url, results = server
    events = half_a_call(url, "dropped")  # then the line drops
    rows = written(results, "dropped")
    # every segment the client was sent is in the results, and the audio heard after it
    assert rows and rows[0][1] >= 3
    assert rows[0][0] >= max(e["end_s"] for e in events if e["type"] == "segment")
    # its end was not heard: marked incomplete, so the nightly run scores its recording
    entry = ResultsStore(str(results)).manifest_entry("live:dropped")
    assert entry["incomplete"].startswith("the connection closed before the call's stop")


def test_a_call_that_ends_during_a_nightly_run_is_written_once_the_run_lets_go(server):
    """It used to hold a scoring thread for up to 15 minutes, then be dropped."""
    url, results = server
    spool = results / "_live_spool"
    with ResultsStore(str(results)).lock():  # as a nightly run holds the results
        half_a_call(url, "busy-night")  # then the line drops: the call ends
        deadline = time.monotonic() + 30
        while not list(spool.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(spool.glob("*.json"))) == 1
        with open_results(results) as con:
            assert con.sql("SELECT * FROM calls WHERE call_id = 'busy-night'").fetchall() == []
    rows = written(results, "busy-night")  # the server's retry, within RETRY_S
    assert rows and rows[0][1] >= 3
    assert list(spool.glob("*.json")) == []


def test_a_stream_reads_with_the_models_own_analytics_and_a_bad_file_stops_the_start(
        tmp_path):
    folder = make_model_folder(tmp_path / "model")
    write_call_analytics(folder, {"min_rise": 0.35, "live_min_rise": 0.4,
                                  "confirm_segments": 3}, "a test")
    scorer = StreamScorer(load_model_folder(folder),
                          CallMeta("own", None, None, dt.datetime.now(dt.UTC), 1), 2, 8000)
    assert scorer.analytics == CallAnalytics(min_rise=0.35, live_min_rise=0.4,
                                             confirm_segments=3)
    (folder / "call_analytics.json").write_text(json.dumps({"min_rise": "x" * 100_000}))
    started = subprocess.run([CALLMOOD, "live", "--model", str(folder), "--port",
                              str(free_port())], capture_output=True, text=True, timeout=120)
    assert started.returncode == 1 and "Traceback" not in started.stderr
    assert f"{folder / 'call_analytics.json'}: min_rise must be a number" in started.stderr
    assert len(started.stderr) < 500


def test_a_long_stream_keeps_a_bounded_level_history_and_the_same_windows(tmp_path,
                                                                          monkeypatch):
    """The live VAD kept every frame level of the call and re-joined them ten times a
    second per channel: memory and CPU per second grew with the call's length. It now
    forgets what it no longer reads, which changes no window."""
    model = load_model_folder(str(make_model_folder(tmp_path / "model")))
    monkeypatch.setattr(signal_segment, "NOISE_WINDOW_S", 20.0)  # 300 s: a long test
    turns = [(c, s + k * 13, e + k * 13) for k in range(8) for c, s, e in DIALOGUE]
    synthetic_call(tmp_path / "long.wav", turns, 104.0, rate=8000)
    audio, rate = sf.read(tmp_path / "long.wav", dtype="float32", always_2d=True)

    def stream() -> tuple[list, StreamScorer]:
        scorer = StreamScorer(model, CallMeta("long", None, None, dt.datetime.now(dt.UTC),
                                              1), 2, rate)
        kept = []
        for i in range(0, len(audio), rate // 2):
            scorer.feed(audio[i:i + rate // 2].T)
            kept.append(max(len(ch.planner.meter.levels()) for ch in scorer.channels))
        scorer.finish()
        return kept, scorer

    kept, bounded = stream()
    frames = (20.0 + 13) / VadConfig().frame_s  # the noise window and an open region
    assert max(kept) <= frames < len(audio) / rate / VadConfig().frame_s / 3
    monkeypatch.setattr(LevelMeter, "forget_before", lambda self, frame: None)
    _, unbounded = stream()
    assert bounded.windows == unbounded.windows and len(bounded.windows) > 20
    assert np.array_equal(np.array(bounded.probs), np.array(unbounded.probs))


def error_for(ws, message: dict | str | bytes) -> str:
    """Send one message (a dict as JSON; text or bytes as they are); the error it got."""
    ws.send(json.dumps(message) if isinstance(message, dict) else message)
    event = json.loads(ws.recv(timeout=30))
    assert event["type"] == "error", event
    return event["message"]


def start(**fields) -> dict:
    return {"type": "start", "call_id": "x", "sample_rate": 8000, **fields}


def media_start(**start_fields) -> dict:
    return {"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", **start_fields}}


RAW_EXCEPTION = re.compile(r"\b[A-Z]\w*(Error|Exception)\b|Traceback")


def test_every_field_of_a_bad_message_is_named_in_a_clear_error(server):
    """Bad fields used to come back as raw Python errors (ZeroDivisionError for 0
    channels, "negative dimensions", AttributeError, "unhashable type")."""
    url, _ = server
    bad = [
        (start(channels=0), "channels"), (start(channels=-1), "channels"),
        (start(channels=2.0), "channels"), (start(encoding=["pcm16"]), "encoding"),
        (start(call_id=["x"]), "call_id"), (start(call_id=None), "call_id"),
        (start(sample_rate="8000"), "sample_rate"), (start(sample_rate=0), "sample rate"),
        (start(agent_id={"id": 1}), "agent_id"), (start(queue=[1]), "queue"),
        (start(started_at=20260301), "started_at"),
        (start(started_at="10000-01-01T00:00:00"), "started_at"),
        (start(started_at="2300-01-01T00:00:00Z"), "outside 1970-2100"),
        (start(channels=2, customer_channel=True), "customer_channel"),
        ({"event": "start", "start": "x"}, "start"),
        (media_start(customParameters=[1]), "start.customParameters"),
        (media_start(customParameters={"call_id": 7}), "start.customParameters.call_id"),
        (media_start(callSid=["CA1"]), "start.callSid"),
        (media_start(mediaFormat="x"), "start.mediaFormat"),
        (media_start(mediaFormat={"sampleRate": "8000"}), "start.mediaFormat.sampleRate"),
        (media_start(mediaFormat={"sampleRate": 16000}), "start.mediaFormat"),
        ({"type": ["start"]}, "type"), ({"nothing": 1}, "type"),
        ("[" * 100_000 + "]" * 100_000, "nested"),
    ]
    with connect(url) as ws:
        for message, field in bad:
            text = error_for(ws, message)
            assert field in text and not RAW_EXCEPTION.search(text), (message, text)

        # a media-stream call: its audio comes as base64 in JSON media events
        ws.send(json.dumps(media_start()))
        for message, field in (
                ({"event": "media", "media": "x"}, "media"),
                ({"event": "media", "media": {"track": ["inbound"]}}, "media.track"),
                ({"event": "media", "media": {"track": "sideways"}}, "media.track"),
                ({"event": "media", "media": {"payload": 5}}, "media.payload"),
                ({"event": "media", "media": {"payload": "é"}}, "base64"),
                (b"\x00\x01", "base64")):
            text = error_for(ws, message)
            assert field in text and not RAW_EXCEPTION.search(text), (message, text)
        assert "JSON media events" in error_for(ws, b"\x00\x01")
        ws.send(json.dumps({"event": "stop"}))
        assert receive_until(ws, "summary")[-1]["call_id"] == "CA1"


def test_a_call_id_already_streaming_is_refused(server):
    """Two streams with the same call_id were both accepted, and one call was lost."""
    url, _ = server
    with connect(url) as first, connect(url) as second:
        first.send(json.dumps(start(call_id="twice")))
        assert "has not stopped" in error_for(first, start(call_id="twice"))  # it started
        text = error_for(second, start(call_id="twice"))
        assert "'twice'" in text and "already" in text
        text = error_for(second, media_start(customParameters={"call_id": "twice"}))
        assert "'twice'" in text and "already" in text
        assert "before a start" in error_for(second, b"\x00\x01")  # nothing was started
        first.send(json.dumps({"type": "stop"}))
        receive_until(first, "summary")
        # once the first call has ended, the id is free again
        second.send(json.dumps(start(call_id="twice")))
        second.send(json.dumps({"type": "stop"}))
        assert receive_until(second, "summary")[-1]["call_id"] == "twice"
    with connect(url) as dropped:  # a dropped connection frees its call id too
        dropped.send(json.dumps(start(call_id="back")))
        assert "has not stopped" in error_for(dropped, start(call_id="back"))
    with connect(url) as again:
        deadline = time.monotonic() + 30  # the server finishes the dropped call first
        # channels=0: refused either way, so this probe never starts a call
        while "already" in error_for(again, start(call_id="back", channels=0)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        again.send(json.dumps(start(call_id="back")))
        again.send(json.dumps({"type": "stop"}))
        assert receive_until(again, "summary")[-1]["call_id"] == "back"
