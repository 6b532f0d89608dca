"""Results in a bucket of a real S3 server (moto, a separate process), read through the
local copy that every open brings up to date (dashboard/results_cache.py): the same
answers as the same files on the local disk, before and after the bucket changes; the
dashboard on a bucket."""

import json
import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner
from dashboard_data import CALLS, write_call
from s3_data import SECRET
from streamlit.testing.v1 import AppTest

from callmood.cli import main
from callmood.dashboard import app_data
from callmood.dashboard.canned import load_queries, run_canned
from callmood.dashboard.launch import streamlit_command
from callmood.dashboard.results_cache import cache_folder
from callmood.dashboard.results_db import connect, fetch_frame
from callmood.results.location import STORAGE_OPTIONS_ENV

pytest_plugins = ["dashboard_fixtures", "s3_fixtures"]
APP = str(Path(app_data.__file__).with_name("app.py"))


def answers(results: str) -> dict:
    """Every table's rows and every canned query's answer over the results."""
    found = {}
    with connect(results) as con:
        for table in ("segments", "calls", "errors", "runs"):
            found[table] = fetch_frame(con, f"SELECT * FROM {table} ORDER BY ALL")
        for name, query in load_queries().items():
            declared = {p.name for p in query.params}
            params = {"call_id": "c2"} if "call_id" in declared else {}
            found[name] = run_canned(con, name, params, strict=False)
    return found


def assert_same(expected: dict, got: dict) -> None:
    assert expected.keys() == got.keys()
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(frame, got[name], obj=name)


def test_a_bucket_answers_as_the_local_folder_and_is_read_only(s3, sample_results):
    url = s3.upload(sample_results, "results")
    assert_same(answers(str(sample_results)), answers(url))
    copy = cache_folder(url)
    assert copy.is_relative_to(os.environ["CALLMOOD_CACHE"])
    with connect(url) as con:  # the copy only: neither the bucket nor anything else
        for outside in (f"{url}/calls/call_date=2026-03-02/part-c1.parquet",
                        str(sample_results / "calls/call_date=2026-03-02/part-c1.parquet")):
            with pytest.raises(duckdb.Error):
                con.sql(f"SELECT * FROM read_parquet('{outside}')").fetchall()


def test_the_next_open_sees_changed_new_and_deleted_objects(s3, sample_results, tmp_path):
    local = tmp_path / "results"
    shutil.copytree(sample_results, local)
    url = s3.upload(local, "results")
    answers(url)  # the first open fetches everything
    copy = cache_folder(url)
    kept = copy / "calls/call_date=2026-03-02/part-c2.parquet"
    kept_inode = kept.stat().st_ino

    # the same changes to the local folder and to the bucket: c1 moved to another queue,
    # c3 deleted, c6 new, c2 uploaded again unchanged (a new time, the same ETag)
    write_call(local, "c1", (*CALLS["c1"][:2], "retention", *CALLS["c1"][3:]))
    write_call(local, "c6", (CALLS["c4"][0], "A9", *CALLS["c4"][2:]))
    for table in ("calls", "segments"):
        (local / f"{table}/call_date=2026-03-03/part-c3.parquet").unlink()
        s3.fs.rm(f"{s3.name}/results/{table}/call_date=2026-03-03/part-c3.parquet")
        for path in ("call_date=2026-03-02/part-c1.parquet", "call_date=2026-03-09/"
                     "part-c6.parquet", "call_date=2026-03-02/part-c2.parquet"):
            s3.fs.put_file(str(local / table / path), f"{s3.name}/results/{table}/{path}")

    got = answers(url)
    assert_same(answers(str(local)), got)
    calls = got["calls"].set_index("call_id")
    assert calls.loc["c1", "queue"] == "retention" and "c6" in calls.index
    assert "c3" not in calls.index and "c3" not in set(got["segments"]["call_id"])
    assert not list(copy.rglob("part-c3.parquet"))  # the copy of a deleted call is gone
    assert kept.stat().st_ino == kept_inode  # an unchanged object is not fetched again


def test_the_dashboard_opens_a_bucket_with_storage_options_only(s3, sample_results,
                                                                monkeypatch):
    url = s3.upload(sample_results, "results")
    options = json.dumps({"key": "callmood-test", "secret": SECRET})
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    # `callmood dashboard URL --storage-options JSON` checks the folder before it starts
    # the page, and hands the options over in the page's environment
    refused = CliRunner().invoke(main, ["dashboard", url, "--storage-options", "{key"])
    assert refused.exit_code == 1 and "--storage-options is not JSON" in refused.output
    assert streamlit_command(url, [], json.loads(options))[-1] == url
    monkeypatch.setenv(app_data.RESULTS_ENV, url)
    monkeypatch.setenv(STORAGE_OPTIONS_ENV, options)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert {m.label: m.value for m in at.metric}["Calls"] == "5"

    monkeypatch.delenv(STORAGE_OPTIONS_ENV)  # no credentials at all: a message, not a crash
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception and "no usable credentials" in at.error[0].value
