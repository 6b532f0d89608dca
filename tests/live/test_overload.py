"""A real `callmood live` whose calls send audio faster than it scores: it reads every
connection on (pings and control messages are answered while audio waits), scores
behind without losing an event, cuts a live call it falls too far behind, and on SIGTERM
writes each call once, marking those it did not score in full."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import numpy as np
from live_fixtures import CALLS, call_audio, start_server
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from callmood.dashboard.results_db import connect as open_results
from callmood.results.store import ResultsStore


def start_message(call_id: str) -> str:
    return json.dumps({"type": "start", "call_id": call_id, "sample_rate": 8000,
                       "encoding": "pcm16", "channels": 2, "customer_channel": 1})


def long_audio(seconds: float) -> bytes:
    """`seconds` of the sample calls one after another: interleaved 8 kHz pcm16."""
    calls = [call_audio(c)[0] for c in sorted(CALLS) if call_audio(c)[0].shape[1] == 2]
    audio = np.concatenate(calls)
    return audio[:int(seconds * 8000)].astype("<i2").tobytes()


def results_rows(results, sql: str) -> list[tuple]:
    with open_results(results) as con:
        return con.sql(sql).fetchall()


def test_a_server_behind_its_calls_answers_at_once_and_loses_no_event(tmp_path):
    """The server used to read a connection only as fast as it scored: a ping or a
    control message waited behind all the audio sent before it (at 64 calls, clients'
    keepalive timed out)."""
    process, url = start_server(tmp_path, options=("--threads", "1", "--buffer-s", "600"))
    audio = long_audio(120)  # a few seconds of scoring on one thread

    async def stream() -> tuple[list[dict], int, int]:
        async with connect_async(url, max_size=None) as ws:
            await ws.send(start_message("backlog"))
            for i in range(0, len(audio), 1600):  # 0.05-s messages: 2,400 of them
                await ws.send(audio[i:i + 1600])
            await ws.send(json.dumps({"type": "pause"}))  # a control message it lacks
            events, pong_at = [], None
            pong = await ws.ping()
            receiving = asyncio.ensure_future(ws.recv())
            while pong_at is None or not any(e["type"] == "error" for e in events):
                done, _ = await asyncio.wait([receiving] + [pong] * (pong_at is None),
                                             timeout=60, return_when=asyncio.FIRST_COMPLETED)
                assert done, "neither the pong nor an event came within 60 s"
                if pong in done:
                    pong_at = len(events)  # the events that came before the pong
                if receiving in done:
                    events.append(json.loads(receiving.result()))
                    receiving = asyncio.ensure_future(ws.recv())
            await ws.send(json.dumps({"type": "stop"}))
            while not events or events[-1]["type"] != "summary":
                events.append(json.loads(await receiving))
                receiving = asyncio.ensure_future(ws.recv())
            receiving.cancel()
            return events, pong_at, next(i for i, e in enumerate(events)
                                         if e["type"] == "error")

    try:
        events, pong_at, error_at = asyncio.run(stream())
    finally:
        process.terminate()
        process.wait(60)
    segments = [e for e in events if e["type"] == "segment"]
    # both were answered while most of the audio before them still waited to be scored
    assert "unknown message 'pause'" in events[error_at]["message"]
    assert sum(e["type"] == "segment" for e in events[:error_at]) < len(segments) / 2
    assert sum(e["type"] == "segment" for e in events[:pong_at]) < len(segments) / 2
    # and none of it was lost: every window scored came back, and the call is whole
    summary = events[-1]
    assert summary["complete"] is True and len(segments) == summary["segments"] > 20
    assert summary["duration_s"] == len(audio) / 4 / 8000
    ends = [e["end_s"] for e in segments if e["channel"] == 1]
    assert ends == sorted(ends) and ends[-1] > 100
    assert results_rows(tmp_path / "results", "SELECT call_id, n_segments FROM calls") == [
        ("backlog", len(segments))]


def test_a_live_call_the_server_falls_behind_is_cut_and_marked_incomplete(tmp_path):
    process, url = start_server(tmp_path, options=("--buffer-s", "1"))
    audio = call_audio("call-0003")[0].astype("<i2").tobytes()
    second = 8000 * 4
    try:
        with connect(url) as ws:
            ws.send(start_message("call-0003"))
            ws.send(audio[:second // 2])
            time.sleep(3)  # the call goes on in real time: not a recording sent whole
            ws.send(audio[second // 2:4 * second])  # 3.5 s: more than 1 s would wait
            events = [json.loads(ws.recv(timeout=60))]
            while events[-1]["type"] != "summary":  # at once, not at the call's stop
                events.append(json.loads(ws.recv(timeout=60)))
            [cut] = [e for e in events if e["type"] == "error"]
            assert cut["code"] == "behind" and cut["call_id"] == "call-0003"
            assert "fell 1 s of audio behind" in cut["message"]
            assert "nightly run scores its recording" in cut["message"]
            assert events[-1]["complete"] is False
            # the rest of the call is read and dropped: no event, no error
            for i in range(4 * second, len(audio), second // 2):
                ws.send(audio[i:i + second // 2])
            ws.send(json.dumps({"type": "pause"}))
            assert "unknown message" in json.loads(ws.recv(timeout=60))["message"]
            ws.send(json.dumps({"type": "stop"}))
            ws.send(json.dumps({"type": "pause"}))  # the stop got nothing back either
            assert "before a start" in json.loads(ws.recv(timeout=60))["message"]
    finally:
        process.terminate()
        assert process.wait(60) == 0
    results = tmp_path / "results"
    assert results_rows(results, "SELECT call_id, source_file, n_segments FROM calls") == [
        ("call-0003", "live:call-0003", events[-1]["segments"])]
    [(message,)] = results_rows(results, "SELECT message FROM errors WHERE error_kind = "
                                         "'incomplete' AND file = 'live:call-0003'")
    assert message.startswith("the server fell 1 s of audio behind the call: scored live "
                              f"up to {events[-1]['duration_s']:.1f} s")
    entry = ResultsStore(str(results)).manifest_entry("live:call-0003")
    assert entry["status"] == "scored" and entry["incomplete"] == message


def test_stopping_under_load_writes_each_call_once_and_marks_what_was_cut(tmp_path):
    """SIGTERM with calls whose audio waits: the server drops what waits, writes what it
    scored of each call and marks the call incomplete, then closes with 1001."""
    process, url = start_server(tmp_path, options=("--threads", "1", "--buffer-s", "600"))
    audio = long_audio(60)
    heard: dict[str, list[dict]] = {}
    closes = []
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(url, max_size=None)) for _ in range(6)]
        try:
            for k, ws in enumerate(sockets):
                ws.send(start_message(f"load-{k}"))
                for i in range(0, len(audio), 16000):
                    ws.send(audio[i:i + 16000])
            for k, ws in enumerate(sockets):  # each call scored in part, most of it waits
                heard[f"load-{k}"] = [json.loads(ws.recv(timeout=60))]
            process.terminate()
            for k, ws in enumerate(sockets):
                try:
                    while True:
                        heard[f"load-{k}"].append(json.loads(ws.recv(timeout=60)))
                except ConnectionClosed as closed:
                    closes.append(closed.rcvd.code)
            assert process.wait(60) == 0
        finally:
            process.kill()
    assert closes == [1001] * len(sockets)
    results = tmp_path / "results"
    rows = dict(results_rows(results, "SELECT call_id, n_segments FROM calls"))
    assert sorted(rows) == sorted(heard)  # each call once
    marked = {file for (file,) in results_rows(
        results, "SELECT file FROM errors WHERE error_kind = 'incomplete'")}
    assert marked == {f"live:{call_id}" for call_id in heard}
    for call_id, events in heard.items():
        summary = events[-1]
        assert summary["type"] == "summary" and summary["complete"] is False
        segments = sum(e["type"] == "segment" for e in events)
        assert rows[call_id] == summary["segments"] == segments > 0
        assert summary["duration_s"] < len(audio) / 4 / 8000  # not all of it was scored
    assert not list((results / "_live_spool").glob("*.json"))
