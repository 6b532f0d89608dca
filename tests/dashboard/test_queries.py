"""Canned queries on the hand-made results (tests/dashboard_fixtures.py) with known answers."""

import datetime as dt
import math
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dashboard_data import CALLS, LABELS, write_call, write_labels_json

from callmood.dashboard.canned import QueryError, get_query, load_queries, run_canned
from callmood.dashboard.results_db import (
    ReadOnlyError,
    ResultsError,
    check_read_only,
    connect,
    labels,
    run_sql,
)

pytest_plugins = ["dashboard_fixtures"]
D = dt.date


@pytest.fixture(scope="module")
def con(sample_results):
    con = connect(sample_results)
    yield con
    con.close()


def q(con, name, **params):
    return run_canned(con, name, params)


def test_every_query_declares_exactly_the_parameters_it_uses():
    queries = load_queries()
    assert {"daily_negative", "agents", "queues", "top_escalated", "transitions",
            "hour_of_day"} <= set(queries)
    for query in queries.values():
        used = set(re.findall(r"\$(\w+)", query.sql))
        assert used == {p.name for p in query.params}, query.name
        assert query.description


def test_views_and_labels(con):
    assert labels(con) == LABELS
    assert con.execute("SELECT count(*) FROM segments").fetchall() == [(16,)]
    assert con.execute("SELECT count(*) FROM calls").fetchall() == [(5,)]
    negative = con.sql("SELECT label FROM emotion_labels WHERE negative ORDER BY label")
    assert [r[0] for r in negative.fetchall()] == ["angry", "disgust", "fearful", "sad"]


def test_daily_negative(con):
    df = q(con, "daily_negative")
    assert list(df.call_date.dt.date) == [D(2026, 3, 2), D(2026, 3, 3), D(2026, 3, 9)]
    assert list(df.calls) == [2, 1, 2]
    assert list(df.negative_share) == pytest.approx([0.5, 1.0, 0.0])
    billing = q(con, "daily_negative", queue="billing")
    assert list(billing.negative_share) == pytest.approx([1 / 3, 0.0])
    # the emotion filter is of the chosen role, as on the rest of the overview page: the
    # customer was happy in c4 and c5 only (the agent of c2 was happy too, which used to
    # put 2026-03-02 on the chart)
    happy = q(con, "daily_negative", role="customer", emotion="happy")
    assert list(happy.call_date.dt.date) == [D(2026, 3, 9)] and list(happy.calls) == [2]
    assert list(happy.negative_share) == pytest.approx([0.0])
    assert q(con, "overview", role="customer", emotion="happy").calls[0] == 2
    assert q(con, "daily_negative", role="agent").negative_share.notna().all()


def test_labels_json_valence_overrides_the_default(tmp_path):
    root = tmp_path / "results"
    write_call(root, "c3", CALLS["c3"])
    write_labels_json(root, {"angry": -1, "sad": 0, "neutral": 0, "happy": 1})
    with connect(root) as con:
        assert list(q(con, "daily_negative").negative_share) == pytest.approx([0.5])


def test_agents_with_trend_vs_previous_period(con):
    df = q(con, "agents").set_index("agent_id")
    assert df.loc["A1", "calls"] == 3
    assert df.loc["A1", "customer_negative_share"] == pytest.approx(30 / 70)
    assert df.loc["A1", "escalation_rate"] == pytest.approx(1 / 3)
    assert df.loc["A2", "customer_negative_share"] == pytest.approx(0.5)
    assert df.loc["A2", "escalation_rate"] == pytest.approx(0.5)
    assert df.negative_share_change.isna().all()  # nothing before the first day

    # 2026-03-03..09 (7 days) against 2026-02-24..03-02.
    df = q(con, "agents", date_from="2026-03-03", date_to="2026-03-09").set_index("agent_id")
    assert df.loc["A1", "customer_negative_share"] == pytest.approx(0.5)
    assert df.loc["A1", "negative_share_change"] == pytest.approx(0.5 - 1 / 3)
    assert df.loc["A2", "negative_share_change"] == pytest.approx(0 - 2 / 3)
    assert df.loc["A2", "escalation_rate_change"] == pytest.approx(-1.0)
    # one value per day of the range, NULL (NaN here) on a day without calls
    assert list(df.loc["A1", "daily_negative_share"]) == pytest.approx(
        [1.0, *[math.nan] * 5, 0.0], nan_ok=True)


