"""batch/scan.py directly: which files are recordings, what a call is named, what a sidecar
row and a path say about it. Small real files in tmp_path; the hostile inputs (links out of
the inputs, names that are not UTF-8, sidecar rows built to break things, impossible times)
are tests/test_score_hostile.py's, end to end."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from callmood.batch.scan import (
    ScanError,
    call_names,
    call_path,
    describe,
    find_audio,
    read_sidecar,
)

PLUS_ONE = timezone(timedelta(hours=1))  # the recorders' zone in these tests


def touch(root: Path, *names: str) -> list[Path]:
    """Files that exist (their content is never read here)."""
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not read")
        paths.append(path)
    return paths


def found_names(found, root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in found.files]


# --- find_audio


def test_finds_the_audio_files_by_extension_sorted_each_with_its_input(tmp_path):
    root = tmp_path / "in"
    touch(root, "b.wav", "a.FLAC", "day/c.mp3", "day/d.ogg", "day/e.opus", "f.oga",
          "notes.txt", "g.wav.part", "day/calls.csv", "wav")
    found = find_audio([str(root)])
    assert found_names(found, root) == ["a.FLAC", "b.wav", "day/c.mp3", "day/d.ogg",
                                        "day/e.opus", "f.oga"]
    assert set(found.files.values()) == {root}
    assert found.rejected == [] and found.hidden == 0


def test_include_and_exclude_match_the_name_or_with_a_slash_the_path(tmp_path):
    root = tmp_path / "in"
    touch(root, "a.wav", "b.mp3", "keep/c.wav", "skip/d.wav", "skip/e.mp3", "x/skip/f.wav")
    assert found_names(find_audio([str(root)], include=("*.wav",)), root) == [
        "a.wav", "keep/c.wav", "skip/d.wav", "x/skip/f.wav"]
    # "skip/*" is a path pattern: skip/ directly below the input, not x/skip/
    assert found_names(find_audio([str(root)], exclude=("skip/*", "*.MP3")), root) == [
        "a.wav", "keep/c.wav", "x/skip/f.wav"]
    assert found_names(find_audio([str(root)], include=("keep/*.wav",)), root) == [
        "keep/c.wav"]


def test_hidden_files_and_folders_are_counted_not_found(tmp_path):
    root = tmp_path / "in"
    touch(root, "a.wav", ".upload.wav", ".incoming/b.wav", ".incoming/deep/c.mp3",
          ".incoming/notes.txt", ".cache.txt")
    found = find_audio([str(root)])
    assert found_names(found, root) == ["a.wav"]
    assert found.hidden == 3  # the recordings, not the other files


def test_a_file_given_as_an_input_belongs_to_its_folder_and_nothing_is_found_twice(tmp_path):
    root = tmp_path / "in"
    a, b = touch(root, "a.wav", "sub/b.wav")
    found = find_audio([str(b), str(root), str(root), str(a)])
    assert list(found.files) == [a, b]
    assert found.files[b] == root / "sub"  # the first input that reached it
    assert found.files[a] == root


def test_an_input_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(ScanError, match="no-such-folder: no such file or folder"):
        find_audio([str(tmp_path / "no-such-folder")])


def test_a_followed_link_loop_walks_each_folder_once(tmp_path):
    root, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    touch(root, "a.wav")
    touch(elsewhere, "x.wav")
    (elsewhere / "again").symlink_to(elsewhere)  # a loop
    (root / "ext").symlink_to(elsewhere)
    (root / "self").symlink_to(root)  # inside the input: its files are found where they are
    found = find_audio([str(root)], follow_links=True)
    assert found_names(found, root) == ["a.wav", "ext/x.wav"]
    assert found.rejected == []


def test_a_folder_that_cannot_be_listed_is_an_error_row(tmp_path, monkeypatch):
    root = tmp_path / "in"
    touch(root, "a.wav", "locked/b.wav")
    scandir = os.scandir

    def refuse_locked(path):  # as chmod 0 would, also for root (who lists any folder)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    found = find_audio([str(root)])
    assert found_names(found, root) == ["a.wav"]
    [rejected] = found.rejected
    assert rejected.path == str(root / "locked") and rejected.kind == "unreadable_folder"
    assert rejected.message.startswith("folder cannot be listed (Permission denied)")


# --- call names


@pytest.mark.parametrize(("root", "file", "name"), [
    ("/data/in", "/data/in/0001.wav", "0001.wav"),
    ("/data/in", "/data/in/queue/0001.wav", "queue/0001.wav"),
    # a night's folder names its calls as its parent does
    ("/data/in/2026-11-20", "/data/in/2026-11-20/0001.wav", "2026-11-20/0001.wav"),
    ("/data/in", "/data/in/2026-11-20/0001.wav", "2026-11-20/0001.wav"),
    ("/data/2026-11-20/sub", "/data/2026-11-20/sub/0001.wav", "2026-11-20/sub/0001.wav"),
    ("/data/2026/11/20", "/data/2026/11/20/0001.wav", "2026/11/20/0001.wav"),
    # the last date of the input's path; a date below the input is enough alone
    ("/old/2025-01-01/in/20261120", "/old/2025-01-01/in/20261120/a.wav", "20261120/a.wav"),
    ("/data/2025-01-01", "/data/2025-01-01/20261120_143000.wav", "20261120_143000.wav"),
])
def test_call_path(root, file, name):
    assert call_path(Path(file), Path(root)) == name


def test_call_names_drop_the_extension_unless_it_tells_two_files_apart(tmp_path):
    root = tmp_path / "in"
    paths = touch(root, "x.wav", "x.mp3", "y.wav", "a/z.wav", "b/z.mp3", "c.d/e.wav")
    names = call_names([(path, root) for path in paths])
    assert [names[path] for path in paths] == ["x.wav", "x.mp3", "y", "a/z", "b/z", "c.d/e"]


# --- sidecars


def test_a_sidecar_row_describes_its_file(tmp_path):
    root = tmp_path / "in"
    a, b, c = touch(root, "a.wav", "day/b.wav", "c.wav")
    sidecar = root / "calls.csv"
    sidecar.write_text("queue,file,started_at,customer_channel,call_id,agent_id,note\n"
                       "billing, a.wav ,2026-11-20 09:30,1,  call-a , agent 7 ,extra\n"
                       ",day/b.wav,,,,,\n"
                       "sales,c.wav,2026-11-20T09:30:00Z,0,call-c,,\n", encoding="utf-8-sig")
    rows, problems = read_sidecar(sidecar, [root], PLUS_ONE)
    assert problems == []
    assert rows == {
        a: {"call_id": "call-a", "agent_id": "agent 7", "queue": "billing",
            "started_at": datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc),
            "customer_channel": 1, "line": 2},
        b: {"call_id": None, "agent_id": None, "queue": None, "started_at": None,
            "customer_channel": None, "line": 3},
        c: {"call_id": "call-c", "agent_id": None, "queue": "sales",
            "started_at": datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc),
            "customer_channel": 0, "line": 4}}


def test_a_sidecar_without_a_file_column_or_not_utf8_gives_no_rows(tmp_path):
    root = tmp_path / "in"
    touch(root, "a.wav")
    sidecar = root / "calls.csv"
    sidecar.write_text("path,call_id\na.wav,x\n")
    rows, [problem] = read_sidecar(sidecar, [root])
    assert rows == {} and problem.kind == "metadata" and problem.path == str(sidecar)
    assert problem.message.startswith("line 1: a metadata CSV needs a 'file' column")
    sidecar.write_bytes(b"file,call_id\na.wav,caf\xe9\n")  # Latin-1
    rows, [problem] = read_sidecar(sidecar, [root])
    assert rows == {} and problem.message.startswith("not UTF-8 text")


def test_a_blank_line_between_rows_costs_no_row(tmp_path):
    """The row after a blank line used to be taken for a malformed multi-line row."""
    root = tmp_path / "in"
    a, b = touch(root, "a.wav", "b.wav")
    sidecar = root / "calls.csv"
    sidecar.write_text("file,call_id\na.wav,A\n\nb.wav,B\n")
    rows, problems = read_sidecar(sidecar, [root])
    assert problems == [] and {path: row["call_id"] for path, row in rows.items()} == {
        a: "A", b: "B"}


def test_a_malformed_row_costs_its_lines_and_a_bad_value_its_field(tmp_path):
    root = tmp_path / "in"
    a, b, c = touch(root, "a.wav", "b.wav", "c.wav")
    sidecar = root / "calls.csv"
    sidecar.write_text('file,call_id,customer_channel\n'
                       'a.wav,"two\nlines",1\n'  # a quoted newline: lines 2-3
                       'b.wav,B,1,surplus\n'  # an extra field
                       'c.wav,C,left\n')
    rows, problems = read_sidecar(sidecar, [root])
    assert list(rows) == [c] and rows[c]["call_id"] == "C"
    assert rows[c]["customer_channel"] is None and rows[c]["line"] == 5
    assert [p.message for p in problems] == [
        "line 2: malformed row (an unterminated quote or extra fields); lines 2-3 are "
        "ignored",
        "line 4: malformed row (an unterminated quote or extra fields); lines 4-4 are "
        "ignored",
        "line 5: field customer_channel: 'left' is not a channel number (0-255); the call "
        "uses its default"]


# --- describe


def test_describe_takes_the_sidecar_first(tmp_path):
    [path] = touch(tmp_path, "2026-01-02/a.wav")
    when = datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc)
    call = describe(path, "2026-01-02/a", {"call_id": "call-a", "agent_id": "agent 7",
                                           "queue": "billing", "started_at": when,
                                           "customer_channel": 1, "line": 2})
    assert (call.meta.call_id, call.meta.agent_id, call.meta.queue) == (
        "call-a", "agent 7", "billing")
    assert call.meta.started_at == when and call.meta.customer_channel == 1
    assert not call.dated_by_mtime
    assert (call.path, call.size, call.mtime_ns) == (str(path), 8, path.stat().st_mtime_ns)


@pytest.mark.parametrize(("name", "local"), [
    ("2026-11-20/0001", datetime(2026, 11, 20)),
    ("20261120_143000", datetime(2026, 11, 20, 14, 30)),
    ("queue/2026/11/20/0001", datetime(2026, 11, 20)),
    ("rec-2026-11-20T14-30-15", datetime(2026, 11, 20, 14, 30, 15)),
])
def test_without_a_sidecar_the_name_is_the_id_and_its_date_the_start(tmp_path, name, local):
    [path] = touch(tmp_path, "x.wav")
    call = describe(path, name, None, PLUS_ONE)
    assert call.meta.call_id == name
    assert (call.meta.agent_id, call.meta.queue, call.meta.customer_channel) == (
        None, None, None)
    assert call.meta.started_at == local.replace(tzinfo=PLUS_ONE).astimezone(timezone.utc)
    assert not call.dated_by_mtime


def test_without_a_date_the_file_time_dates_the_call(tmp_path):
    [path] = touch(tmp_path, "x.wav")
    os.utime(path, ns=(0, 1_763_631_000_000_000_000))  # 2025-11-20T09:30:00Z
    call = describe(path, "queue/0001", {"call_id": "c", "started_at": None})
    assert call.meta.started_at == datetime(2025, 11, 20, 9, 30, tzinfo=timezone.utc)
    assert call.dated_by_mtime and call.meta.call_id == "c"
    # a date that is no date (month 13) is no date
    assert describe(path, "2026-13-20/0001", None).dated_by_mtime


def test_describing_a_file_gone_since_the_scan_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        describe(tmp_path / "gone.wav", "gone", None)


def test_a_folder_link_into_the_folder_of_a_file_input_is_walked(tmp_path):
    """The folder of a file given as an input is not walked, so a link into it from a
    walked input is followed (it used to be skipped as 'found where it is')."""
    data, walked = tmp_path / "data", tmp_path / "in"
    (data / "other").mkdir(parents=True)
    walked.mkdir()
    for path in (data / "one.wav", data / "other" / "b.wav"):
        path.write_bytes(b"RIFF")
    (walked / "otherlink").symlink_to(data / "other")
    found = find_audio([str(data / "one.wav"), str(walked)])
    assert sorted(found.files) == [data / "one.wav", walked / "otherlink" / "b.wav"]
    assert found.rejected == []
