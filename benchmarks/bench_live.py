"""Live scoring against the nightly job, and its latency with many calls at once.

Agreement: every sample call is scored by the nightly job (batch.score.score_calls) and
streamed through live.stream.StreamScorer in 20-ms frames; each live segment is matched
to the nightly segment of the same channel it overlaps most, and the share of matched
segments with the same emotion is reported, with both escalation flags per call and the
moments live alerts fired.

Latency: a real `callmood live` server, and N real WebSocket clients each streaming a
sample call at real time as a telephony media stream (20-ms base64 mu-law frames per
track). A segment's latency is the time from the moment the audio of its end was sent
to the moment its event arrived. For N = 1, 2, 4, ... it reports p50/p95, up to the
first N whose p95 exceeds --max-p95.

Long call: the sample calls one after another, repeated to --long-minutes, streamed
through one StreamScorer in 20-ms frames on one thread; the CPU time each minute of audio
costs, first minute against last (it must not grow with the call's length).

    .venv/bin/python benchmarks/bench_live.py [--model DIR] [--max-clients 32]
        [--parts agreement,latency,long_call]

writes benchmarks/results/live.json (the parts not run are kept from the last one).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from callmood.batch.scan import CallMeta
from callmood.batch.score import ScoreConfig, score_calls
from callmood.dashboard import connect
from callmood.live.stream import StreamScorer
from callmood.model.folder import default_model_dir, load_model_folder

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

CALLS = harness.ROOT / "sample_calls"
FRAME_S = 0.02


def sample_calls() -> list[dict]:
    with open(CALLS / "calls.csv") as f:
        return list(csv.DictReader(f))


def live_events(model, row: dict) -> list[dict]:
    audio, rate = sf.read(CALLS / row["file"], dtype="float32", always_2d=True)
    channel = int(row["customer_channel"]) if row["customer_channel"] else None
    scorer = StreamScorer(model, CallMeta(row["call_id"], None, None,
                                          datetime.now(timezone.utc), channel),
                          audio.shape[1], rate)
    step = int(FRAME_S * rate)
    events = []
    for i in range(0, len(audio), step):
        events += [e | {"heard_s": (i + step) / rate} for e in scorer.feed(audio[i:i + step].T)]
    return events + scorer.finish()


def agreement(model_dir: str) -> dict:
    model = load_model_folder(model_dir)
    with tempfile.TemporaryDirectory() as out:
        score_calls([str(CALLS)], out, model_dir, ScoreConfig(workers=2), progress=False)
        con = connect(out)
        batch = con.sql("SELECT call_id, channel, start_s, end_s, emotion FROM segments"
                        ).df()
        flags = dict(con.sql("SELECT call_id, escalated FROM calls").fetchall())
    same = total = 0
    per_call = {}
    for row in sample_calls():
        events = live_events(model, row)
        mine = batch[batch.call_id == row["call_id"]]
        agree = matched = 0
        for e in (e for e in events if e["type"] == "segment"):
            theirs = mine[mine.channel == e["channel"]]
            overlap = (np.minimum(theirs.end_s, e["end_s"])
                       - np.maximum(theirs.start_s, e["start_s"])).clip(lower=0)
            if len(theirs) and overlap.max() > 0:
                matched += 1
                agree += theirs.emotion.iloc[int(np.argmax(overlap.to_numpy()))] == e["emotion"]
        same, total = same + agree, total + matched
        per_call[row["call_id"]] = {
            "segments_live": sum(e["type"] == "segment" for e in events),
            "segments_nightly": len(mine), "matched": matched, "same_emotion": agree,
            "escalated_nightly": bool(flags[row["call_id"]]),
            "escalated_live_at_end": bool(events[-1]["escalated"]),
            "alerts_at_s": [e["at_s"] for e in events if e["type"] == "alert"]}
    return {"same_emotion_share": same / total if total else None, "matched": total,
            "calls": per_call}


async def stream_call(url: str, row: dict, latencies: list[float]) -> None:
    """One client: the call's tracks at real time; latencies of its segment events."""
    from websockets.asyncio.client import connect as ws_connect

    audio, rate = sf.read(CALLS / row["file"], dtype="int16", always_2d=True)
    customer = int(row["customer_channel"]) if row["customer_channel"] else 0
    tracks = [("inbound", customer)] + ([("outbound", 1 - customer)]
                                        if audio.shape[1] > 1 else [])
    async with ws_connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"event": "start", "start": {
            "callSid": f"{row['call_id']}-{id(latencies)}-{time.monotonic_ns()}",
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}))
        started = time.monotonic()

        async def receive() -> None:
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "segment":
                    latencies.append(time.monotonic() - started - event["end_s"])
                elif event["type"] == "summary":
                    return

        receiver = asyncio.create_task(receive())
        step = int(FRAME_S * rate)
        for k, i in enumerate(range(0, len(audio), step)):
            await asyncio.sleep(max(0.0, started + k * FRAME_S - time.monotonic()))
            for track, channel in tracks:
                out = io.BytesIO()
                sf.write(out, audio[i:i + step, channel], rate, format="RAW", subtype="ULAW")
                await ws.send(json.dumps({"event": "media", "media": {
                    "track": track, "payload": base64.b64encode(out.getvalue()).decode()}}))
        await ws.send(json.dumps({"event": "stop"}))
        await receiver