def test_calls_without_an_agent_or_queue_can_be_picked(sample_results, tmp_path):
    """Their row in the agents and queues tables used to open every call when clicked
    (its NaN was no filter value), and no filter could pick them."""
    root = tmp_path / "results"
    shutil.copytree(sample_results, root)
    write_call(root, "c6", (dt.datetime(2026, 3, 9, 16, tzinfo=dt.timezone.utc), None, None,
                            10.0, False, None, [("customer", 0, 5, "sad", 0.9)]))
    with connect(root) as con:
        options = q(con, "filter_options").iloc[0]
        assert list(options.agents) == ["(none)", "A1", "A2"]
        assert list(options.queues) == ["(none)", "billing", "support"]
        assert q(con, "agents").set_index("agent_id").loc["(none)", "calls"] == 1
        assert q(con, "queues").set_index("queue").loc["(none)", "calls"] == 1
        assert list(q(con, "calls_list", agent="(none)").call_id) == ["c6"]
        assert list(q(con, "calls_list", queue="(none)").call_id) == ["c6"]
        assert len(q(con, "calls_list", agent="A1")) == 3


def test_queues(con):
    df = q(con, "queues").set_index("queue")
    assert df.loc["billing", "calls"] == 3
    assert df.loc["billing", "customer_negative_share"] == pytest.approx(10 / 60)
    assert df.loc["billing", "escalation_rate"] == 0
    assert df.loc["support", "customer_negative_share"] == pytest.approx(40 / 50)
    assert df.loc["support", "escalated_calls"] == 2
    assert df.loc["support", "mean_duration_s"] == pytest.approx(35.0)


def test_daily_shares_have_a_value_for_every_day_of_the_range(sample_results, tmp_path):
    """The sparklines' lists skipped the days without calls (so days far apart looked
    adjacent) and held a NULL for a day whose calls had no customer speech; now each
    list has one value per day of the range, NULL where that day has no share."""
    root = tmp_path / "results"
    shutil.copytree(sample_results, root)
    write_call(root, "c6", (dt.datetime(2026, 3, 5, 11, tzinfo=dt.timezone.utc), "A2",
                            "billing", 15.0, False, None, [("agent", 0, 10, "neutral", 0.9)]))
    gap = [math.nan] * 6  # NULL in DuckDB
    with connect(root) as con:
        queues = q(con, "queues").set_index("queue")
        assert list(queues.loc["billing", "daily_negative_share"]) == pytest.approx(
            [1 / 3, *gap, 0.0], nan_ok=True)
        assert list(queues.loc["support", "daily_negative_share"]) == pytest.approx(
            [2 / 3, 1.0, *gap], nan_ok=True)
        agents = q(con, "agents").set_index("agent_id")
        assert list(agents.loc["A2", "daily_negative_share"]) == pytest.approx(
            [2 / 3, *gap, 0.0], nan_ok=True)
        # the range is the date filter's, not the days that have calls
        week = q(con, "queues", date_from="2026-03-08", date_to="2026-03-14")
        assert list(week.set_index("queue").loc["billing", "daily_negative_share"]) == \
            pytest.approx([math.nan, 0.0, *gap[:5]], nan_ok=True)


def test_top_escalated(con):
    assert list(q(con, "top_escalated").call_id) == ["c3", "c2"]
    assert list(q(con, "top_escalated", limit=1).call_id) == ["c3"]
    assert list(q(con, "top_escalated", agent="A2").call_id) == ["c2"]


