"""`callmood query` through click's CliRunner."""

import csv
import datetime as dt
import io
import json
import shutil

from click.testing import CliRunner
from dashboard_data import write_call

from callmood.cli import main

pytest_plugins = ["dashboard_fixtures"]


def invoke(*args):
    return CliRunner().invoke(main, ["query", *map(str, args)])


def test_sql_in_three_formats(sample_results):
    sql = "SELECT call_id, escalated FROM calls ORDER BY call_id"
    table = invoke(sample_results, sql)
    assert table.exit_code == 0, table.output
    assert table.output.split()[:4] == ["call_id", "escalated", "c1", "False"]
    csv = invoke(sample_results, sql, "--format", "csv")
    assert csv.output.splitlines()[:2] == ["call_id,escalated", "c1,False"]
    rows = json.loads(invoke(sample_results, sql, "--format", "json").output)
    assert [r["call_id"] for r in rows if r["escalated"]] == ["c2", "c3"]


def test_canned_with_params(sample_results):
    result = invoke(sample_results, "--canned", "top_escalated", "--param", "agent=A1",
                    "--format", "json")
    assert result.exit_code == 0, result.output
    assert [r["call_id"] for r in json.loads(result.output)] == ["c3"]
    bad = invoke(sample_results, "--canned", "top_escalated", "--param", "when=today")
    assert bad.exit_code == 1 and "no parameter when" in bad.output


def test_list_and_summary(sample_results):
    listing = invoke(sample_results, "--list").output
    assert "segments:" in listing and "errors:" in listing and "daily_negative(" in listing
    summary = invoke(sample_results, "--summary")
    assert summary.exit_code == 0, summary.output
    assert "Calls: 5 from 2026-03-02 to 2026-03-09" in summary.output
    assert "customer  angry 36%, neutral 36%, happy 18%, sad 9%" in summary.output
    assert "  c3  2026-03-03  agent A1" in summary.output


def test_timezone_option_and_variable(sample_results, monkeypatch):
    assert "finished 2026-03-10 02:05 UTC;" in invoke(sample_results, "--summary").output
    local = invoke(sample_results, "--summary", "--timezone", "Europe/Berlin")
    assert "finished 2026-03-10 03:05 Europe/Berlin;" in local.output
    # New York moved to summer time on 8 March 2026: UTC-5 before, UTC-4 after
    monkeypatch.setenv("CALLMOOD_TIMEZONE", "America/New_York")
    hours = invoke(sample_results, "--canned", "hour_of_day", "--format", "csv")
    assert [line.split(",")[0] for line in hours.output.split()[1:]] == ["4", "6", "9", "10"]
    wrong = invoke(sample_results, "--summary", "--timezone", "Berlin")
    assert wrong.exit_code == 1 and "unknown time zone 'Berlin'" in wrong.output


def test_empty_folder(empty_results):
    assert "No calls scored yet." in invoke(empty_results, "--summary").output
    result = invoke(empty_results, "SELECT count(*) AS n FROM errors")
    assert result.exit_code == 0 and result.output.split() == ["n", "0"]


def test_errors_are_clear(sample_results, tmp_path):
    refused = invoke(sample_results, f"COPY calls TO '{sample_results}/copy.csv'")
    assert refused.exit_code == 1
    assert "only SELECT queries are allowed" in refused.output
    assert not (sample_results / "copy.csv").exists()
    missing = invoke(tmp_path / "nope", "--summary")
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert "Traceback" not in missing.output
    assert invoke(sample_results).exit_code == 2  # nothing asked
    assert "Catalog Error" in invoke(sample_results, "SELECT * FROM nope").output


def test_csv_neutralises_spreadsheet_formulas(sample_results, tmp_path):
    """Formulas in sidecar values (an agent id, a queue, a call id) went verbatim into
    CSV, for a spreadsheet to run. Text cells starting with = + - @ tab or CR now get a
    leading ' (numbers stay numbers); --csv-raw writes them as they are."""
    results = tmp_path / "results"
    shutil.copytree(sample_results, results)
    cells = ["+SUM(1,2)", "=cmd|' /C calc'!A0", '=HYPERLINK("https://evil.example","x")']
    write_call(results, cells[0], (dt.datetime(2026, 3, 9, 16, tzinfo=dt.timezone.utc),
                                   cells[1], cells[2], 10.0, False, -3.5,
                                   [("customer", 0, 5, "sad", 0.9)]))
    sql = ("SELECT call_id, agent_id, queue, escalation_slope, '@x' AS a, chr(9) || 'x' AS t, "
           "chr(13) || 'x' AS r, '-1' AS m, 'a' || chr(13) || '=b' AS cr, 'a=b' AS plain "
           "FROM calls WHERE escalation_slope < -1")
    raw = [*cells, "-3.5", "@x", "\tx", "\rx", "-1", "a\r=b", "a=b"]

    def rows(*options):
        result = invoke(results, sql, "--format", "csv", *options)
        assert result.exit_code == 0, result.output
        return list(csv.reader(io.StringIO(result.output)))

    header, *neutralised = rows()
    assert header[:4] == ["call_id", "agent_id", "queue", "escalation_slope"]
    # one row: a CR inside a cell stays inside it (quoted), so "=b" starts no cell
    assert neutralised == [["'" + c for c in cells]
                           + ["-3.5", "'@x", "'\tx", "'\rx", "'-1", "a\r=b", "a=b"]]
    assert rows("--csv-raw")[1:] == [raw]
    assert [*json.loads(invoke(results, sql, "--format", "json").output)[0].values()] == \
        [*raw[:3], -3.5, *raw[4:]]  # JSON is read as data, never run
    misused = invoke(results, sql, "--csv-raw")
    assert misused.exit_code == 2 and "--csv-raw goes with --format csv" in misused.output
