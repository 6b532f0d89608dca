"""callmood score on small synthetic calls: tables, schema, incremental runs, roles, errors."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone

import numpy as np
import pyarrow.dataset as ds
import pytest
import soundfile as sf
import torch
from batch_fixtures import DIALOGUE, LABELS, make_model_folder, synthetic_call, write_calls_csv
from click.testing import CliRunner

from callmood.batch.scan import call_path, scan
from callmood.batch.score import ScoreConfig, score_calls
from callmood.batch.worker import FileTimeout, cached_model, score_file, time_limit
from callmood.cli import main
from callmood.model.folder import write_call_analytics
from callmood.results.call_summary import CallAnalytics
from callmood.results.meta import CallMeta, source_zone
from callmood.results.schema import ERRORS_SCHEMA, RUNS_SCHEMA, calls_schema, segments_schema
from callmood.results.store import ResultsStore
from callmood.results.writer import flush_live_spool, write_live_call
from callmood.signal.segment import VadConfig


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(make_model_folder(tmp_path_factory.mktemp("model")))


@pytest.fixture()
def calls(tmp_path):
    folder = tmp_path / "calls"
    synthetic_call(folder / "a.wav", DIALOGUE, 13.0, seed=1)
    synthetic_call(folder / "nested" / "b.wav", DIALOGUE[:2], 9.0, seed=2)
    write_calls_csv(folder, [{"call_id": "A-1", "file": "a.wav", "agent_id": "ag7",
                              "queue": "billing", "started_at": "2026-11-20T09:30:00Z",
                              "customer_channel": 1}])
    return folder


def table(out, name):
    return ds.dataset(os.path.join(out, name), format="parquet", partitioning="hive")


def rows(out, name):
    return table(out, name).to_table().to_pylist()


def run(inputs, out, model_dir, **settings):
    return score_calls([str(i) for i in inputs], str(out), model_dir,
                       ScoreConfig(**settings), progress=False)


def test_tables_follow_the_schema(calls, tmp_path, model_dir):
    out = tmp_path / "results"
    summary = run([calls], out, model_dir)
    assert (summary.calls_scored, summary.files_failed) == (2, 0)
    for name, schema in (("segments", segments_schema(LABELS)),
                         ("calls", calls_schema(LABELS)), ("runs", RUNS_SCHEMA)):
        for fragment in table(out, name).get_fragments():
            assert fragment.physical_schema.equals(schema), name
    assert table(out, "segments").partitioning.schema.names == ["call_date"]
    labels = json.loads((out / "labels.json").read_text())
    assert labels["labels"] == LABELS and labels["valence"]["angry"] == -1

    call = {r["call_id"]: r for r in rows(out, "calls")}
    a = call["A-1"]
    assert (a["agent_id"], a["queue"], a["customer_channel"]) == ("ag7", "billing", 1)
    assert str(a["call_date"]) == "2026-11-20"
    assert a["duration_s"] == pytest.approx(13.0)
    assert a["speech_s_customer"] == pytest.approx(2.0 + 4.3, abs=0.5)
    shares = [a[f"customer_share_{label}"] for label in LABELS]
    assert sum(shares) == pytest.approx(1.0)
    b = call["nested/b"]  # no metadata: id from the path, channels without roles
    assert b["agent_id"] is None and b["customer_channel"] is None

    segments = rows(out, "segments")
    for s in segments:
        probs = [s[f"p_{label}"] for label in LABELS]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert s["emotion"] == LABELS[int(np.argmax(probs))]
        assert s["confidence"] == pytest.approx(max(probs))
        assert 0 <= s["start_s"] < s["end_s"]
    roles = {(s["call_id"], s["channel"]): s["role"] for s in segments}
    assert roles == {("A-1", 0): "agent", ("A-1", 1): "customer", ("nested/b", 0): "ch0",
                     ("nested/b", 1): "ch1"}


def test_rerun_adds_nothing_and_changed_file_replaces_its_rows(calls, tmp_path, model_dir):
    out = tmp_path / "results"
    run([calls], out, model_dir)
    before = rows(out, "segments")
    again = run([calls], out, model_dir)
    assert (again.calls_scored, again.files_unchanged) == (0, 2)
    assert len(rows(out, "segments")) == len(before)

    os.utime(calls / "a.wav")  # touched, same content: still unchanged
    assert run([calls], out, model_dir).files_unchanged == 2

    synthetic_call(calls / "nested" / "b.wav", DIALOGUE, 13.0, seed=3)
    changed = run([calls], out, model_dir)
    assert (changed.calls_scored, changed.files_unchanged) == (1, 1)
    after = rows(out, "segments")
    assert {s["call_id"] for s in after} == {"A-1", "nested/b"}
    b_calls = [c for c in rows(out, "calls") if c["call_id"] == "nested/b"]
    assert len(b_calls) == 1 and b_calls[0]["duration_s"] == pytest.approx(13.0)
    assert max(s["end_s"] for s in after if s["call_id"] == "nested/b") > 9.0

    forced = run([calls], out, model_dir, rescore=True)
    assert forced.calls_scored == 2
    assert len(rows(out, "segments")) == len(after)
    assert len(rows(out, "calls")) == 2


def test_changed_start_date_moves_the_call_to_its_new_partition(calls, tmp_path, model_dir):
    out = tmp_path / "results"
    run([calls], out, model_dir)
    write_calls_csv(calls, [{"call_id": "A-1", "file": "a.wav", "agent_id": "ag7",
                             "queue": "billing", "started_at": "2026-11-21T09:30:00Z",
                             "customer_channel": 1}])
    assert run([calls], out, model_dir).calls_scored == 1
    dates = [str(c["call_date"]) for c in rows(out, "calls") if c["call_id"] == "A-1"]
    assert dates == ["2026-11-21"]
    assert not (out / "segments" / "call_date=2026-11-20").exists() or not any(
        (out / "segments" / "call_date=2026-11-20").iterdir())


def test_mono_and_other_formats(tmp_path, model_dir):
    folder = tmp_path / "calls"
    synthetic_call(folder / "mono.flac", [(0, 0.5, 3.0), (0, 4.0, 8.0)], 9.0, rate=16000,
                   channels=1, subtype="PCM_16")
    synthetic_call(folder / "alaw.wav", DIALOGUE, 13.0, subtype="ALAW")
    synthetic_call(folder / "float.wav", DIALOGUE, 13.0, rate=22050, subtype="FLOAT")
    summary = run([folder], tmp_path / "out", model_dir)
    assert (summary.calls_scored, summary.files_failed) == (3, 0)
    roles = {(s["call_id"], s["role"]) for s in rows(tmp_path / "out", "segments")}
    assert ("mono", "mono") in roles and ("alaw", "ch1") in roles


def test_bad_inputs_are_recorded_and_the_run_goes_on(calls, tmp_path, model_dir):
    bad = calls / "bad"
    bad.mkdir()
    (bad / "corrupt.wav").write_bytes(os.urandom(4000))
    (bad / "empty.wav").write_bytes(b"")
    (bad / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    sf.write(str(bad / "silent.wav"), np.zeros((8000 * 5, 2), np.float32), 8000,
             subtype="ULAW")
    synthetic_call(bad / "noise.wav", [], 5.0)  # line noise, nobody speaks
    synthetic_call(bad / "long.wav", DIALOGUE, 20.0)
    synthetic_call(bad / "truncated.wav", DIALOGUE, 13.0, subtype="PCM_16")
    data = (bad / "truncated.wav").read_bytes()
    (bad / "truncated.wav").write_bytes(data[:len(data) // 3])

    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["score", str(calls), "--out", str(out), "--model",
                                       model_dir, "--workers", "1", "--max-hours", "0.005"])
    assert result.exit_code == 1, result.output
    assert "2 calls scored" in result.output and "7 files failed" in result.output
    errors = {os.path.basename(e["file"]): e for e in rows(out, "errors")}
    for fragment in table(out, "errors").get_fragments():
        assert fragment.physical_schema.equals(ERRORS_SCHEMA)
    kinds = {name: e["error_kind"] for name, e in errors.items()}
    assert kinds["empty.wav"] == "empty"
    assert kinds["silent.wav"] == "silent"
    assert kinds["noise.wav"] == "no_speech"
    assert kinds["long.wav"] == "too_long"
    assert kinds["corrupt.wav"] in ("unreadable", "corrupt")
    assert kinds["notes.wav"] == "unreadable"
    assert kinds["truncated.wav"] == "truncated"
    assert all(e["message"] and e["occurred_at"] for e in errors.values())
    assert len(errors) == 7
    # failed files are tried again on the next run (one may have been still copying in);
    # the scored ones are not
    again = CliRunner().invoke(main, ["score", str(calls), "--out", str(out), "--model",
                                      model_dir, "--workers", "1", "--max-hours", "0.005"])
    assert again.exit_code == 1 and "0 calls scored" in again.output
    assert "7 files failed" in again.output and "2 unchanged files skipped" in again.output


def test_fifos_devices_and_broken_links_become_error_rows_without_hanging(calls, tmp_path,
                                                                           model_dir):
    """A FIFO or a link to /dev/zero used to hang the run (hashed before any check); a
    dangling or looping link named *.wav ended it in the scan. A real `callmood score`
    process, with a time limit so that a hang fails the test instead of blocking it; links
    outside the inputs followed (--follow-links), so /dev/zero is reached and refused."""
    odd = calls / "odd"
    odd.mkdir()
    os.mkfifo(odd / "pipe.wav")
    (odd / "zero.wav").symlink_to("/dev/zero")
    (odd / "dangling.wav").symlink_to(odd / "gone.wav")
    (odd / "loop-a.wav").symlink_to(odd / "loop-b.wav")
    (odd / "loop-b.wav").symlink_to(odd / "loop-a.wav")
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-c", "from callmood.cli import main; main()",
                           "score", str(calls), "--out", str(out), "--model", model_dir,
                           "--workers", "1", "--follow-links"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr
    assert "2 calls scored" in done.stdout and "5 files failed" in done.stdout
    assert "Traceback" not in done.stderr
    # stderr is a pipe here, as a nightly job's log is: progress comes as whole lines
    assert "\r" not in done.stderr
    assert any("scoring: 100%" in line and "h of audio" in line
               for line in done.stderr.splitlines()), done.stderr
    kinds = {os.path.basename(e["file"]): (e["error_kind"], e["message"])
             for e in rows(out, "errors")}
    assert kinds["pipe.wav"][0] == "not_a_file" and "FIFO" in kinds["pipe.wav"][1]
    assert kinds["zero.wav"][0] == "not_a_file" and "device" in kinds["zero.wav"][1]
    for name in ("dangling.wav", "loop-a.wav", "loop-b.wav"):
        assert kinds[name][0] == "broken_link", name
    assert len(rows(out, "calls")) == 2


def test_the_runs_row_says_whether_the_run_finished(calls, tmp_path, model_dir):
    out = tmp_path / "results"
    run([calls], out, model_dir)
    assert [r["status"] for r in rows(out, "runs")] == ["finished"]
    # a run killed with SIGKILL keeps the row it wrote when it started
    process = subprocess.Popen([sys.executable, "-c", "from callmood.cli import main; main()",
                                "score", str(calls), "--out", str(tmp_path / "killed"),
                                "--model", model_dir, "--workers", "1", "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_dir = tmp_path / "killed" / "runs"
    deadline = time.time() + 120
    while not list(runs_dir.rglob("*.parquet")) and time.time() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    killed = rows(tmp_path / "killed", "runs")
    assert len(killed) == 1 and killed[0]["status"] in ("running", "finished")
    if killed[0]["status"] == "running":  # killed before the end, as almost always
        from callmood.dashboard import connect
        from callmood.dashboard.summary import summarize

        assert "did not finish (running)" in summarize(connect(tmp_path / "killed"))


def sidecar_errors(out) -> list[str]:
    if not (out / "errors").exists():
        return []
    return sorted(e["message"] for e in rows(out, "errors") if e["error_kind"] == "metadata")


def test_bad_sidecar_values_cost_only_their_field_and_are_reported(tmp_path, model_dir):
    """Each of these used to abort the run (or one of them, mid-run, left segments without
    their calls row); now the calls score and each problem is an error row."""
    folder = tmp_path / "calls"
    for name in ("a", "b", "c", "d"):
        synthetic_call(folder / f"{name}.wav", DIALOGUE[:2], 9.0, seed=ord(name))
    (folder / "calls.csv").write_text(
        "file,call_id,started_at,customer_channel\n"
        "a.wav,A,yesterday at noon,1\n"
        "b.wav,B,2026-11-20T09:00:00Z,99999999999999999999\n"
        "c.wav,C,9999-01-01T00:00:00,one\n"
        "gone.wav,G,2026-11-20T09:00:00Z,1\n"
        "d.wav,D,2026-11-21T10:00:00Z,0\n")
    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["score", str(folder), "--out", str(out), "--model",
                                       model_dir, "--workers", "1", "--no-progress"])
    # the calls scored: a sidecar fault is reported, but it does not fail the night (a
    # cron job would otherwise alert every night until someone edits the sidecar)
    assert result.exit_code == 0, result.output
    assert "4 calls scored" in result.output and "0 files failed" in result.output
    assert "5 metadata problems" in result.output
    calls = {r["call_id"]: r for r in rows(out, "calls")}
    assert set(calls) == {"A", "B", "C", "D"}
    assert calls["B"]["customer_channel"] is None and calls["D"]["customer_channel"] == 0
    assert calls["B"]["started_at"].isoformat().startswith("2026-11-20T09:00")
    messages = sidecar_errors(out)
    assert len(messages) == 5, messages
    assert any(m.startswith("line 2: field started_at: 'yesterday at noon'") for m in messages)
    assert any(m.startswith("line 3: field customer_channel") for m in messages)
    assert any(m.startswith("line 4: field started_at") and "1970-2100" in m
               for m in messages)
    assert any(m.startswith("line 4: field customer_channel: 'one'") for m in messages)
    assert any(m.startswith("line 5: field file: 'gone.wav' names no recording")
               for m in messages)
    assert all(e["file"].endswith("calls.csv") for e in rows(out, "errors"))


@pytest.mark.parametrize(("content", "expected"), [
    ("call_id,started_at\nA,2026-11-20T09:00:00Z\n", "needs a 'file' column"),
    (b"file,call_id\na.wav,caf\xe9\n", "not UTF-8 text"),
    ('file,call_id,queue\na.wav,A,"billing\nb.wav,B,sales\n', "unterminated quote"),
])
def test_an_unusable_sidecar_is_reported_and_the_calls_still_score(tmp_path, model_dir,
                                                                   content, expected):
    folder = tmp_path / "calls"
    for name in ("a", "b"):
        synthetic_call(folder / f"{name}.wav", DIALOGUE[:2], 9.0, seed=ord(name))
    sidecar = folder / "calls.csv"
    sidecar.write_bytes(content if isinstance(content, bytes) else content.encode())
    summary = run([folder], tmp_path / "results", model_dir)
    assert summary.calls_scored == 2
    messages = sidecar_errors(tmp_path / "results")
    assert len(messages) == 1 and expected in messages[0]
    assert {r["call_id"] for r in rows(tmp_path / "results", "calls")} <= {"a", "b", "A"}


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, model_dir):
    folder = tmp_path / "calls"
    synthetic_call(folder / "a.wav", DIALOGUE[:2], 9.0, seed=1)
    (folder / "calls.csv").write_bytes("\ufefffile,call_id,queue\na.wav,A-7,billing\n"
                                       .encode())
    run([folder], tmp_path / "results", model_dir)
    assert [(r["call_id"], r["queue"]) for r in rows(tmp_path / "results", "calls")] == [
        ("A-7", "billing")]
    assert sidecar_errors(tmp_path / "results") == []


def test_second_run_on_the_same_results_is_refused(calls, tmp_path, model_dir):
    out = tmp_path / "results"
    with ResultsStore(str(out)).lock():
        result = CliRunner().invoke(main, ["score", str(calls), "--out", str(out),
                                           "--model", model_dir, "--workers", "1"])
    assert result.exit_code == 1
    assert "being written by another `callmood` process" in result.output
    assert "Traceback" not in result.output


def test_clear_errors_for_bad_command_lines(calls, tmp_path, model_dir):
    missing = CliRunner().invoke(main, ["score", str(calls), "--out", str(tmp_path / "r"),
                                        "--model", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "model folder not found" in missing.output
    dask = CliRunner().invoke(main, ["score", str(calls), "--out", str(tmp_path / "r"),
                                     "--model", model_dir, "--backend", "dask"])
    assert dask.exit_code == 1 and "needs a scheduler address" in dask.output


def test_a_models_own_analytics_score_its_calls_unless_a_file_overrides(calls, tmp_path,
                                                                        model_dir):
    """Settings fitted with a model travel in its folder: scoring with it uses them (and
    score_config.json records them); --analytics puts its settings over them; a folder
    without them scores with CallAnalytics' defaults."""
    own = CallAnalytics(persistence_s=20.0, min_rise=0.3, share_error_sd=0.1)
    fitted = shutil.copytree(model_dir, tmp_path / "fitted")
    write_call_analytics(fitted, asdict(own), "a test")

    def analytics_of(name, *options):
        out = tmp_path / name
        result = CliRunner().invoke(main, ["score", str(calls), "--out", str(out), "--workers",
                                           "1", *options])
        assert result.exit_code == 0, result.output
        return CallAnalytics(**json.loads((out / "score_config.json").read_text())["analytics"])

    assert analytics_of("own", "--model", str(fitted)) == own
    assert analytics_of("plain", "--model", model_dir) == CallAnalytics()
    report = tmp_path / "file.json"
    report.write_text(json.dumps({"min_rise": 0.1}))
    assert analytics_of("file", "--model", str(fitted), "--analytics", str(report)) \
        == replace(own, min_rise=0.1)


