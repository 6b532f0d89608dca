"""Real WebSocket clients of a real `callmood live` server: starting it on a free port
and streaming sample calls in both protocols (shared by the live and package tests)."""

from __future__ import annotations

import base64
import csv
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
with open(ROOT / "sample_calls" / "calls.csv") as f:
    CALLS = {r["call_id"]: r for r in csv.DictReader(f)}
CALLMOOD = str(Path(sys.executable).parent / "callmood")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, callmood: str = CALLMOOD, options: tuple[str, ...] = (),
                 results: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A real `callmood live` (the `callmood` command given, with `options`) writing into
    `results` (default folder/results), its log in folder; returns it and its URL."""
    port = free_port()
    with open(folder / "server.log", "w") as log:
        process = subprocess.Popen([callmood, "live", "--port", str(port), "--results",
                                    str(results or folder / "results"), *options],
                                   stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (folder / "server.log").read_text()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    return process, f"ws://127.0.0.1:{port}"


def call_audio(call_id: str) -> tuple[np.ndarray, int]:
    data, rate = sf.read(ROOT / "sample_calls" / CALLS[call_id]["file"], dtype="int16",
                         always_2d=True)
    return data, rate


def receive_until(ws, kind: str) -> list[dict]:
    events = []
    while not events or events[-1]["type"] != kind:
        events.append(json.loads(ws.recv(timeout=60)))
    return events


def stream_callmood(ws, call_id: str) -> list[dict]:
    """callmood's protocol: start, 0.5-s binary frames of interleaved pcm16, stop."""
    audio, rate = call_audio(call_id)
    ws.send(json.dumps({"type": "start", "call_id": call_id, "sample_rate": rate,
                        "encoding": "pcm16", "channels": audio.shape[1],
                        "customer_channel": int(CALLS[call_id]["customer_channel"]),
                        "agent_id": CALLS[call_id]["agent_id"], "queue": "billing"}))
    for i in range(0, len(audio), rate // 2):
        ws.send(audio[i:i + rate // 2].astype("<i2").tobytes())
    ws.send(json.dumps({"type": "stop"}))
    return receive_until(ws, "summary")


def stream_media(ws, call_id: str) -> list[dict]:
    """A telephony media stream: 20-ms base64 mu-law frames per track."""
    audio, rate = call_audio(call_id)
    customer = int(CALLS[call_id]["customer_channel"])
    ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    ws.send(json.dumps({"event": "start", "streamSid": "MZ1", "start": {
        "streamSid": "MZ1", "callSid": "CA1", "tracks": ["inbound", "outbound"],
        "customParameters": {"call_id": call_id},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
    step = rate // 50
    for i in range(0, len(audio), step):
        for track, channel in (("inbound", customer), ("outbound", 1 - customer)):
            frame = np.ascontiguousarray(audio[i:i + step, channel])
            buffer = _mulaw(frame, rate)
            ws.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {
                "track": track, "payload": base64.b64encode(buffer).decode()}}))
    ws.send(json.dumps({"event": "stop", "streamSid": "MZ1"}))
    return receive_until(ws, "summary")


def _mulaw(samples: np.ndarray, rate: int) -> bytes:
    import io

    out = io.BytesIO()
    sf.write(out, samples, rate, format="RAW", subtype="ULAW")
    return out.getvalue()
