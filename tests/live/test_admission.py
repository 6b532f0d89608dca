"""Admission control of a real `callmood live --max-calls 1`: a call beyond capacity is
refused at its start with a `busy` error (a media stream is hung up with 1013), counted,
and GET /health tells a load balancer whether the server takes calls."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from live_fixtures import receive_until, start_server, stream_callmood
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def full_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("admission")
    process, url = start_server(folder, options=("--max-calls", "1"))
    yield url
    process.terminate()
    process.wait(10)


def health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url.replace("ws://", "http://") + "/health",
                                    timeout=10) as answer:
            assert answer.headers.get_all("Content-Type") == ["application/json"]
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def start(ws, call_id: str) -> None:
    ws.send(json.dumps({"type": "start", "call_id": call_id, "sample_rate": 8000,
                        "encoding": "pcm16", "channels": 1}))


def test_a_call_beyond_capacity_is_refused_and_the_server_says_it_is_full(full_server):
    assert health(full_server) == (200, {"accepting": True, "calls": 0, "max_calls": 1,
                                         "refused": 0})
    with connect(full_server) as first, connect(full_server) as second:
        start(first, "first")
        first.send(b"\x00\x00" * 800)  # the call is under way
        status, body = health(full_server)
        deadline = time.monotonic() + 30
        while body["calls"] == 0 and time.monotonic() < deadline:  # taken as it arrives
            status, body = health(full_server)
        assert status == 503 and body["accepting"] is False and body["calls"] == 1

        start(second, "second")
        refused = json.loads(second.recv(timeout=30))
        assert refused["type"] == "error" and refused["code"] == "busy"
        assert "capacity (1 calls at once)" in refused["message"]
        assert health(full_server)[1]["refused"] == 1

        # a media stream cannot wait: it is refused and hung up with "try again later"
        with connect(full_server) as media:
            media.send(json.dumps({"event": "start", "streamSid": "MZ9", "start": {
                "streamSid": "MZ9", "callSid": "CA9", "tracks": ["inbound", "outbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                "channels": 1}}}))
            assert json.loads(media.recv(timeout=30))["code"] == "busy"
            with pytest.raises(ConnectionClosed) as closed:
                media.recv(timeout=30)
            assert closed.value.rcvd.code == 1013
        assert health(full_server)[1]["refused"] == 2

        # the accepted call goes on as if nothing happened, and once it ends the refused
        # connection's next start is taken
        first.send(json.dumps({"type": "stop"}))
        assert receive_until(first, "summary")[-1]["call_id"] == "first"
        events = stream_callmood(second, "call-0001")
        assert events[-1]["type"] == "summary" and events[-1]["call_id"] == "call-0001"
    assert health(full_server)[0] == 200