def test_analytics_settings_from_a_file_are_used_and_recorded(calls, tmp_path, model_dir):
    """--analytics: a fit report's `chosen` settings score the calls and are kept in
    score_config.json; a file that is not settings is refused naming the file."""
    report = tmp_path / "fit.json"
    report.write_text(json.dumps({"chosen": {"shares": "argmax", "persistence_s": 0.0,
                                             "agent_persistence_s": 0.0}}))
    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["score", str(calls), "--out", str(out), "--model",
                                       model_dir, "--workers", "1", "--analytics", str(report)])
    assert result.exit_code == 0, result.output
    kept = json.loads((out / "score_config.json").read_text())["analytics"]
    assert (kept["shares"], kept["persistence_s"], kept["min_rise"]) == ("argmax", 0.0, 0.2)
    # argmax shares: a role's share of an emotion is the time of its windows whose top
    # label that is, over all its windows' time
    segments = rows(out, "segments")
    checked = 0
    for call in rows(out, "calls"):
        mine = [s for s in segments if s["call_id"] == call["call_id"]
                and s["role"] == "customer"]
        total = sum(s["end_s"] - s["start_s"] for s in mine)
        for key in (k for k in call if k.startswith("customer_share_") and total):
            label = key.removeprefix("customer_share_")
            top = sum(s["end_s"] - s["start_s"] for s in mine if s["emotion"] == label)
            assert call[key] == pytest.approx(top / total)
            checked += 1
    assert checked
    for text, message in (('{"min_rise": 0.1, "colour": 1}', "analytics settings: colour"),
                          ("[1, 2]", "expected a JSON object"), ("{", "Expecting"),
                          ('{"shares": "mode"}', "shares must be")):
        report.write_text(text)
        bad = CliRunner().invoke(main, ["score", str(calls), "--out", str(tmp_path / "r2"),
                                        "--model", model_dir, "--analytics", str(report)])
        assert bad.exit_code == 1 and f"--analytics {report}" in bad.output, bad.output
        assert message in bad.output and "Traceback" not in bad.output


