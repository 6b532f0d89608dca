"""A small hand-made results folder with known answers, for the query and dashboard tests.

Five calls over three days, two agents (A1, A2), two queues (billing, support), labels
neutral, happy, angry, sad (angry and sad negative). Per call, customer speech / negative
customer speech in seconds: c1 30/10, c2 30/20, c3 20/20, c4 10/0, c5 20/0.
c2 and c3 escalated. Only c1 has an audio file on disk.

The pytest fixtures that build it live in dashboard_fixtures.py: use them from a test
module with ``pytest_plugins = ["dashboard_fixtures"]``.
"""

from __future__ import annotations

import colorsys
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from callmood.results.schema import ERRORS_SCHEMA, RUNS_SCHEMA, calls_schema, segments_schema
from callmood.results.store import INPUTS

LABELS = ["neutral", "happy", "angry", "sad"]
NEGATIVE = {"angry", "sad"}
UTC = dt.timezone.utc
SCORED_AT = dt.datetime(2026, 3, 10, 2, 3, tzinfo=UTC)
AUDIO_RATE = 8000

# call_id: (start time, agent, queue, duration, escalated, slope, segments)
# segments: (role, start, end, emotion, confidence)
CALLS = {
    "c1": (dt.datetime(2026, 3, 2, 9, 15, tzinfo=UTC), "A1", "billing", 60.0, False, 0.1, [
        ("agent", 0, 10, "neutral", 0.9),
        ("customer", 10, 20, "neutral", 0.8),
        ("customer", 20, 30, "angry", 0.9),
        ("agent", 30, 40, "neutral", 0.7),
        ("customer", 40, 50, "neutral", 0.6),
    ]),
    "c2": (dt.datetime(2026, 3, 2, 14, 30, tzinfo=UTC), "A2", "support", 40.0, True, 0.5, [
        ("customer", 0, 10, "neutral", 0.7),
        ("customer", 10, 20, "angry", 0.95),
        ("customer", 20, 30, "angry", 0.85),
        ("agent", 30, 40, "happy", 0.5),
    ]),
    "c3": (dt.datetime(2026, 3, 3, 9, 45, tzinfo=UTC), "A1", "support", 30.0, True, 0.8, [
        ("customer", 0, 10, "sad", 0.6),
        ("customer", 10, 20, "angry", 0.9),
        ("agent", 20, 30, "neutral", 0.8),
    ]),
    "c4": (dt.datetime(2026, 3, 9, 10, 5, tzinfo=UTC), "A2", "billing", 20.0, False, None, [
        ("customer", 0, 10, "happy", 0.9),
        ("agent", 10, 20, "happy", 0.9),
    ]),
    "c5": (dt.datetime(2026, 3, 9, 14, 0, tzinfo=UTC), "A1", "billing", 20.0, False, -0.2, [
        ("customer", 0, 10, "neutral", 0.4),
        ("customer", 10, 20, "happy", 0.8),
    ]),
}

RUNS = [
    ("r1", dt.datetime(2026, 3, 3, 2, 0, tzinfo=UTC), dt.datetime(2026, 3, 3, 2, 10, tzinfo=UTC),
     2, 0),
    ("r2", dt.datetime(2026, 3, 10, 2, 0, tzinfo=UTC), dt.datetime(2026, 3, 10, 2, 5, tzinfo=UTC),
     3, 1),
]
ERRORS = [("/calls/broken.wav", "unreadable", "not a sound file",
           dt.datetime(2026, 3, 10, 2, 1, tzinfo=UTC), "r2")]


def _probs(emotion: str, confidence: float, labels: list[str]) -> dict[str, float]:
    rest = (1 - confidence) / (len(labels) - 1)
    return {f"p_{label}": confidence if label == emotion else rest for label in labels}


def _write(table: pa.Table, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)


