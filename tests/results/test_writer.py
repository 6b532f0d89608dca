"""The writer's commit protocol at its edges: kills between writes, a live server writing
while a night's compaction is half done, names that look alike. Real results folders,
read back through the dashboard's views."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime

import numpy as np
import pytest

from callmood.dashboard.results_db import connect
from callmood.results.call_summary import CallAnalytics
from callmood.results.meta import CallMeta
from callmood.results.scored import ScoredCall, Segment
from callmood.results.store import JOURNAL, ResultsStore, digest, is_compacted
from callmood.results.writer import (
    CallFile,
    CallWriter,
    ModelStamp,
    RunSummary,
    claim_labels,
    flush_live_spool,
    now,
    write_spooled_calls,
)

STAMP = ModelStamp("m", "v1", ["neutral", "angry"], {"neutral": 0, "angry": -1})
DAY = "2026-11-20"


class Killed(BaseException):
    """Stands in for kill -9: not an Exception, so nothing in the writer handles it."""


def results(tmp_path) -> ResultsStore:
    store = ResultsStore(str(tmp_path / "results"))
    claim_labels(store, STAMP)
    return store


def a_call(call_id: str, day: str = DAY) -> CallFile:
    meta = CallMeta(call_id, "agent", "queue", datetime.fromisoformat(f"{day}T09:00:00+00:00"),
                    None)
    return CallFile(f"/calls/{call_id}.wav", 100, 1, meta)


def scored(windows: int, sha: str = "s1") -> ScoredCall:
    segments = [Segment(0, float(i), i + 1.0) for i in range(windows)]
    probs = np.tile(np.array([[0.7, 0.3]], np.float32), (windows, 1))
    return ScoredCall("x", sha, float(windows), 1, segments, segments, probs)


def writer(store: ResultsStore, rescore: bool = False) -> CallWriter:
    return CallWriter(store, STAMP, CallAnalytics(), store.manifest(),
                      RunSummary(f"r{time.time_ns()}"), now(), rescore)


def killed_before_calls_rows(store: ResultsStore, write) -> None:
    """Run `write` with the store killed at its first calls file (segments written)."""
    table_writer = store.write_table

    def kill(relative, table):
        if relative.startswith("calls/"):
            raise Killed(relative)
        table_writer(relative, table)

    store.write_table = kill
    with pytest.raises(Killed):
        write()
    store.write_table = table_writer


def seen(store: ResultsStore) -> list[tuple[str, int, int]]:
    """(call id, n_segments, segments a reader sees) of each call readers see."""
    with connect(store.root) as con:
        return con.sql("SELECT c.call_id, any_value(c.n_segments), count(s.call_id) "
                       "FROM calls AS c LEFT JOIN segments AS s USING (call_id) "
                       "GROUP BY 1 ORDER BY 1").fetchall()


def test_a_calls_own_file_is_never_taken_for_a_merged_one(tmp_path):
    """Call ids whose file name (a hex digest) begins with c looked merged: readers then
    showed their segments without a calls row."""
    assert digest("call7").startswith("c")
    assert not is_compacted(f"segments/call_date={DAY}/part-{digest('call7')}.parquet")
    assert is_compacted(f"segments/call_date={DAY}/part-c{digest('x')}.parquet")
    store = results(tmp_path)
    killed_before_calls_rows(store, lambda: writer(store).write_scored(a_call("call7"),
                                                                        scored(3)))
    with connect(store.root) as con:
        assert con.sql("SELECT count(*) FROM segments").fetchall() == [(0,)]


def test_a_transient_failure_after_a_killed_rescore_keeps_the_calls_rows(tmp_path):
    store = results(tmp_path)
    night = writer(store)
    for call_id in ("a", "b"):
        night.write_scored(a_call(call_id), scored(3))
    store.compact(night.touched, night.manifest)
    killed_before_calls_rows(store, lambda: writer(store, rescore=True).write_scored(
        a_call("a"), scored(3)))
    assert store.manifest()["/calls/a.wav"]["status"] == "writing"
    writer(store).write_failed(a_call("a"), "timeout", "took too long")
    assert seen(store) == [("a", 3, 3), ("b", 3, 3)]


def spool_live_call(store: ResultsStore, call_id: str, day: str, windows: int) -> None:
    outcome, meta = scored(windows), a_call(call_id, day).meta
    store.spool(call_id, {"model": asdict(STAMP), "meta": meta.as_json(),
                          "duration_s": outcome.duration_s, "channels": 1,
                          "speech": outcome.speech, "windows": outcome.windows,
                          "probs": outcome.probs.tolist()})


@pytest.mark.parametrize("day", [DAY, "2026-11-21"])
def test_a_live_write_finishes_a_compaction_a_kill_left_half_done(tmp_path, day):
    """A live call re-streamed while the journal was pending was merged stale (or made
    every later night fail on a member it had deleted)."""
    store = results(tmp_path)
    for call_id in ("L", "M"):
        spool_live_call(store, call_id, DAY, 3)
    write_spooled_calls(store, CallAnalytics())
    table_writer = store.write_table

    def kill_at_the_segments_merge(relative, table):
        if relative.startswith("segments/") and is_compacted(relative):
            raise Killed(relative)
        table_writer(relative, table)

    store.write_table = kill_at_the_segments_merge
    with pytest.raises(Killed):
        store.compact({("calls", DAY), ("segments", DAY)}, store.manifest())
    store.write_table = table_writer
    assert store.read_json(JOURNAL) is not None
    spool_live_call(store, "L", day, 5)  # L again, longer, while the journal waits
    assert flush_live_spool(store.url, CallAnalytics())  # the live server's write
    assert seen(store) == [("L", 5, 5), ("M", 3, 3)]
    store.finish_compaction(store.manifest())  # the next night's start
    assert seen(store) == [("L", 5, 5), ("M", 3, 3)]


def test_segments_no_calls_row_commits_are_dropped_by_the_compaction(tmp_path):
    """Two nights killed after a new call's segments, whose recordings then went: their
    day is merged without them (it used to fail on an empty list of calls files)."""
    store = results(tmp_path)
    for call_id in ("P", "Q"):
        killed_before_calls_rows(store, lambda c=call_id: writer(store).write_scored(
            a_call(c), scored(3)))
    store.compact({("segments", DAY)}, store.manifest())
    assert store.read_json(JOURNAL) is None
    assert [store.read_table(p).num_rows for p in store.list_parts("segments", DAY)] == [0]