def test_prior_shift_em_adapts_the_probabilities_of_the_run(calls, tmp_path, model_dir):
    plain, shifted = tmp_path / "plain", tmp_path / "em"
    run([calls], plain, model_dir)
    summary = run([calls], shifted, model_dir, prior_shift="em")
    assert summary.priors is not None and set(summary.priors) == set(LABELS)
    assert sum(summary.priors.values()) == pytest.approx(1.0)
    assert "class priors of the night" in summary.line()
    key = lambda r: (r["call_id"], r["channel"], r["start_s"])  # noqa: E731
    before = sorted(rows(plain, "segments"), key=key)
    after = sorted(rows(shifted, "segments"), key=key)
    assert [key(r) for r in before] == [key(r) for r in after]
    p_before = np.array([[r[f"p_{label}"] for label in LABELS] for r in before])
    p_after = np.array([[r[f"p_{label}"] for label in LABELS] for r in after])
    np.testing.assert_allclose(p_after.sum(1), 1.0, atol=1e-5)
    # each row is the plain one reweighted by estimated prior / uniform training prior
    priors = np.array([summary.priors[label] for label in LABELS])
    expected = p_before * priors
    np.testing.assert_allclose(p_after, expected / expected.sum(1, keepdims=True), atol=1e-4)
    # the mean of the adapted probabilities is the estimated prior (the EM fixed point)
    np.testing.assert_allclose(p_after.mean(0), priors, atol=5e-3)
    with pytest.raises(ValueError, match="prior shift"):
        ScoreConfig(prior_shift="always")
    with pytest.raises(ValueError, match="overlap"):  # checked even if no region is long
        ScoreConfig(overlap=1.0)


