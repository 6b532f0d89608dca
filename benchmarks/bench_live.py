"""Live scoring against the nightly job, and its latency with many calls at once.

Agreement: every sample call is scored by the nightly job (batch.score.score_calls) and
streamed through live.stream.StreamScorer in 20-ms frames; each live segment is matched
to the nightly segment of the same channel it overlaps most, and the share of matched
segments with the same emotion is reported, with both escalation flags per call and the
moments live alerts fired.

Latency under load: for each number of calls at once (--loads, up to 128), a fresh real
`callmood live` server writing into a fresh results folder, and that many real WebSocket
clients (in this process, on the same cores) each streaming the first --call-s seconds
of a sample call at real time as a telephony media stream (20-ms base64 mu-law events
per track), all starting within a second. A segment's latency is the time from the
moment the audio of its end was sent to the moment its event arrived. Per load: p50/p95
of accepted calls, calls refused (`busy`), cut (`behind`), connections closed by an
error (anything but a normal close, 1001 at SIGTERM, or 1013 after `busy`), and whether
each accepted call is in the results exactly once. The servers run with --buffer-s 10
(the default 30 would outlast the 25-s calls, and no call would be cut). The sweep runs
with admission off (--max-calls at the largest load), which gives the capacity (the
most calls with p95 within --max-p95, none cut, no error); then the largest load with
--max-calls at that capacity; then SIGTERM --stop-after seconds into the largest load,
with and without admission: how long the server takes to stop, and what it wrote.

Long call: the sample calls one after another, repeated to --long-minutes, streamed
through one StreamScorer in 20-ms frames on one thread; the CPU time each minute of audio
costs, first minute against last (it must not grow with the call's length).

    .venv/bin/python benchmarks/bench_live.py [--model DIR] [--loads 1,16,32,48,64,96,128]
        [--call-s 25] [--buffer-s 10] [--stop-after 15]
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
import os
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
from callmood.workers import usable_cores

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


def media_steps(row: dict, seconds: float) -> list[list[str]]:
    """The call's first `seconds` as a telephony media stream: per 20-ms step, one JSON
    media event per track (made once; every client streaming the call sends the same)."""
    audio, rate = sf.read(CALLS / row["file"], dtype="int16", always_2d=True)
    customer = int(row["customer_channel"])
    audio = audio[:int(seconds * rate)]
    tracks = []
    for track, channel in (("inbound", customer), ("outbound", 1 - customer)):
        out = io.BytesIO()
        sf.write(out, audio[:, channel], rate, format="RAW", subtype="ULAW")
        tracks.append((track, out.getvalue()))
    step = int(FRAME_S * rate)
    return [[json.dumps({"event": "media", "media": {
        "track": track, "payload": base64.b64encode(data[i:i + step]).decode()}})
        for track, data in tracks] for i in range(0, len(audio), step)]


async def stream_call(url: str, call_id: str, steps: list[list[str]], delay: float) -> dict:
    """One client, `delay` s from now: a media stream of `steps` at real time, then stop;
    what became of it (refused, cut, how its connection closed) and the latency of each
    segment event: from the moment the audio of its end was sent to its arrival."""
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosed

    await asyncio.sleep(delay)
    outcome = {"call_id": call_id, "latencies": [], "refused": False, "cut": False,
               "segments": 0, "summary": None, "close": None, "send_lag_s": 0.0}

    def closed(err: ConnectionClosed) -> None:
        outcome["close"] = err.rcvd.code if err.rcvd else 1006

    try:
        async with ws_connect(url, max_size=None, open_timeout=60) as ws:
            await ws.send(json.dumps({"event": "start", "start": {
                "callSid": call_id, "customParameters": {"call_id": call_id},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}))
            started = time.monotonic()

            async def receive() -> None:
                try:
                    while True:  # recv() raises ConnectionClosed, whatever its code
                        event = json.loads(await ws.recv())
                        if event["type"] == "segment":
                            outcome["segments"] += 1
                            outcome["latencies"].append(time.monotonic() - started
                                                        - event["end_s"])
                        elif event["type"] == "error":
                            outcome["refused"] |= event.get("code") == "busy"
                            outcome["cut"] |= event.get("code") == "behind"
                        elif event["type"] == "summary":
                            outcome["summary"] = event
                            outcome["close"] = 1000
                            return
                except ConnectionClosed as err:
                    closed(err)

            receiver = asyncio.create_task(receive())
            try:
                for k, step in enumerate(steps):
                    due = started + k * FRAME_S
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                    # how late this client sends: the clients share the server's cores
                    outcome["send_lag_s"] = max(outcome["send_lag_s"], time.monotonic() - due)
                    if receiver.done():  # refused, or closed
                        break
                    for message in step:
                        await ws.send(message)
                if not receiver.done():
                    await ws.send(json.dumps({"event": "stop"}))
            except ConnectionClosed:
                pass  # the receiver has seen it too
            await receiver
    except (OSError, TimeoutError) as err:  # could not connect
        outcome["close"] = f"{type(err).__name__}: {err}"
    return outcome


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time every process on the machine has used so far (Linux /proc/stat)."""
    user, nice, system, _, _, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def written(results: Path) -> tuple[dict[str, int], set[str], int]:
    """Rows per call id in every calls file, the calls marked incomplete (errors rows),
    and the spool files left."""
    import duckdb

    def rows(table: str, sql: str) -> list[tuple]:
        if not list((results / table).glob("*/*.parquet")):
            return []
        source = f"read_parquet('{results / table}/*/*.parquet')"
        return duckdb.sql(sql.format(source=source)).fetchall()

    counts = dict(rows("calls", "SELECT call_id, count(*) FROM {source} GROUP BY 1"))
    incomplete = {file.removeprefix("live:") for (file,) in rows(
        "errors", "SELECT file FROM {source} WHERE error_kind = 'incomplete'")}
    return counts, incomplete, len(list((results / "_live_spool").glob("*.json")))