async def load_test(url: str, clients: int) -> dict:
    rows = sample_calls()
    latencies: list[float] = []
    await asyncio.gather(*(stream_call(url, rows[i % len(rows)], latencies)
                           for i in range(clients)))
    values = np.array(latencies)
    return {"clients": clients, "events": len(values),
            "p50_s": round(float(np.percentile(values, 50)), 3),
            "p95_s": round(float(np.percentile(values, 95)), 3),
            "max_s": round(float(values.max()), 3)}


def latency(model_dir: str, max_clients: int, max_p95: float) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "callmood"), "live",
                               "--model", model_dir, "--port", str(port)],
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        rows, clients = [], 1
        while clients <= max_clients:
            row = asyncio.run(load_test(f"ws://127.0.0.1:{port}", clients))
            print(json.dumps(row), flush=True)
            rows.append(row)
            if row["p95_s"] > max_p95:
                break
            clients *= 2
        return rows
    finally:
        server.terminate()
        server.wait(10)


def long_call(model_dir: str, minutes: float) -> dict:
    model = load_model_folder(model_dir)
    rate = 8000
    calls = []
    for row in sample_calls():
        audio, file_rate = sf.read(CALLS / row["file"], dtype="float32", always_2d=True)
        if file_rate == rate and audio.shape[1] == 2:
            calls.append(audio if row["customer_channel"] == "1" else audio[:, ::-1])
    one_pass = np.concatenate(calls)
    audio = np.tile(one_pass, (int(np.ceil(minutes * 60 * rate / len(one_pass))), 1))
    audio = audio[:int(minutes * 60 * rate)]
    torch.set_num_threads(1)
    scorer = StreamScorer(model, CallMeta("long", None, None, datetime.now(timezone.utc), 1),
                          2, rate)
    step, per_minute, started = int(FRAME_S * rate), [], time.process_time()
    for i in range(0, len(audio), step):
        scorer.feed(audio[i:i + step].T)
        if (i + step) % (60 * rate) == 0:
            now = time.process_time()
            per_minute.append(round(now - started, 3))
            started = now
    scorer.finish()
    return {"audio_minutes": minutes, "threads": 1, "frame_s": FRAME_S,
            "cpu_s_per_audio_minute": per_minute,
            "first_minute_cpu_s": per_minute[0], "last_minute_cpu_s": per_minute[-1],
            "segments": len(scorer.windows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_dir()))
    parser.add_argument("--max-clients", type=int, default=32)
    parser.add_argument("--max-p95", type=float, default=1.0)
    parser.add_argument("--long-minutes", type=float, default=60.0)
    parser.add_argument("--parts", default="agreement,latency,long_call")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    parts = args.parts.split(",")
    path = args.out / "live.json"
    report = harness.read_json(path, {})
    report["machine"] = harness.machine("torch")
    if "agreement" in parts:
        report["agreement"] = agreement(args.model)
        print(json.dumps({k: v for k, v in report["agreement"].items() if k != "calls"}),
              flush=True)
    if "latency" in parts:
        report["latency"] = latency(args.model, args.max_clients, args.max_p95)
        held = [r["clients"] for r in report["latency"] if r["p95_s"] <= args.max_p95]
        report["most_clients_with_p95_within_limit"] = max(held) if held else 0
    if "long_call" in parts:
        report["long_call"] = long_call(args.model, args.long_minutes)
        print(json.dumps({k: v for k, v in report["long_call"].items()
                          if k != "cpu_s_per_audio_minute"}), flush=True)
    harness.write_json(path, report)


if __name__ == "__main__":
    main()