def test_call_ids_are_unique_across_dated_folders_however_they_are_scanned(tmp_path,
                                                                           model_dir):
    nights = tmp_path / "in"
    for day in ("2026-11-20", "2026-11-21"):
        path = nights / day / "0001.wav"
        synthetic_call(path, DIALOGUE[:2], 9.0, seed=int(day[-2:]))
        os.utime(path, (1e9, 1e9))  # a copied file's time says nothing about the call
    out = tmp_path / "results"
    for day in ("2026-11-20", "2026-11-21"):  # each night scans its own folder
        assert run([nights / day], out, model_dir).calls_scored == 1
    calls = sorted((r["call_id"], str(r["call_date"])) for r in rows(out, "calls"))
    assert calls == [("2026-11-20/0001", "2026-11-20"), ("2026-11-21/0001", "2026-11-21")]
    # the parent folder names the same calls the same way: nothing to do
    summary = run([nights], out, model_dir)
    assert (summary.calls_scored, summary.files_unchanged) == (0, 2)
    # every input folder is remembered: the dashboard plays only files under them
    assert json.loads((out / "inputs.json").read_text())["roots"] == sorted(
        str((nights / d).resolve()) for d in ("", "2026-11-20", "2026-11-21"))
    assert call_path(nights / "2026/11/22/a.wav", nights / "2026/11/22") == "2026/11/22/a.wav"
    assert call_path(nights / "x" / "a.wav", nights) == "x/a.wav"


