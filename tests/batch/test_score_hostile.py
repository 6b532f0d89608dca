"""Hostile inputs to the nightly job: each fault costs its file, row or field as an error
row, the good calls score, and what a reader sees is always whole calls."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys

import pyarrow.dataset as ds
import pytest
from batch_fixtures import DIALOGUE, make_model_folder, synthetic_call

from callmood.batch.score import ScoreConfig, score_calls
from callmood.batch.worker import score_file
from callmood.dashboard.results_db import connect
from callmood.results.store import JOURNAL, ResultsStore, part_path
from callmood.signal.segment import VadConfig


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(make_model_folder(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    return str(make_model_folder(tmp_path_factory.mktemp("model-b"), seed=1))


def score(inputs, out, model_dir, **settings):
    return score_calls([str(i) for i in inputs], str(out), model_dir,
                       ScoreConfig(workers=1, **settings), progress=False)


def rows(out, name):
    return ds.dataset(os.path.join(out, name), format="parquet",
                      partitioning="hive").to_table().to_pylist()


def errors(out) -> dict[str, tuple[str, str]]:
    """file name -> (error_kind, message)"""
    return {os.path.basename(e["file"]): (e["error_kind"], e["message"])
            for e in rows(out, "errors")}


def sidecar_messages(out) -> list[str]:
    return sorted(e["message"] for e in rows(out, "errors") if e["error_kind"] == "metadata")


def calls_in(folder, names, seconds=9.0):
    for i, name in enumerate(names):
        synthetic_call(folder / name, DIALOGUE[:2], seconds, seed=i)


def test_a_file_name_that_is_not_utf8_is_an_error_row(tmp_path, model_dir):
    folder = tmp_path / "in"
    calls_in(folder, ["a.wav", "b.wav"])
    shutil.copy(folder / "a.wav", os.fsencode(folder) + b"/bad\xffname.wav")
    out = tmp_path / "results"
    summary = score([folder], out, model_dir)
    assert (summary.calls_scored, summary.files_failed) == (2, 1)
    kind, message = errors(out)["bad\\xffname.wav"]  # shown escaped
    assert kind == "bad_name" and "not UTF-8" in message


def test_hostile_sidecar_rows_cost_only_their_row_or_field(tmp_path, model_dir):
    folder = tmp_path / "in"
    calls_in(folder, ["a.wav", "b.wav", "c.wav", "d.wav", "e.wav"])
    (tmp_path / "secret.wav").write_bytes(b"exists outside the input folder")
    lines = ["file,call_id,started_at,customer_channel",
             "a.wav," + "x" * 200_000 + ",,",                    # over the csv field limit
             "nul\0.wav,N,,",                                     # a NUL byte
             "y" * 5000 + ".wav,L,,",                             # too long for the OS
             "x/" * 1000 + "z" * 300 + ".wav,L2,,",              # a name over NAME_MAX
             "b.wav,B,9999-12-31T23:59:59-14:00,5",               # overflows in UTC
             "c.wav,C,0001-01-01T00:00:00+14:00,١",               # and an Arabic-Indic 1
             "d.wav,D,2026-11-20T09:00:00Z,0",
             "d.wav,D2,2026-11-21T09:00:00Z,1",                   # d.wav a second time
             "../secret.wav,S,,",                                 # outside, exists
             "../../../../nothing-here.wav,S2,,",                 # outside, does not
             "e.wav," + "q" * 2000 + ",,"]                        # an absurd call id
    (folder / "calls.csv").write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    out = tmp_path / "results"
    summary = score([folder], out, model_dir)
    assert (summary.calls_scored, summary.files_failed) == (5, 0)
    calls = {c["call_id"]: c for c in rows(out, "calls")}
    assert set(calls) == {"a", "B", "C", "D", "e"}
    assert calls["D"]["customer_channel"] == 0  # the first row for d.wav stands
    assert calls["C"]["customer_channel"] is None
    assert calls["B"]["customer_channel"] is None  # 5: the recording has two channels
    messages = sidecar_messages(out)
    expected = [("line 2:", "field larger than field limit"),
                ("line 3: field file:", "NUL byte"),
                ("line 4: field file:", "over 4096 characters"),
                ("line 5: field file:", "names no recording here"),
                ("line 6: field started_at:", "lies outside 1970-2100"),
                ("line 7: field started_at:", "lies outside 1970-2100"),
                ("line 7: field customer_channel:", "not a channel number"),
                ("line 9: field file:", "already described on line 8"),
                ("line 10: field file: '../secret.wav' lies outside the input folders", ""),
                ("line 11: field file: '../../../../nothing-here.wav' lies outside the "
                 "input folders", ""),
                ("line 12: field call_id:", "longer than 1000 characters"),
                ("customer_channel 5", "has 2 channels")]
    for start, part in expected:
        assert any(start in m and part in m for m in messages), (start, messages)
    assert len(messages) == len(expected), messages
    assert max(len(m) for m in messages) < 500


@pytest.mark.parametrize(("zone", "value"), [
    ("UTC", "0001-01-01T00:00:00+14:00"),
    ("America/New_York", "9999-12-31T23:00:00"),
    ("Asia/Tokyo", "0001-01-01T00:00:00"),
])
def test_sidecar_times_at_the_ends_of_the_calendar_are_field_errors(tmp_path, model_dir,
                                                                     zone, value):
    folder = tmp_path / "in"
    calls_in(folder, ["a.wav"])
    (folder / "calls.csv").write_text(f"file,started_at\na.wav,{value}\n")
    out = tmp_path / "results"
    assert score([folder], out, model_dir, source_timezone=zone).calls_scored == 1
    assert sidecar_messages(out) == [
        f"line 2: field started_at: {value!r} lies outside 1970-2100; the call uses its "
        "default"]


def test_hidden_recordings_are_counted_and_links_outside_the_inputs_refused(
        tmp_path, model_dir):
    folder, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    calls_in(folder, ["a.wav", ".c.wav", ".incoming/b.wav", "day/d.wav"])
    calls_in(elsewhere, ["private.wav", "other/o.wav"])
    (folder / "link.wav").symlink_to(elsewhere / "private.wav")
    (folder / "passwd.wav").symlink_to("/etc/passwd")
    (folder / "linked_dir").symlink_to(elsewhere / "other")
    (folder / "inside_link.wav").symlink_to(folder / "a.wav")
    (folder / "latest").symlink_to(folder / "day")  # its files are scored where they are
    out = tmp_path / "results"
    summary = score([folder], out, model_dir)
    assert summary.hidden_skipped == 2 and "2 hidden files skipped" in summary.line()
    assert sorted(c["call_id"] for c in rows(out, "calls")) == ["a", "day/d", "inside_link"]
    found = errors(out)
    assert {name: kind for name, (kind, _) in found.items()} == {
        "link.wav": "outside_link", "passwd.wav": "outside_link", "linked_dir": "outside_link"}
    assert "/etc/passwd" in found["passwd.wav"][1] and "--follow-links" in found["passwd.wav"][1]

    followed = tmp_path / "followed"
    summary = score([folder], followed, model_dir, follow_links=True)
    assert sorted(c["call_id"] for c in rows(followed, "calls")) == [
        "a", "day/d", "inside_link", "link", "linked_dir/o"]
    assert {name: kind for name, (kind, _) in errors(followed).items()} == {
        "passwd.wav": "unreadable"}  # opened only when asked to follow links


def test_a_file_dated_by_an_impossible_mtime_is_an_error_row(tmp_path, model_dir):
    folder = tmp_path / "in"
    calls_in(folder, ["future.wav", "past.wav", "fine.wav"])
    os.utime(folder / "future.wav", (0, 10_413_792_000))  # 2300-01-01
    os.utime(folder / "past.wav", (0, -2_208_988_800))  # 1900-01-01
    out = tmp_path / "results"
    summary = score([folder], out, model_dir)
    assert (summary.calls_scored, summary.files_failed) == (1, 2)
    for name in ("future.wav", "past.wav"):
        kind, message = errors(out)[name]
        assert kind == "bad_time" and "outside 1970-2100" in message


def test_a_file_gone_before_its_worker_reads_it_is_missing(tmp_path, model_dir):
    outcome = score_file(str(tmp_path / "gone.wav"), model_dir, VadConfig(), 0.25, 3600, 8)
    assert outcome.error_kind == "missing"


def test_a_streamed_wav_with_an_unknown_data_size_is_scored(tmp_path, model_dir):
    folder = tmp_path / "in"
    calls_in(folder, ["streamed.wav"])
    data = bytearray((folder / "streamed.wav").read_bytes())
    at = data.index(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)  # what a recorder streaming it writes
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    (folder / "streamed.wav").write_bytes(bytes(data))
    out = tmp_path / "results"
    assert score([folder], out, model_dir).calls_scored == 1


def test_a_huge_file_is_refused_from_its_header_before_it_is_read(tmp_path, model_dir):
    """A 1 TB sparse WAV that says it holds 1 TB: refused as too long at once. A worker in
    a child process with a time limit: hashing it first took hours, and fails the test."""
    path = tmp_path / "huge.wav"
    rate = 8000
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt "
                + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
                + b"data" + struct.pack("<I", 0xFFFFFFFF))
        f.truncate(1 << 40)
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from callmood.batch.worker import score_file; "
         "from callmood.signal.segment import VadConfig; "
         "print(score_file(sys.argv[1], sys.argv[2], VadConfig(), 0.25, 6 * 3600, 8)"
         ".error_kind)", str(path), model_dir],
        capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "too_long", done.stderr


def visible(out) -> list[tuple]:
    """(call_id, n_segments, segments seen, model versions of calls row and segments) of
    each call a reader sees."""
    with connect(out) as con:
        return con.sql(
            "SELECT c.call_id, c.n_segments, count(s.call_id), c.model_version, "
            "list(DISTINCT s.model_version) FROM calls AS c LEFT JOIN segments AS s "
            "USING (call_id) GROUP BY ALL ORDER BY 1").fetchall()


def check_whole(out, calls: list[str] | None = None) -> None:
    """Every visible call with all its segments, all of one version; no stray segments."""
    seen = visible(out)
    for call_id, n, count, version, segment_versions in seen:
        assert count == n, call_id
        assert segment_versions in ([version], [None]), call_id
    with connect(out) as con:
        assert con.sql("SELECT count(*) FROM segments ANTI JOIN calls USING (call_id)"
                       ).fetchall() == [(0,)]
    if calls is not None:
        assert [row[0] for row in seen] == calls


class Killed(BaseException):
    """Stands in for kill -9: not an Exception, so nothing in the run handles it."""


def kill_after(write, kill_at: int, out):
    """ResultsStore._write_bytes that checks what a reader sees after each write and is
    killed right after write number `kill_at`."""
    count = [0]

    def watched(store, relative, data):
        write(store, relative, data)
        count[0] += 1
        check_whole(out)
        if count[0] == kill_at:
            raise Killed(relative)

    return watched


def kill_at_every_write(monkeypatch, run, out, heal) -> int:
    """Run `run(out_k)` killed after its k-th write, for every k until it finishes; after
    each kill, `heal(out_k)` (the next night) must leave every call whole."""
    write = ResultsStore._write_bytes
    for kill_at in range(1, 400):
        attempt = out.with_name(f"{out.name}-{kill_at}")
        if out.exists():
            shutil.copytree(out, attempt)
        monkeypatch.setattr(ResultsStore, "_write_bytes", kill_after(write, kill_at, attempt))
        try:
            run(attempt)
            finished = True
        except Killed:
            finished = False
        monkeypatch.setattr(ResultsStore, "_write_bytes", write)
        heal(attempt)
        if finished:
            return kill_at
    raise AssertionError("the run never finished")


def test_a_fresh_run_killed_at_any_write_shows_only_whole_calls(tmp_path, model_dir,
                                                                monkeypatch):
    folder = tmp_path / "in"
    calls_in(folder, ["c1.wav", "c2.wav"])
    out = tmp_path / "results"

    def heal(attempt):
        score([folder], attempt, model_dir)
        check_whole(attempt, ["c1", "c2"])

    writes = kill_at_every_write(monkeypatch, lambda o: score([folder], o, model_dir), out,
                                 heal)
    assert writes > 8


def test_a_rescore_with_a_new_model_killed_at_any_write_is_healed(tmp_path, model_dir,
                                                                   other_model_dir,
                                                                   monkeypatch):
    """The next run (without --rescore) re-scores a call the kill left half written, so no
    call keeps segments of one model and a calls row of another; at every write a reader
    sees each call whole, never missing or twice (a re-score of a compacted day)."""
    folder = tmp_path / "in"
    calls_in(folder, ["c1.wav", "c2.wav"])
    out = tmp_path / "results"
    score([folder], out, model_dir)

    def heal(attempt):
        score([folder], attempt, other_model_dir)
        check_whole(attempt, ["c1", "c2"])
        on_disk = {}
        for table in ("segments", "calls"):
            for row in rows(attempt, table):
                on_disk.setdefault(row["call_id"], set()).add(row["model_version"])
        assert all(len(versions) == 1 for versions in on_disk.values()), on_disk

    writes = kill_at_every_write(
        monkeypatch, lambda o: score([folder], o, other_model_dir, rescore=True), out, heal)
    assert writes > 8


def test_rescore_rewrites_a_day_file_once_per_run_not_once_per_call(tmp_path, model_dir,
                                                                     monkeypatch):
    folder = tmp_path / "in"
    calls_in(folder, [f"2026-11-20/c{i}.wav" for i in range(6)])
    out = tmp_path / "results"
    score([folder], out, model_dir)
    day = out / "segments" / "call_date=2026-11-20"
    assert len(list(day.glob("*.parquet"))) == 1
    written = []
    write = ResultsStore._write_bytes

    def counted(store, relative, data):
        written.append(relative)
        write(store, relative, data)

    monkeypatch.setattr(ResultsStore, "_write_bytes", counted)
    score([folder], out, model_dir, rescore=True)
    day_files = [w for w in written if w.startswith("segments/") and "/part-c" in w]
    assert len(day_files) == 1, written
    check_whole(out, [f"2026-11-20/c{i}" for i in range(6)])
    assert len(list(day.glob("*.parquet"))) == 1


def test_a_compaction_killed_before_its_merged_file_is_finished_next_run(tmp_path,
                                                                         model_dir):
    folder = tmp_path / "in"
    calls_in(folder, [f"2026-11-20/c{i}.wav" for i in range(3)])
    out = tmp_path / "results"
    score([folder], out, model_dir)
    store = ResultsStore(str(out))
    merged = store.list_parts("calls", "2026-11-20")[0]
    # the state a kill leaves right after the journal: members written, no merged file yet
    members = []
    for i in range(3):
        member = part_path("calls", "2026-11-20", f"member{i}")
        store.write_table(member, store.read_table(merged).slice(i, 1))
        members.append(member)
    store.delete(merged)
    store.write_json(JOURNAL, {"plan": [{"compact": merged, "members": members}]})
    assert score([folder], out, model_dir).calls_scored == 0
    assert store.list_parts("calls", "2026-11-20") == [merged]
    assert not (out / JOURNAL).exists()
    check_whole(out, [f"2026-11-20/c{i}" for i in range(3)])


def test_a_hostile_folder_scores_its_good_calls_with_an_error_row_per_fault(tmp_path,
                                                                            model_dir):
    """The issue's acceptance folder, through a real `callmood score` process with a time
    limit (a hang fails the test instead of blocking it)."""
    folder = tmp_path / "in"
    calls_in(folder, ["a.wav", "b.wav"])
    os.mkfifo(folder / "pipe.wav")
    (folder / "zero.wav").symlink_to("/dev/zero")
    (folder / "dangling.wav").symlink_to(folder / "gone.wav")
    shutil.copy(folder / "a.wav", os.fsencode(folder) + b"/bad\xffname.wav")
    (folder / "calls.csv").write_text(
        "file,call_id,started_at,customer_channel\n"
        "b.wav,B,9999-12-31T23:59:59-14:00,99999\n"
        "a.wav," + "x" * 200_000 + ",,\n"
        "nul\0.wav,N,,\n"
        + "y" * 5000 + ".wav,L,,\n", encoding="utf-8-sig")
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-c", "from callmood.cli import main; main()",
                           "score", str(folder), "--out", str(out), "--model", model_dir,
                           "--workers", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # files failed; the night went on
    assert "Traceback" not in done.stderr
    assert "2 calls scored" in done.stdout and "4 files failed" in done.stdout
    assert "5 metadata problems" in done.stdout
    assert sorted(c["call_id"] for c in rows(out, "calls")) == ["B", "a"]
    kinds = sorted(e["error_kind"] for e in rows(out, "errors"))
    assert kinds == ["bad_name", "broken_link", "metadata", "metadata", "metadata",
                     "metadata", "metadata", "not_a_file", "outside_link"]


def test_a_model_giving_non_finite_scores_fails_files_and_keeps_their_rows(tmp_path,
                                                                           model_dir):
    """Scores that come out NaN are a `model` error row, never NaN rows; since the fault is
    the model's, a re-score with it keeps each call's earlier rows."""
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    state = load_file(broken / "model.safetensors")
    state["vit.layernorm.weight"].fill_(3e38)  # finite weights, logits beyond float32
    state["classifier.weight"].fill_(3e38)
    save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
    folder = tmp_path / "in"
    calls_in(folder, ["a.wav"])
    out = tmp_path / "results"
    score([folder], out, model_dir)
    before = rows(out, "segments")
    summary = score([folder], out, str(broken), rescore=True)
    assert (summary.calls_scored, summary.files_failed) == (0, 1)
    kind, message = errors(out)["a.wav"]
    assert kind == "model" and "non-finite" in message
    assert rows(out, "segments") == before