def test_transitions(con):
    df = q(con, "transitions")
    got = {(r.from_emotion, r.to_emotion): r.transitions for r in df.itertuples()}
    assert got == {("neutral", "angry"): 2, ("angry", "neutral"): 1, ("sad", "angry"): 1,
                   ("neutral", "happy"): 1}
    assert set(df.role) == {"customer"}
    turns = df.set_index(["from_emotion", "to_emotion"]).turns_negative
    assert turns["neutral", "angry"] and not turns["sad", "angry"]
    # c5's neutral segment has confidence 0.4.
    confident = q(con, "transitions", min_confidence=0.5)
    pairs = set(zip(confident.from_emotion, confident.to_emotion, strict=True))
    assert ("neutral", "happy") not in pairs


def test_hour_of_day(con):
    df = q(con, "hour_of_day")
    assert list(df.hour) == [9, 10, 14]
    assert list(df.calls) == [2, 1, 2]
    assert list(df.customer_negative_share) == pytest.approx([30 / 50, 0.0, 20 / 50])


def test_times_in_a_call_centre_time_zone(sample_results):
    """Berlin is UTC+1 in early March 2026: the 09:15 UTC call started at 10:15 there."""
    berlin = connect(sample_results, timezone="Europe/Berlin")
    try:
        assert list(q(berlin, "hour_of_day").hour) == [10, 11, 15]
        started = q(berlin, "calls_list").set_index("call_id").started_at
        assert f"{started['c1']:%H:%M %Z}" == "10:15 CET"
        assert started["c1"] == dt.datetime(2026, 3, 2, 9, 15, tzinfo=dt.timezone.utc)
    finally:
        berlin.close()
    with pytest.raises(ResultsError, match="unknown time zone 'Mars/Olympus'"):
        connect(sample_results, timezone="Mars/Olympus")


def test_days_are_the_call_centre_s_days(sample_results):
    """At UTC+14 the 14:30 UTC call of 2 March starts at 04:30 on 3 March: it counts on
    that day's bar, and a filter on that day finds it and its segments."""
    far_east = connect(sample_results, timezone="Pacific/Kiritimati")
    try:
        daily = q(far_east, "daily_negative")
        assert [(f"{d:%m-%d}", n) for d, n in zip(daily.call_date, daily.calls, strict=True)] \
            == [("03-02", 1), ("03-03", 2), ("03-10", 2)]
        one_day = q(far_east, "calls_list", date_from="2026-03-03", date_to="2026-03-03")
        assert sorted(one_day.call_id) == ["c2", "c3"]
        # c2's 40 s and c3's 30 s of scored speech, though c2's files are on 2 March (UTC)
        speech = q(far_east, "emotion_share", date_from="2026-03-03", date_to="2026-03-03")
        assert speech.speech_s.sum() == pytest.approx(70.0)
    finally:
        far_east.close()


def test_overview_and_filters(con):
    row = q(con, "overview").iloc[0]
    assert row.calls == 5 and row.escalated_calls == 2 and row.agents == 2
    assert row.audio_hours == pytest.approx(170 / 3600)
    assert q(con, "overview", queue="billing").iloc[0].calls == 3
    assert q(con, "overview", emotion="sad").iloc[0].calls == 1
    assert q(con, "overview", emotion="happy", role="agent").iloc[0].calls == 2
    assert q(con, "overview", date_from=D(2026, 3, 3)).iloc[0].calls == 3


def test_emotion_share_and_trend(con):
    share = q(con, "emotion_share").set_index(["role", "emotion"]).share
    assert share["customer", "angry"] == pytest.approx(40 / 110)
    assert share["agent", "neutral"] == pytest.approx(0.6)
    week = q(con, "emotion_trend", grain="week", role="customer")
    assert list(week.period.dt.date.unique()) == [D(2026, 3, 2), D(2026, 3, 9)]
    first = week[week.period.dt.date == D(2026, 3, 2)].set_index("emotion").share
    assert first["angry"] == pytest.approx(40 / 80)
    with pytest.raises(Exception, match="grain must be day or week, not month"):
        q(con, "emotion_trend", grain="month")  # used to give daily figures silently