def test_times_without_an_offset_are_local_times_of_the_source_timezone(tmp_path,
                                                                        model_dir):
    """A recorder in Berlin writes local times into its file names; they used to be taken
    as UTC, which put a call at 00:30 local on the previous day's dashboard bar."""
    folder = tmp_path / "calls"
    for name in ("20261123_003000.wav", "20260701_120000.wav", "a.wav", "b.wav"):
        synthetic_call(folder / name, DIALOGUE[:2], 9.0, seed=len(name))
    (folder / "calls.csv").write_text("file,call_id,started_at\n"
                                      "a.wav,A,2026-11-23 09:30\n"  # local
                                      "b.wav,B,2026-11-23T09:30:00Z\n")  # as written
    berlin = {c.meta.call_id: c.meta.started_at.isoformat()
              for c in scan([str(folder)], zone=source_zone("Europe/Berlin"))[0]}
    assert berlin == {"20261123_003000": "2026-11-22T23:30:00+00:00",
                      "20260701_120000": "2026-07-01T10:00:00+00:00",  # summer time
                      "A": "2026-11-23T08:30:00+00:00", "B": "2026-11-23T09:30:00+00:00"}
    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["score", str(folder), "--out", str(out), "--model",
                                       model_dir, "-j", "1", "--no-progress",
                                       "--source-timezone", "Europe/Berlin"])
    assert result.exit_code == 0, result.output
    calls = {r["call_id"]: r for r in rows(out, "calls")}
    assert str(calls["20261123_003000"]["call_date"]) == "2026-11-22"  # UTC day files
    assert calls["A"]["started_at"].isoformat().startswith("2026-11-23T08:30")
    wrong = CliRunner().invoke(main, ["score", str(folder), "--out", str(out), "--model",
                                      model_dir, "--source-timezone", "Berlin"])
    assert wrong.exit_code == 1 and "unknown time zone 'Berlin'" in wrong.output
    assert "Traceback" not in wrong.output


