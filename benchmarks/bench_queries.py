"""Benchmark the canned queries on a generated results set (not a timed test).

    .venv/bin/python benchmarks/bench_queries.py [--out DIR] [--calls 50000] [--repeat 7]
        [--uncompacted --json benchmarks/results/queries_uncompacted.json]

Generates calls with ~20 segments each (>= 1,000,000 segments for 50,000 calls) over
60 days, written in the hive layout of callmood/results/schema.py (one file per day and
table, named as the nightly compaction names it; with --uncompacted, as a run under way
leaves them, which readers check call by call), then runs every canned query `--repeat`
times, without and with a typical dashboard filter (a 14-day range and one queue), and
writes benchmarks/results/queries.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from callmood.dashboard.canned import load_queries, run_canned
from callmood.dashboard.results_db import connect
from callmood.results.schema import ERRORS_SCHEMA, RUNS_SCHEMA, calls_schema, segments_schema

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

LABELS = ["neutral", "happy", "angry", "sad", "fearful", "disgust", "surprised"]
NEGATIVE = np.array([False, False, True, True, True, True, False])
DAYS = 60
SEGMENTS_PER_CALL = 20
OUT_JSON = harness.RESULTS / "queries.json"


def generate(root: Path, n_calls: int, seed: int = 0, compacted: bool = True) -> int:
    """Write the results set; returns the number of segments."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
    day = rng.integers(0, DAYS, n_calls)
    order = np.argsort(day, kind="stable")
    day = day[order]
    started = (np.datetime64(start.replace(tzinfo=None), "us")
               + (day * 86400 + rng.integers(7 * 3600, 20 * 3600, n_calls)).astype(
                   "timedelta64[s]"))
    call_ids = np.array([f"call{i:06d}" for i in range(n_calls)])
    agents = np.array([f"agent{i:03d}" for i in range(200)])[rng.integers(0, 200, n_calls)]
    queues = np.array(["billing", "support", "sales", "retention", "tech"])[
        rng.integers(0, 5, n_calls)]

    # Segments: SEGMENTS_PER_CALL per call, alternating roles, 3-8 s each.
    seg_call = np.repeat(np.arange(n_calls), SEGMENTS_PER_CALL)
    n_seg = seg_call.size
    length = rng.uniform(3, 8, n_seg)
    end = np.cumsum(length)
    call_start = np.repeat(end[::SEGMENTS_PER_CALL] - length[::SEGMENTS_PER_CALL],
                           SEGMENTS_PER_CALL)
    start_s, end_s = end - length - call_start, end - call_start
    customer = (np.arange(n_seg) % 2).astype(bool)
    weights = np.array([0.45, 0.15, 0.15, 0.1, 0.05, 0.03, 0.07])
    emotion = rng.choice(len(LABELS), n_seg, p=weights)
    probs = rng.dirichlet(np.ones(len(LABELS)), n_seg).astype(np.float32)
    confidence = rng.uniform(0.3, 1.0, n_seg).astype(np.float32)
    probs[np.arange(n_seg), emotion] = confidence

    duration = end_s[SEGMENTS_PER_CALL - 1::SEGMENTS_PER_CALL] + 2.0
    speech = np.bincount(seg_call * 2 + customer, weights=length, minlength=2 * n_calls)
    speech = speech.reshape(n_calls, 2)
    neg_speech = np.bincount(seg_call, weights=length * (customer & NEGATIVE[emotion]),
                             minlength=n_calls)
    neg_share = neg_speech / speech[:, 1]
    slope = rng.normal(0, 0.3, n_calls)
    escalated = (neg_share > 0.45) & (slope > 0.2)
    scored_at = np.datetime64("2026-03-06T02:00:00", "us")

    seg_table = {
        "call_id": call_ids[seg_call], "source_file": np.char.add("/calls/", call_ids)[seg_call],
        "channel": customer.astype(np.int16), "role": np.where(customer, "customer", "agent"),
        "start_s": start_s, "end_s": end_s, "emotion": np.array(LABELS)[emotion],
        "confidence": confidence,
        **{f"p_{lab}": probs[:, i] for i, lab in enumerate(LABELS)},
        "model_name": np.full(n_seg, "vit"), "model_version": np.full(n_seg, "abc123"),
        "scored_at": np.full(n_seg, scored_at),
    }
    shares = {}
    for role_i, role in enumerate(("agent", "customer")):
        mask = customer == bool(role_i)
        for i, lab in enumerate(LABELS):
            s = np.bincount(seg_call, weights=length * mask * (emotion == i), minlength=n_calls)
            shares[f"{role}_share_{lab}"] = s / speech[:, role_i]
    call_table = {
        "call_id": call_ids, "source_file": np.char.add("/calls/", call_ids),
        "agent_id": agents, "queue": queues, "started_at": started,
        "customer_channel": np.ones(n_calls, np.int16), "duration_s": duration,
        "speech_s_agent": speech[:, 0], "speech_s_customer": speech[:, 1],
        "n_segments": np.full(n_calls, SEGMENTS_PER_CALL, np.int32),
        "customer_negative_share": neg_share,
        "customer_negative_share_low": np.clip(neg_share - 0.1, 0, 1),
        "customer_negative_share_high": np.clip(neg_share + 0.1, 0, 1),
        "peak_negative_emotion": np.where(neg_share > 0, "angry", None),
        "peak_negative_confidence": np.where(neg_share > 0, 0.9, np.nan).astype(np.float32),
        "peak_negative_at_s": np.where(neg_share > 0, 30.0, np.nan),
        "escalation_slope": slope, "escalated": escalated, **shares,
        "model_name": np.full(n_calls, "vit"), "model_version": np.full(n_calls, "abc123"),
        "scored_at": np.full(n_calls, scored_at),
    }
    segs = pa.Table.from_pydict(seg_table, schema=segments_schema(LABELS))
    calls = pa.Table.from_pydict(call_table, schema=calls_schema(LABELS))
    seg_day, call_day = day[seg_call], day
    for d in range(DAYS):
        part = f"call_date={(start + dt.timedelta(days=int(d))).date().isoformat()}"
        for name, table, days in (("segments", segs, seg_day), ("calls", calls, call_day)):
            lo, hi = np.searchsorted(days, [d, d + 1])
            (root / name / part).mkdir(parents=True, exist_ok=True)
            # named as the nightly compaction names a day's file (readers then trust it to
            # hold committed rows only); otherwise readers pick each call's committed rows
            pq.write_table(table.slice(lo, hi - lo),
                           root / name / part / ("part-c0.parquet" if compacted
                                                 else "part-0.parquet"))
        run_start = start + dt.timedelta(days=int(d) + 1, hours=2)
        run = {"run_id": f"run{d:03d}", "started_at": run_start,
               "finished_at": run_start + dt.timedelta(minutes=30),
               "files_scored": int((call_day == d).sum()), "files_failed": 1,
               "audio_hours": 1.0, "segments": 1, "wall_s": 1800.0, "model_name": "vit",
               "model_version": "abc123"}
        error = {"file": f"/calls/bad{d}.wav", "error_kind": "unreadable", "message": "bad",
                 "occurred_at": run_start, "run_id": run["run_id"]}
        for name, row, schema in (("runs", run, RUNS_SCHEMA), ("errors", error, ERRORS_SCHEMA)):
            folder = root / name / f"run_date={run_start.date().isoformat()}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist([row], schema=schema),
                           folder / f"part-{run['run_id']}.parquet")
    return n_seg