def test_calls_list_segments_runs_and_options(con):
    assert list(q(con, "calls_list").call_id) == ["c5", "c4", "c3", "c2", "c1"]
    # a call asked for by id (a click-through, a shared link) is listed wherever it ranks
    cut = q(con, "calls_list", limit=2, call_id="c1")
    assert list(cut.call_id) == ["c5", "c4", "c1"] and set(cut.matching_calls) == {5}
    segments = q(con, "call_segments", call_id="c1", role="customer")
    assert list(segments.start_s) == [10, 20, 40]
    assert list(segments.negative) == [False, True, False]
    runs = q(con, "run_status").iloc[0]
    assert (runs.runs, runs.last_run_id, runs.errors, runs.last_run_errors) == (2, "r2", 1, 1)
    options = q(con, "filter_options").iloc[0]
    assert list(options.queues) == ["billing", "support"]
    assert list(options.emotions) == LABELS
    assert list(options.valences) == [0.0, 1.0, -1.0, -1.0]  # the default valence map


def test_every_query_runs_on_an_empty_folder(empty_results):
    with connect(empty_results) as con:
        for name in load_queries():
            params = {"call_id": "x"} if name == "call_segments" else {}
            df = run_canned(con, name, params)
            assert len(df.columns) > 0
        assert q(con, "overview").iloc[0].calls == 0
        assert labels(con) == []


def test_new_label_columns_are_tolerated(tmp_path):
    """Schema evolution: a later model adds a label; older files lack its columns."""
    root = tmp_path / "results"
    write_call(root, "c1", CALLS["c1"])
    write_call(root, "c4", CALLS["c4"], labels=LABELS + ["surprised"])
    with connect(root) as con:
        assert "surprised" in labels(con)
        assert con.execute("SELECT count(p_surprised) FROM segments").fetchall() == [(2,)]
        assert q(con, "overview").iloc[0].calls == 2


@pytest.mark.parametrize("sql", [
    "DROP VIEW calls",
    "COPY calls TO 'out.csv'",
    "COPY (SELECT * FROM calls) TO '{root}/calls/x.parquet'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "ATTACH 'other.db'",
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO emotion_labels VALUES ('x', 9, -1, true)",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "EXPORT DATABASE 'dump'",
    "SELECT 1; DROP VIEW calls",
    "  /* a comment */ delete FROM emotion_labels",
])
def test_writes_are_refused(con, sample_results, sql):
    sql = sql.format(root=sample_results)
    with pytest.raises(ReadOnlyError):
        run_sql(con, sql)
    assert con.execute("SELECT count(*) FROM calls").fetchall() == [(5,)]
    assert not (sample_results / "calls" / "x.parquet").exists()


def test_read_only_connection_is_locked_and_confined(con):
    check_read_only("WITH x AS (SELECT 1) SELECT * FROM x")
    check_read_only("DESCRIBE calls")
    with pytest.raises(Exception, match="locked"):
        con.execute("SET enable_external_access = true")
    with pytest.raises(Exception, match="disabled by configuration"):
        con.sql("SELECT * FROM read_csv('/etc/passwd')").fetchall()


def test_duckdbs_spill_folder_in_the_working_directory_is_not_readable(
        sample_results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DuckDB's default spill folder is ./.tmp
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "secret.txt").write_text("not for analysts")
    with connect(sample_results) as con:
        with pytest.raises(Exception, match="disabled by configuration"):
            con.sql("SELECT content FROM read_text('.tmp/secret.txt')").fetchall()
        assert con.execute("SELECT count(*) FROM calls").fetchall() == [(5,)]


def test_parameters_are_bound_not_pasted(con):
    assert q(con, "overview", agent="A1' OR '1'='1").iloc[0].calls == 0
    with pytest.raises(QueryError, match="no parameter"):
        get_query("overview").bind({"nope": 1})
    with pytest.raises(QueryError, match="not a date"):
        get_query("overview").bind({"date_from": "yesterday"})
    with pytest.raises(QueryError, match="no canned query"):
        get_query("nope")