def test_files_differing_only_by_extension_are_two_calls_judged_on_their_own(tmp_path,
                                                                            model_dir):
    folder = tmp_path / "calls"
    synthetic_call(folder / "x.wav", DIALOGUE[:2], 9.0, seed=1)
    (folder / "x.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    summary = run([folder], tmp_path / "results", model_dir)
    assert (summary.calls_scored, summary.files_failed) == (1, 1)
    assert [r["call_id"] for r in rows(tmp_path / "results", "calls")] == ["x.wav"]
    [error] = rows(tmp_path / "results", "errors")
    assert error["file"].endswith("x.mp3") and error["error_kind"] != "duplicate_call_id"


@pytest.mark.parametrize("workers", [1, 2])
def test_files_over_the_time_limit_are_error_rows_and_the_run_goes_on(tmp_path, model_dir,
                                                                      workers):
    folder = tmp_path / "calls"
    for name in ("a", "b"):
        synthetic_call(folder / f"{name}.wav", DIALOGUE, 13.0, seed=ord(name))
    summary = run([folder], tmp_path / "results", model_dir, workers=workers,
                  file_minutes=1e-6)  # 60 microseconds: no file can make it
    assert (summary.calls_scored, summary.files_failed) == (0, 2)
    errors = rows(tmp_path / "results", "errors")
    assert {e["error_kind"] for e in errors} == {"timeout"}
    assert all("--file-minutes" in e["message"] for e in errors)


def test_the_time_limit_stops_a_long_file_between_blocks(tmp_path, model_dir):
    long_dialogue = [(c, s + k * 13, e + k * 13) for k in range(40) for c, s, e in DIALOGUE]
    synthetic_call(tmp_path / "long.wav", long_dialogue, 520.0, seed=1)
    args = (str(tmp_path / "long.wav"), model_dir, VadConfig(), 0.25, 3600.0, 4)
    assert score_file(*args).error is None  # loads the model, too
    started = time.monotonic()
    outcome = score_file(*args, time_limit_s=0.05)
    assert outcome.error_kind == "timeout" and time.monotonic() - started < 1.0


def test_bf16_is_the_networks_arithmetic_and_the_features_stay_fp32(tmp_path, model_dir):
    """--precision bf16 once wrapped the whole worker in an autocast: the log-mels were
    computed in bf16 and the network, whose forward pass sets its own precision, in fp32."""
    synthetic_call(tmp_path / "a.wav", DIALOGUE, 13.0, seed=3)
    network = cached_model(model_dir).model
    seen = {}

    def record(module, inputs, output):
        seen.setdefault("inputs", []).append(inputs[0].detach().clone())
        seen.setdefault("dtypes", set()).add(output.dtype)

    args = (str(tmp_path / "a.wav"), model_dir, VadConfig(), 0.25, 3600.0, 4)
    by_precision = {}
    for precision in ("fp32", "bf16"):
        seen.clear()
        hooks = [network.vit.embeddings.patch_embeddings.register_forward_hook(record)]
        try:
            outcome = score_file(*args, precision=precision)
        finally:
            for hook in hooks:
                hook.remove()
        assert outcome.error is None
        by_precision[precision] = (torch.cat(seen["inputs"]), seen["dtypes"], outcome.probs)
    (fp32_in, fp32_types, fp32_probs), (bf16_in, bf16_types, bf16_probs) = \
        by_precision["fp32"], by_precision["bf16"]
    assert torch.equal(fp32_in, bf16_in)  # the same features, to the bit
    assert fp32_types == {torch.float32} and bf16_types == {torch.bfloat16}
    assert 0 < np.abs(fp32_probs - bf16_probs).max() < 0.1


def test_a_time_limit_dropped_where_it_was_raised_still_ends_the_block():
    """cffi drops an exception raised in a callback (soundfile reading an object in a
    store): the limit is raised again, and a block that ends after it ends in FileTimeout."""
    for work_s in (0.05, 1.0):  # ends before the limit is raised again, or not
        started = time.monotonic()
        with pytest.raises(FileTimeout), time_limit(0.01):
            with contextlib.suppress(FileTimeout):  # dropped
                time.sleep(0.02)
            time.sleep(work_s)
        assert time.monotonic() - started < 0.5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_moved_recording_replaces_its_rows_instead_of_doubling_the_call(tmp_path, model_dir):
    night = tmp_path / "in" / "2026-11-20"
    for seed, name in enumerate(("0001.wav", "0002.wav")):
        synthetic_call(night / name, DIALOGUE[:2], 9.0, seed=seed)
    out = tmp_path / "results"
    run([night], out, model_dir)  # the night's rows are merged into one compacted file
    assert [p.name[:6] for p in (out / "calls" / "call_date=2026-11-20").iterdir()] == ["part-c"]
    moved = tmp_path / "archive" / "2026-11-20" / "0001.wav"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"half copied")  # seen while the move was under way: it fails
    assert run([moved.parent], out, model_dir).files_failed == 1
    (night / "0001.wav").rename(moved)
    summary = run([moved.parent], out, model_dir)
    assert (summary.calls_scored, summary.files_failed) == (1, 0)
    calls = sorted((c["call_id"], c["source_file"]) for c in rows(out, "calls"))
    assert calls == [("2026-11-20/0001", str(moved)), ("2026-11-20/0002", str(night / "0002.wav"))]
    assert {s["source_file"] for s in rows(out, "segments")
            if s["call_id"] == "2026-11-20/0001"} == {str(moved)}
    # the old path owns nothing any more: both files are unchanged on the next run
    assert run([night, moved.parent], out, model_dir).files_unchanged == 2


