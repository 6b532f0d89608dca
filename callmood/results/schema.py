"""The Parquet results schema: the contract between `callmood score`, DuckDB and the dashboard.

A results folder holds one hive-partitioned dataset per table::

    RESULTS/segments/call_date=2026-11-20/part-<call_id-hash>.parquet
    RESULTS/calls/call_date=2026-11-20/part-<call_id-hash>.parquet
    RESULTS/errors/run_date=2026-11-21/part-<run_id>.parquet
    RESULTS/runs/run_date=2026-11-21/part-<run_id>.parquet

Emotion labels are not fixed here: they come from the model folder. Every label ``L`` of
the model adds a column ``p_L`` (probability) to ``segments`` and ``agent_share_L`` /
``customer_share_L`` (share of that role's speech time) to ``calls``. Readers discover
the labels from the ``p_`` columns. Which labels count as negative also comes from the
model folder (its valence map) and is materialised in ``customer_negative_share``.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

SEGMENT_FIELDS = [
    pa.field("call_id", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("channel", pa.int16(), nullable=False),
    pa.field("role", pa.string(), nullable=False),  # agent | customer | mono | ch<N>
    pa.field("start_s", pa.float64(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),
    pa.field("emotion", pa.string(), nullable=False),
    pa.field("confidence", pa.float32(), nullable=False),
    # p_<label> float32 columns follow, one per model label, in model order
]
SEGMENT_TAIL_FIELDS = [
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),  # LoadedModel.version
    pa.field("scored_at", TIMESTAMP, nullable=False),
]

CALL_FIELDS = [
    pa.field("call_id", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("agent_id", pa.string()),
    pa.field("queue", pa.string()),
    pa.field("started_at", TIMESTAMP),
    pa.field("customer_channel", pa.int16()),
    pa.field("duration_s", pa.float64(), nullable=False),
    pa.field("speech_s_agent", pa.float64(), nullable=False),
    pa.field("speech_s_customer", pa.float64(), nullable=False),
    pa.field("n_segments", pa.int32(), nullable=False),
    pa.field("customer_negative_share", pa.float64()),
    # its 95 % interval (callmood.results.call_summary); null in older folders
    pa.field("customer_negative_share_low", pa.float64()),
    pa.field("customer_negative_share_high", pa.float64()),
    pa.field("peak_negative_emotion", pa.string()),
    pa.field("peak_negative_confidence", pa.float32()),
    pa.field("peak_negative_at_s", pa.float64()),
    pa.field("escalation_slope", pa.float64()),  # customer negative prob per minute
    pa.field("escalated", pa.bool_(), nullable=False),
    # the end of the customer segment after which the live alert fired, or would have for a
    # call scored at night (null: never; empty in older folders)
    pa.field("live_alert_at_s", pa.float64()),
    # agent_share_<label>, customer_share_<label> float64 columns follow
]
CALL_TAIL_FIELDS = SEGMENT_TAIL_FIELDS

ERROR_FIELDS = [
    pa.field("file", pa.string(), nullable=False),
    pa.field("error_kind", pa.string(), nullable=False),  # unreadable | empty | silent | ...
    pa.field("message", pa.string(), nullable=False),
    pa.field("occurred_at", TIMESTAMP, nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
]

RUN_FIELDS = [
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("started_at", TIMESTAMP, nullable=False),
    pa.field("finished_at", TIMESTAMP, nullable=False),
    pa.field("files_scored", pa.int32(), nullable=False),
    pa.field("files_failed", pa.int32(), nullable=False),
    pa.field("audio_hours", pa.float64(), nullable=False),
    pa.field("segments", pa.int64(), nullable=False),
    pa.field("wall_s", pa.float64(), nullable=False),
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    # running (written when the run starts; a killed run keeps it), finished, or
    # "failed: <error>"; empty in results written before the column existed
    pa.field("status", pa.string()),
]

PARTITION_KEYS = {"segments": "call_date", "calls": "call_date", "errors": "run_date",
                  "runs": "run_date"}


def segments_schema(labels: list[str]) -> pa.Schema:
    probs = [pa.field(f"p_{label}", pa.float32(), nullable=False) for label in labels]
    return pa.schema(SEGMENT_FIELDS + probs + SEGMENT_TAIL_FIELDS)


def calls_schema(labels: list[str]) -> pa.Schema:
    shares = [pa.field(f"{role}_share_{label}", pa.float64())
              for role in ("agent", "customer") for label in labels]
    return pa.schema(CALL_FIELDS + shares + CALL_TAIL_FIELDS)


ERRORS_SCHEMA = pa.schema(ERROR_FIELDS)
RUNS_SCHEMA = pa.schema(RUN_FIELDS)