def offer_load(model_dir: str, offered: int, seconds: float, max_calls: int,
               buffer_s: float, stop_after: float | None = None, seed: int = 0) -> dict:
    """`offered` calls at once (each starts within the first second) to a fresh `callmood
    live` writing into a fresh results folder; SIGTERM once they are done (or after
    `stop_after` s, mid-call). What the clients saw, and what the results hold."""
    rows = [r for r in sample_calls() if sf.info(CALLS / r["file"]).samplerate == 8000
            and r["customer_channel"]]
    steps = [media_steps(r, seconds) for r in rows]
    rng = np.random.default_rng(seed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        results = Path(folder) / "results"
        server = subprocess.Popen([str(Path(sys.executable).parent / "callmood"), "live",
                                   "--model", model_dir, "--port", str(port), "--results",
                                   str(results), "--max-calls", str(max_calls),
                                   "--buffer-s", str(buffer_s)],
                                  stderr=subprocess.DEVNULL)
        try:
            wait_for_health(f"http://127.0.0.1:{port}/health", server)
            cpu = (cpu_seconds(server.pid), time.process_time(), busy_seconds())

            def cpu_used() -> dict:
                """CPU s since the calls began: the server's, the clients', the rest's."""
                used = (cpu_seconds(server.pid) - cpu[0], time.process_time() - cpu[1],
                        busy_seconds() - cpu[2])
                return {"server_cpu_s": round(used[0], 1), "clients_cpu_s": round(used[1], 1),
                        "other_processes_cpu_s": round(used[2] - used[0] - used[1], 1)}

            async def run() -> tuple[list[dict], dict, float]:
                calls = [stream_call(f"ws://127.0.0.1:{port}", f"load-{i:03d}",
                                     steps[i % len(steps)], float(rng.uniform(0, 1)))
                         for i in range(offered)]
                if stop_after is None:
                    outcomes = await asyncio.gather(*calls)
                    return outcomes, cpu_used(), stop(server)
                clients = asyncio.gather(*calls)
                await asyncio.sleep(stop_after)
                used = cpu_used()
                stopping = asyncio.get_running_loop().run_in_executor(None, stop, server)
                outcomes = await clients
                return outcomes, used, await stopping

            outcomes, used, stop_s = asyncio.run(run())
        finally:
            server.kill()
            server.wait()
        counts, incomplete, spooled = written(results)
    accepted = [o for o in outcomes if o["close"] is not None and not o["refused"]
                and not isinstance(o["close"], str)]
    latencies = np.array([x for o in accepted for x in o["latencies"]])
    errors = [o["close"] for o in outcomes
              if o["close"] not in (1000, 1001) and not (o["close"] == 1013 and o["refused"])]
    quantile = (lambda q: round(float(np.percentile(latencies, q)), 3)) \
        if len(latencies) else (lambda q: None)
    return {
        "offered": offered, "max_calls": max_calls, "buffer_s": buffer_s,
        "call_s": seconds,
        "accepted": len(accepted), "refused": sum(o["refused"] for o in outcomes),
        "cut_behind": sum(o["cut"] for o in accepted),
        "closed_by_error": len(errors), "error_closes": sorted(map(str, set(errors))),
        "events": len(latencies), "p50_s": quantile(50), "p95_s": quantile(95),
        "max_s": round(float(latencies.max()), 3) if len(latencies) else None,
        "written_once": sum(counts.get(o["call_id"]) == 1 for o in accepted),
        "written_more_than_once": sum(counts.get(o["call_id"], 0) > 1 for o in accepted),
        # accepted calls not in the results (but one heard whole with nothing to score)
        "lost": sum(o["call_id"] not in counts and not (
            o["summary"] and o["summary"]["complete"] and not o["summary"]["segments"])
            for o in accepted),
        "written_but_not_accepted": len(set(counts) - {o["call_id"] for o in accepted}),
        "marked_incomplete": len(incomplete), "spool_left": spooled,
        **used,
        "client_send_lag_p95_s": round(float(np.percentile(
            [o["send_lag_s"] for o in outcomes], 95)), 3),
        "stop_after_s": stop_after, "stop_s": round(stop_s, 2)}


def wait_for_health(url: str, server: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"callmood live ended with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within 120 s")


def stop(server: subprocess.Popen) -> float:
    """SIGTERM; the seconds until the server has exited."""
    started = time.monotonic()
    server.terminate()
    server.wait(120)
    return time.monotonic() - started


def latency(report: dict, save, model_dir: str, loads: list[int], seconds: float,
            buffer_s: float, stop_after: float, max_p95: float) -> None:
    """Every load with admission off (--max-calls at the largest load): latency, cuts,
    errors, exactly-once writes, and from them the capacity; then the largest load with
    admission at that capacity (what the default --max-calls, CALLS_PER_CORE per thread,
    is set from), and SIGTERM mid-call at the largest load, both ways. Into `report`,
    `save()`d after each run."""
    most = max(loads)
    report["loads"] = []
    for offered in loads:
        report["loads"].append(offer_load(model_dir, offered, seconds, most, buffer_s))
        print(json.dumps(report["loads"][-1]), flush=True)
        save()
    held = [r["offered"] for r in report["loads"] if r["p95_s"] is not None
            and r["p95_s"] <= max_p95 and not r["cut_behind"] and not r["closed_by_error"]]
    cores = usable_cores()
    report["capacity"] = {"calls": max(held, default=0), "cores": cores,
                          "calls_per_core": max(held, default=0) / cores,
                          "rule": f"the most calls at once with p95 <= {max_p95:g} s, "
                                  "none cut, no connection closed by an error"}
    admitted = max(max(held, default=0), 1)
    report["admitted"] = offer_load(model_dir, most, seconds, admitted, buffer_s)
    print(json.dumps(report["admitted"]), flush=True)
    save()
    report["stop"] = []
    for max_calls in (admitted, most):
        report["stop"].append(offer_load(model_dir, most, seconds, max_calls, buffer_s,
                                         stop_after))
        print(json.dumps(report["stop"][-1]), flush=True)
        save()


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
    parser.add_argument("--loads", default="1,16,32,48,64,96,128",
                        help="calls at once, comma-separated")
    parser.add_argument("--call-s", type=float, default=25.0,
                        help="seconds of each sample call streamed")
    parser.add_argument("--buffer-s", type=float, default=10.0,
                        help="the servers' --buffer-s (below --call-s, or no call is cut)")
    parser.add_argument("--stop-after", type=float, default=15.0,
                        help="seconds into the calls SIGTERM comes, in the stop runs")
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
        report["latency"] = {}
        latency(report["latency"], lambda: harness.write_json(path, report), args.model,
                [int(n) for n in args.loads.split(",")], args.call_s, args.buffer_s,
                args.stop_after, args.max_p95)
    if "long_call" in parts:
        report["long_call"] = long_call(args.model, args.long_minutes)
        print(json.dumps({k: v for k, v in report["long_call"].items()
                          if k != "cpu_s_per_audio_minute"}), flush=True)
    harness.write_json(path, report)


if __name__ == "__main__":
    main()