def test_a_re_score_that_times_out_keeps_the_rows_it_would_have_replaced(calls, tmp_path,
                                                                          model_dir):
    out = tmp_path / "results"
    run([calls], out, model_dir)
    before = sorted((s["call_id"], s["start_s"]) for s in rows(out, "segments"))
    failed = run([calls], out, model_dir, rescore=True, file_minutes=1e-6)
    assert (failed.calls_scored, failed.files_failed) == (0, 2)
    assert {e["error_kind"] for e in rows(out, "errors")} == {"timeout"}
    assert sorted((s["call_id"], s["start_s"]) for s in rows(out, "segments")) == before
    assert len(rows(out, "calls")) == 2
    # a failure that is about the recording drops its old rows: it no longer holds that audio
    (calls / "nested" / "b.wav").write_bytes(b"not audio any more")
    assert run([calls], out, model_dir).files_failed == 1
    assert {c["call_id"] for c in rows(out, "calls")} == {"A-1"}


def test_live_calls_that_end_while_a_nightly_run_holds_the_results_are_not_lost(calls,
                                                                               tmp_path,
                                                                               model_dir):
    """A live call used to wait up to 15 minutes for a nightly run (which holds the results
    for hours), then was dropped. Now it waits in the spool and the next holder writes it:
    the nightly run itself before it lets go, or the live server's retry."""
    out = str(tmp_path / "results")
    model = cached_model(model_dir)
    outcome = score_file(str(calls / "nested" / "b.wav"), model_dir, VadConfig(), 0.25,
                         3600.0, 4)
    started = datetime(2026, 11, 20, 15, tzinfo=timezone.utc)
    store = ResultsStore(out)
    with store.lock():  # a nightly run is under way
        for call_id in ("live-1", "A-1"):  # A-1 is also a.wav's id in its sidecar
            assert not write_live_call(out, model, CallMeta(call_id, "ag7", None, started, 1),
                                       outcome, CallAnalytics())
    assert len(store.spooled_files()) == 2 and not (tmp_path / "results" / "calls").exists()
    summary = run([calls], out, model_dir)  # the next night writes them first...
    assert summary.calls_scored == 1  # ... so a.wav counts as scored live, nested/b scores
    assert not store.spooled_files()
    written = {r["call_id"]: r for r in rows(out, "calls")}
    assert set(written) == {"live-1", "A-1", "nested/b"}
    assert written["live-1"]["n_segments"] == len(outcome.windows) > 0
    assert written["live-1"]["source_file"] == "live:live-1"
    # the live server's retry writes what ended after the night let go
    with store.lock():
        write_live_call(out, model, CallMeta("live-2", None, None, started, None), outcome,
                        CallAnalytics())
    assert flush_live_spool(out, CallAnalytics()) and not store.spooled_files()
    assert "live-2" in {r["call_id"] for r in rows(out, "calls")}
    # a live call whose recording a night has scored does not replace the recording's rows
    with store.lock():
        write_live_call(out, model, CallMeta("nested/b", None, None, started, None),
                        outcome, CallAnalytics())
    assert run([calls], out, model_dir).calls_scored == 0
    assert not store.spooled_files()
    assert [r["source_file"] for r in rows(out, "calls") if r["call_id"] == "nested/b"] == [
        str(calls / "nested" / "b.wav")]
    assert [e["error_kind"] for e in rows(out, "errors")] == ["superseded"]