def time_query(con, name: str, params: dict, repeat: int) -> dict:
    times, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = len(run_canned(con, name, params))
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4),
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="results folder to write (default: a temp dir)")
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--uncompacted", action="store_true",
                        help="files not named as compacted: the layout of a run under way "
                             "or killed, where readers check each call's version")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=OUT_JSON)
    parser.add_argument("--timezone", default="UTC",
                        help="the call centre's zone (outside UTC, days cost a join)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp) / "results"
        t0 = time.perf_counter()
        n_segments = generate(root, args.calls, compacted=not args.uncompacted)
        generate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        con = connect(root, timezone=args.timezone)
        connect_s = time.perf_counter() - t0
        first = dt.date(2026, 1, 5)
        filtered = {"date_from": first + dt.timedelta(days=30),
                    "date_to": first + dt.timedelta(days=43), "queue": "support"}
        some_call = con.execute("SELECT min(call_id) FROM calls").fetchall()[0][0]
        queries = {}
        for name, query in load_queries().items():
            declared = {p.name for p in query.params}
            base = {"call_id": some_call} if "call_id" in declared else {}
            queries[name] = {"all": time_query(con, name, base, args.repeat)}
            if "queue" in declared:
                params = {**base, **filtered}
                queries[name]["filtered"] = time_query(con, name, params, args.repeat)
            print(name, queries[name], flush=True)
        con.close()

    worst = max(r["max_s"] for q in queries.values() for r in q.values())
    report = {
        "machine": harness.machine("duckdb"),
        "data": {"calls": args.calls, "segments": n_segments, "days": DAYS,
                 "labels": LABELS, "generate_s": round(generate_s, 2)},
        "timezone": args.timezone,
        "layout": "uncompacted" if args.uncompacted else "compacted",
        "connect_s": round(connect_s, 4),
        "repeat": args.repeat,
        "filtered_params": {k: str(v) for k, v in filtered.items()},
        "queries": queries,
        "target_s": 0.5,
        "worst_max_s": worst,
        "all_under_target": worst < 0.5,
    }
    harness.write_json(args.json, report)
    print(f"worst {worst:.3f} s; wrote {args.json}")


if __name__ == "__main__":
    main()
