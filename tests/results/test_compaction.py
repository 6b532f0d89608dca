"""Compaction: a run leaves one Parquet file per partition, and a merge killed half-way is
completed by the next run without losing or doubling rows."""

from __future__ import annotations

import json
import os

import pyarrow.dataset as ds
import pytest
from batch_fixtures import DIALOGUE, make_model_folder, synthetic_call, write_calls_csv

from callmood.batch.score import ScoreConfig, score_calls
from callmood.dashboard.results_db import connect
from callmood.results.store import JOURNAL, ResultsStore, part_path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(make_model_folder(tmp_path_factory.mktemp("model")))


def same_day_calls(folder, names):
    for i, name in enumerate(names):
        synthetic_call(folder / f"{name}.wav", DIALOGUE, 13.0, seed=i)
    write_calls_csv(folder, [{"call_id": name, "file": f"{name}.wav", "agent_id": "ag1",
                              "queue": "billing", "started_at": "2026-11-20T09:30:00Z",
                              "customer_channel": 1} for name in names])


def score(folder, out, model_dir):
    return score_calls([str(folder)], str(out), model_dir, ScoreConfig(), progress=False)


def parquet_files(out, table):
    return sorted(p.name for p in (out / table / "call_date=2026-11-20").glob("*.parquet"))


def call_ids(out, table):
    return sorted(ds.dataset(out / table, partitioning="hive").to_table()
                  .column("call_id").to_pylist())


def visible_calls(out) -> list[str]:
    with connect(out) as con:
        return sorted(r[0] for r in con.sql("SELECT call_id FROM calls").fetchall())


def visible_segments(out) -> int:
    with connect(out) as con:
        return con.sql("SELECT count(*) FROM segments").fetchall()[0][0]


def test_each_partition_ends_a_run_as_one_file(tmp_path, model_dir):
    folder, out = tmp_path / "calls", tmp_path / "results"
    same_day_calls(folder, ["c1", "c2", "c3"])
    score(folder, out, model_dir)
    for table in ("segments", "calls"):
        assert len(parquet_files(out, table)) == 1
    assert call_ids(out, "calls") == ["c1", "c2", "c3"]
    segments_before = ds.dataset(out / "segments", partitioning="hive").count_rows()

    # a later run adds a call to the same day: still one file, every call once
    same_day_calls(folder, ["c1", "c2", "c3", "c4"])
    score(folder, out, model_dir)
    assert len(parquet_files(out, "calls")) == 1
    assert call_ids(out, "calls") == ["c1", "c2", "c3", "c4"]

    # a changed call inside the merged file is replaced, not doubled
    synthetic_call(folder / "c2.wav", DIALOGUE[:2], 9.0, seed=42)
    score(folder, out, model_dir)
    assert call_ids(out, "calls") == ["c1", "c2", "c3", "c4"]
    calls = ds.dataset(out / "calls", partitioning="hive").to_table().to_pylist()
    assert next(c for c in calls if c["call_id"] == "c2")["duration_s"] == pytest.approx(9.0)
    segments = ds.dataset(out / "segments", partitioning="hive").to_table().to_pylist()
    assert sum(c["n_segments"] for c in calls) == len(segments) > segments_before
    assert not (out / JOURNAL).exists()


def test_a_merge_killed_half_way_is_finished_by_the_next_run(tmp_path, model_dir):
    folder, out = tmp_path / "calls", tmp_path / "results"
    same_day_calls(folder, ["c1", "c2"])
    score(folder, out, model_dir)
    store = ResultsStore(str(out))
    merged = part_path("calls", "2026-11-20", parquet_files(out, "calls")[0][5:-8])
    table = store.read_table(merged)
    # the state a kill leaves between writing the merged file and deleting its members:
    # the members are back beside it and the journal still lists them
    members = []
    for call_id in ("c1", "c2"):
        member = part_path("calls", "2026-11-20", f"member-{call_id}")
        rows = table.filter(ds.field("call_id") == call_id)
        store.write_table(member, rows)
        members.append(member)
    store.write_json(JOURNAL, {"plan": [{"compact": merged, "members": members}]})
    assert len(call_ids(out, "calls")) == 4  # the rows on disk at that moment
    assert visible_calls(out) == ["c1", "c2"]  # what callmood's readers see

    summary = score(folder, out, model_dir)
    assert summary.calls_scored == 0  # nothing changed: the next run only finishes the merge
    assert call_ids(out, "calls") == ["c1", "c2"]
    assert parquet_files(out, "calls") == [os.path.basename(merged)]
    assert not (out / JOURNAL).exists()
    entries = [json.loads(p.read_text()) for p in (out / "_manifest").glob("*.json")]
    assert all(merged in e["parts"] for e in entries)