def test_missing_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        connect(tmp_path / "nope")


def test_agent_and_queue_shares_come_with_an_interval_that_widens_with_few_calls(
        con, tmp_path):
    """Over two or more calls the interval is the share +- 1.96 * sqrt(n / (n - 1) * sum of
    speech^2 * (share - group share)^2) / speech; one call keeps its own stored interval
    (none in folders that predate it); a group without customer speech has none."""
    calls = con.sql("SELECT * FROM calls WHERE customer_negative_share IS NOT NULL").df()
    agents = q(con, "agents").set_index("agent_id")
    for agent, group in calls.groupby("agent_id"):
        n = len(group)
        share = (group.customer_negative_share * group.speech_s_customer).sum() \
            / group.speech_s_customer.sum()
        half = 1.96 * math.sqrt(n / (n - 1) * (group.speech_s_customer ** 2 * (
            group.customer_negative_share - share) ** 2).sum()) / group.speech_s_customer.sum()
        row = agents.loc[agent]
        assert row.negative_share_low == pytest.approx(max(0.0, share - half))
        assert row.negative_share_high == pytest.approx(min(1.0, share + half))
        assert row.few_calls  # 2 or 3 calls
    queues = q(con, "queues").set_index("queue")
    assert (queues.negative_share_low <= queues.customer_negative_share).all()
    assert (queues.customer_negative_share <= queues.negative_share_high).all()
    assert queues.few_calls.all()

    root = tmp_path / "results"
    write_call(root, "solo", CALLS["c2"])  # A2's call, with customer speech
    quiet = CALLS["c4"][:6] + ([("agent", 0, 10, "happy", 0.9)],)  # only the agent speaks
    write_call(root, "quiet", (quiet[0], "A9", "mono_q", *quiet[3:]))
    fresh = connect(root)
    rows = q(fresh, "agents").set_index("agent_id")
    assert rows.loc["A2"].negative_share_low is None or math.isnan(
        rows.loc["A2"].negative_share_low)  # one call, no stored interval: none
    assert math.isnan(rows.loc["A9"].customer_negative_share)
    assert math.isnan(rows.loc["A9"].negative_share_low)  # no share: no "0-100 %"
    fresh.close()

    # one call with its own interval stored: the agent's interval is that call's
    path = next(p for p in (root / "calls").rglob("*.parquet") if "solo" in p.name)
    table = pq.read_table(path)
    for name, value in (("customer_negative_share_low", 0.3),
                        ("customer_negative_share_high", 0.9)):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pa.array([value], pa.float64()))
    pq.write_table(table, path)
    solo = connect(root)
    row = q(solo, "agents").set_index("agent_id").loc["A2"]
    share = row.customer_negative_share
    assert (row.negative_share_low, row.negative_share_high) == pytest.approx(
        (max(0.0, share - 0.3), min(1.0, share + 0.3)))
    solo.close()


def test_a_folder_written_before_the_interval_columns_still_opens(tmp_path):
    """Columns are only ever added to the schema: calls files without the negative share's
    interval columns or the live alert's time read with them empty, in the views and in
    the canned queries."""
    root = tmp_path / "results"
    for call_id in ("c1", "c2"):
        write_call(root, call_id, CALLS[call_id])
    for path in (root / "calls").rglob("*.parquet"):
        old = pq.read_table(path).drop_columns(["customer_negative_share_low",
                                                "customer_negative_share_high",
                                                "live_alert_at_s"])
        pq.write_table(old, path)
    con = connect(root)
    calls = con.sql("SELECT customer_negative_share_low, customer_negative_share_high, "
                    "live_alert_at_s FROM calls").fetchall()
    assert calls == [(None, None, None), (None, None, None)]
    assert len(q(con, "agents")) == 2
    assert q(con, "calls_list").live_alert_at_s.isna().all()
    con.close()