def write_call(root: Path, call_id: str, spec: tuple, labels: list[str] = LABELS,
               negative: set[str] = NEGATIVE) -> None:
    """Write one call's segments and calls rows, aggregates computed like the batch job."""
    started, agent, queue, duration, escalated, slope, segs = spec
    source = str(root.parent / "audio" / f"{call_id}.wav")
    seg_rows = []
    speech = {"agent": 0.0, "customer": 0.0}
    shares = {(r, lab): 0.0 for r in speech for lab in labels}
    negative_s = 0.0
    peak = None
    for role, start, end, emotion, conf in segs:
        seg_rows.append({
            "call_id": call_id, "source_file": source, "channel": 0 if role == "agent" else 1,
            "role": role, "start_s": float(start), "end_s": float(end), "emotion": emotion,
            "confidence": conf, **_probs(emotion, conf, labels),
            "model_name": "tiny-vit", "model_version": "abc123", "scored_at": SCORED_AT,
        })
        speech[role] += end - start
        shares[role, emotion] += end - start
        if role == "customer" and emotion in negative:
            negative_s += end - start
            if peak is None or conf > peak[1]:
                peak = (emotion, conf, float(start))
    call = {
        "call_id": call_id, "source_file": source, "agent_id": agent, "queue": queue,
        "started_at": started, "customer_channel": 1, "duration_s": duration,
        "speech_s_agent": speech["agent"], "speech_s_customer": speech["customer"],
        "n_segments": len(segs),
        "customer_negative_share": negative_s / speech["customer"] if speech["customer"] else None,
        "peak_negative_emotion": peak[0] if peak else None,
        "peak_negative_confidence": peak[1] if peak else None,
        "peak_negative_at_s": peak[2] if peak else None,
        "escalation_slope": slope, "escalated": escalated,
        # an escalated call's alert: after the customer's last negative segment
        "live_alert_at_s": max((float(end) for role, _, end, emotion, _ in segs
                                if role == "customer" and emotion in negative),
                               default=None) if escalated else None,
        **{f"{r}_share_{lab}": (shares[r, lab] / speech[r] if speech[r] else None)
           for r in speech for lab in labels},
        "model_name": "tiny-vit", "model_version": "abc123", "scored_at": SCORED_AT,
    }
    part = f"call_date={started.date().isoformat()}"
    _write(pa.Table.from_pylist(seg_rows, schema=segments_schema(labels)),
           root / "segments" / part, f"part-{call_id}.parquet")
    _write(pa.Table.from_pylist([call], schema=calls_schema(labels)),
           root / "calls" / part, f"part-{call_id}.parquet")


def write_runs(root: Path, runs=RUNS, errors=ERRORS) -> None:
    for run_id, started, finished, scored, failed in runs:
        row = {"run_id": run_id, "started_at": started, "finished_at": finished,
               "files_scored": scored, "files_failed": failed, "audio_hours": 0.01,
               "segments": 7, "wall_s": 12.5, "model_name": "tiny-vit",
               "model_version": "abc123"}
        _write(pa.Table.from_pylist([row], schema=RUNS_SCHEMA),
               root / "runs" / f"run_date={started.date().isoformat()}", f"part-{run_id}.parquet")
    for file, kind, message, at, run_id in errors:
        row = {"file": file, "error_kind": kind, "message": message, "occurred_at": at,
               "run_id": run_id}
        _write(pa.Table.from_pylist([row], schema=ERRORS_SCHEMA),
               root / "errors" / f"run_date={at.date().isoformat()}", f"part-{run_id}.parquet")


def write_audio(path: Path, seconds: float) -> None:
    """A two-channel tone: left 440 Hz, right 660 Hz."""
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    wave = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * wave).astype(np.float32), AUDIO_RATE, subtype="PCM_16")


def build_sample_results(base: Path) -> Path:
    root = base / "results"
    for call_id, spec in CALLS.items():
        write_call(root, call_id, spec)
    write_runs(root)
    write_audio(base / "audio" / "c1.wav", CALLS["c1"][3])
    (root / INPUTS).write_text(json.dumps({"roots": [str((base / "audio").resolve())]}))
    return root


def write_labels_json(root: Path, valence: dict[str, float], labels=LABELS) -> None:
    (root / "labels.json").write_text(json.dumps({"labels": labels, "valence": valence}))


def colour_kind(colour: str) -> str:
    """What a reader calls a '#rrggbb' colour: warm, grey, blue, green or other."""
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    hue, saturation, _ = colorsys.rgb_to_hsv(r, g, b)
    hue *= 360
    if saturation < 0.15:
        return "grey"
    if hue < 55 or hue >= 330:
        return "warm"
    if 80 <= hue < 170:
        return "green"
    if 190 <= hue < 250:
        return "blue"
    return "other"