def test_a_copied_recording_dated_by_its_mtime_stays_on_its_day(tmp_path, model_dir):
    """Copying an archive without keeping times (cp without -p, a restore) used to score
    every recording that has no date in its path or sidecar again, under the copy's date."""
    first = tmp_path / "disk1" / "calls"
    for seed, name in enumerate(("x.wav", "y.wav")):
        synthetic_call(first / name, DIALOGUE[:2], 9.0, seed=seed)
        os.utime(first / name, (1.7636e9, 1.7636e9))  # 2025-11-20 UTC
    out = tmp_path / "results"
    assert run([first], out, model_dir).calls_scored == 2
    copy = first / "x.copy"
    shutil.copyfile(first / "x.wav", copy)  # a new mtime, the same content
    copy.replace(first / "x.wav")
    summary = run([first], out, model_dir)
    assert (summary.calls_scored, summary.files_unchanged) == (0, 2)
    entry = ResultsStore(str(out)).manifest_entry(str(first / "x.wav"))
    assert entry["mtime_ns"] == (first / "x.wav").stat().st_mtime_ns  # not hashed again
    # moved to another disk: scored again under its new path, on its old day
    second = tmp_path / "disk2" / "calls"
    shutil.copytree(first, second)
    shutil.rmtree(first)
    assert run([second], out, model_dir).calls_scored == 2
    days = sorted((c["call_id"], str(c["call_date"]), c["source_file"])
                  for c in rows(out, "calls"))
    assert days == [("x", "2025-11-20", str(second / "x.wav")),
                    ("y", "2025-11-20", str(second / "y.wav"))]
    # --rescore takes the date from the file again (a wrong mtime fixed with touch -d)
    os.utime(second / "y.wav", (1.7637e9, 1.7637e9))  # 2025-11-21 UTC
    assert run([second], out, model_dir).calls_scored == 0
    assert run([second], out, model_dir, rescore=True).calls_scored == 2
    assert {c["call_id"]: str(c["call_date"]) for c in rows(out, "calls")}["y"] == "2025-11-21"
    # new content is a new recording: its mtime dates it
    synthetic_call(second / "x.wav", DIALOGUE[:2], 9.0, seed=7)
    assert run([second], out, model_dir).calls_scored == 1
    assert {c["call_id"]: str(c["call_date"]) for c in rows(out, "calls")}["x"] != "2025-11-20"


def test_the_spool_keeps_each_calls_model_and_sets_aside_what_it_cannot_write(
        calls, tmp_path, model_dir):
    out = tmp_path / "results"
    other = cached_model(str(make_model_folder(tmp_path / "model-v2", seed=1)))
    outcome = score_file(str(calls / "a.wav"), model_dir, VadConfig(), 0.25, 3600.0, 4)
    started = datetime(2026, 11, 20, 15, tzinfo=timezone.utc)
    store = ResultsStore(str(out))
    with store.lock():  # scored live by another model version while a night runs
        write_live_call(str(out), other, CallMeta("v2", None, None, started, 1), outcome,
                        CallAnalytics())
    spool = out / "_live_spool"
    [good] = spool.glob("*.json")
    value = json.loads(good.read_text())
    (spool / "0-other-labels.json").write_text(json.dumps(
        {**value, "model": {**value["model"], "labels": ["calm", "upset"]}}))
    (spool / "1-broken.json").write_text('{"model": ')
    (spool / ".tmp-2-being-written.json.0a1b2c3d").write_text("{")  # a live server's rename
    run([calls], out, model_dir)  # the night's model is v1
    written = {r["call_id"]: r for r in rows(out, "calls")}
    assert written["v2"]["model_version"] == other.version != cached_model(model_dir).version
    assert written["A-1"]["model_version"] == cached_model(model_dir).version
    assert sorted(p.name for p in (spool / "rejected").iterdir()) == ["0-other-labels.json",
                                                                      "1-broken.json"]
    errors = [e for e in rows(out, "errors") if e["error_kind"] == "spool"]
    assert len(errors) == 2 and all("set aside" in e["message"] for e in errors)
    assert any("labels" in e["message"] for e in errors)
    assert (spool / ".tmp-2-being-written.json.0a1b2c3d").exists()
