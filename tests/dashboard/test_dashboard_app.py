"""The Streamlit dashboard driven by AppTest, page by page, on the sample and an empty
results folder."""

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest
from dashboard_data import colour_kind, write_audio, write_call, write_labels_json
from processes import wait_for_http
from streamlit.testing.v1 import AppTest

from callmood.dashboard import app_data
from callmood.dashboard.audio import input_roots, read_audio

pytest_plugins = ["dashboard_fixtures"]
APP = str(Path(app_data.__file__).with_name("app.py"))


@pytest.fixture
def app(monkeypatch):
    def start(results: Path, page: str | None = None) -> AppTest:
        monkeypatch.setenv(app_data.RESULTS_ENV, str(results))
        at = AppTest.from_file(APP, default_timeout=30).run()
        if page:
            at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        return at
    return start


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def markdown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def charts(at: AppTest) -> list[str]:
    """The Vega-Lite specs on the page (JSON text)."""
    return [c.proto.spec for c in at.get("vega_lite_chart")]


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_figures_and_filters(app, sample_results):
    at = app(sample_results)
    assert [s.label for s in at.sidebar.selectbox] == ["Queue", "Agent", "Role", "Emotion"]
    assert at.sidebar.date_input[0].value == (dt.date(2026, 3, 2), dt.date(2026, 3, 9))
    shown = metrics(at)
    assert shown["Calls"] == "5" and shown["Escalated calls"] == "2"
    assert shown["Customer negative share"] == "45%"
    assert shown["Errors"] == "1"
    assert "**Last run:** 2026-03-10 02:05 UTC" in markdown(at)  # a line: a metric cut it
    assert len(charts(at)) >= 5
    assert any("Share of the role's speech time" in c for c in charts(at))

    at.sidebar.selectbox(key="f_queue").select("billing")
    shown = metrics(rerun(at))
    assert (shown["Calls"], shown["Escalated calls"]) == ("3", "0")

    at.sidebar.selectbox(key="f_queue").select(None)
    at.sidebar.date_input(key="f_dates").set_value((dt.date(2026, 3, 3), dt.date(2026, 3, 9)))
    assert metrics(rerun(at))["Calls"] == "3"

    at.sidebar.selectbox(key="f_emotion").select("sad")
    assert metrics(rerun(at))["Calls"] == "1"

    at.radio(key="trend_grain").set_value("week")
    rerun(at)


def emotion_colours(spec: str) -> dict[str, str] | None:
    """The emotion -> colour map of a chart coloured by emotion, else None."""
    colour = json.loads(spec).get("encoding", {}).get("color", {})
    if colour.get("field") != "emotion":
        return None
    scale = colour.get("scale", {})
    assert len(scale.get("range", [])) == len(scale.get("domain", [])), scale
    return dict(zip(scale["domain"], scale["range"], strict=True))


def test_emotions_have_one_colour_map_by_meaning(app, sample_results, tmp_path):
    """Every chart coloured emotions with Tableau's first colours in label order: the
    sample's neutral was blue, happy orange, angry red and sad teal."""
    results = tmp_path / "results"
    shutil.copytree(sample_results, results)
    write_labels_json(results, {"neutral": 0, "happy": 1, "angry": -1, "sad": -1})
    at = app(results)
    maps = [m for m in map(emotion_colours, charts(at)) if m is not None]
    at.switch_page("page_explorer.py")
    maps += [m for m in map(emotion_colours, charts(rerun(at))) if m is not None]
    assert len(maps) >= 3  # share by role, the trends, the explorer's timeline
    assert all(m == maps[0] for m in maps), maps
    kinds = {emotion: colour_kind(colour) for emotion, colour in maps[0].items()}
    assert kinds == {"neutral": "grey", "happy": "green", "angry": "warm", "sad": "warm"}


def test_a_dashboard_left_open_shows_the_new_nights_days(app, sample_results, tmp_path):
    """A keyed date input kept yesterday's range when a nightly run added a day, so a
    dashboard left open overnight hid every new day until someone reloaded it."""
    results = tmp_path / "results"
    shutil.copytree(sample_results, results)
    at = app(results)
    write_call(results, "c6", (dt.datetime(2026, 3, 12, 9, tzinfo=dt.timezone.utc), "A1",
                               "billing", 10.0, False, None, [("customer", 0, 5, "sad", 0.9)]))
    rerun(at)
    assert at.sidebar.date_input[0].value == (dt.date(2026, 3, 2), dt.date(2026, 3, 12))
    assert metrics(at)["Calls"] == "6"
    # a range the user chose stays chosen
    at.sidebar.date_input(key="f_dates").set_value((dt.date(2026, 3, 2), dt.date(2026, 3, 3)))
    assert metrics(rerun(at))["Calls"] == "3"
    write_call(results, "c7", (dt.datetime(2026, 3, 13, 9, tzinfo=dt.timezone.utc), "A1",
                               "billing", 10.0, False, None, [("customer", 0, 5, "sad", 0.9)]))
    rerun(at)
    assert at.sidebar.date_input[0].value == (dt.date(2026, 3, 2), dt.date(2026, 3, 3))


def test_times_in_the_chosen_time_zone(app, sample_results, monkeypatch):
    monkeypatch.setenv("CALLMOOD_TIMEZONE", "Europe/Berlin")
    at = app(sample_results)
    assert "**Last run:** 2026-03-10 03:05 Europe/Berlin" in markdown(at)
    assert any("Hour of day (Europe/Berlin)" in c for c in charts(at))


def test_overview_with_no_calls_in_the_period(app, sample_results):
    at = app(sample_results)
    at.sidebar.date_input(key="f_dates").set_value((dt.date(2025, 1, 1), dt.date(2025, 1, 31)))
    rerun(at)
    assert metrics(at)["Calls"] == "0"
    assert [i.value for i in at.info] == [app_data.NO_CALLS]


def test_agents_page_and_click_through(app, sample_results):
    at = app(sample_results, "page_agents.py")
    agents, queues = at.dataframe[0].value, at.dataframe[1].value
    assert list(agents.agent_id) == ["A1", "A2"] and list(agents.calls) == [3, 2]
    assert list(queues.queue) == ["billing", "support"]

    at.sidebar.slider(key="f_min_confidence").set_value(0.85)
    at.sidebar.selectbox(key="f_emotion").select("angry")
    rerun(at)
    assert list(at.dataframe[0].value.agent_id) == ["A1", "A2"]  # c1 and c3, c2
    assert list(at.dataframe[0].value.calls) == [2, 1]
    at.sidebar.slider(key="f_min_confidence").set_value(0.0)
    at.sidebar.selectbox(key="f_emotion").select(None)

    # Selecting A2's row opens the call explorer on A2's calls.
    at.session_state["agents_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    rerun(at)
    assert at.title[0].value == "Call explorer"
    assert at.sidebar.selectbox(key="f_agent").value == "A2"
    assert [o.split(" · ")[0] for o in at.selectbox(key="explorer_call").options] == ["c4", "c2"]


def test_agents_tables_previous_period_and_sparklines(app, sample_results):
    """No previous period read "None"; a sparkline with a missing day read as its list."""
    at = app(sample_results, "page_agents.py")
    agents, queues = at.dataframe
    assert agents.proto.placeholder == "–" and queues.proto.placeholder == "–"
    columns = json.loads(agents.proto.columns)
    for name in ("previous_calls", "negative_share_change", "escalation_rate_change"):
        assert "– : no previous period" in columns[name]["help"], name
    for table in (agents, queues):
        config = json.loads(table.proto.columns)["daily_negative_share"]
        assert config["type_config"]["type"] == "image"
        assert all(url.startswith("data:image/svg+xml;base64,")
                   for url in table.value.daily_negative_share)


def test_call_explorer(app, sample_results):
    at = app(sample_results, "page_explorer.py")
    call = at.selectbox(key="explorer_call")
    assert call.value == "c5"  # newest first
    assert at.query_params["call"] == "c5"
    call.select("c1")
    rerun(at)
    shown = metrics(at)
    assert shown["Duration"] == "60 s"
    assert "**Agent:** ` A1 ` · **Queue:** ` billing ` · **Peak negative:** ` angry ` 0.90" \
        in markdown(at)
    assert shown["Customer negative"] == "33%"
    assert (shown["Escalated"], shown["Live alert"]) == ("no", "–")
    assert len(charts(at)) == 1 and "Time in call (s)" in charts(at)[0]
    assert len(at.get("audio")) == 1 and not at.warning

    at.selectbox(key="explorer_segment").select_index(3)  # 20-30 s, customer, angry
    rerun(at)
    assert len(at.get("audio")) == 1

    at.selectbox(key="explorer_call").select("c2")
    rerun(at)
    assert "not available" in at.warning[0].value  # c2 has no audio file
    # its name is shown as text, not rendered as Markdown
    assert any(c.value.endswith(".wav") for c in at.code), [c.value for c in at.code]
    assert (metrics(at)["Escalated"], metrics(at)["Live alert"]) == ("yes", "at 30 s")
    assert at.query_params["call"] == "c2"


LINK = "[Session expired - click to sign in again](https://evil.example/login)"
IMAGE = "![x](https://evil.example/pixel.png?`q`)"


def test_values_from_the_url_and_the_data_render_as_text(app, sample_results, tmp_path,
                                                         monkeypatch):
    """`?call=` went into st.warning as Markdown: a live link, or an image request, in
    the page; agents and queues from sidecar CSVs went into metric values the same way."""
    results = tmp_path / "results"
    shutil.copytree(sample_results, results)
    write_call(results, "c6", (dt.datetime(2026, 3, 9, 15, tzinfo=dt.timezone.utc), LINK,
                               IMAGE, 10.0, False, None, [("customer", 0, 5, "sad", 0.9)]))
    monkeypatch.setenv(app_data.RESULTS_ENV, str(results))
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["call"] = LINK
    at.run()
    rerun(at.switch_page("page_explorer.py"))
    # a code span: Streamlit shows its text as it is, no link, image or autolink
    assert at.warning[0].value == f"Call ` {LINK} ` does not match the filters; showing another."
    assert at.selectbox(key="explorer_call").value == "c6"  # the newest call
    assert (f"**Agent:** ` {LINK} ` · **Queue:** `` {IMAGE} `` · **Peak negative:** ` sad ` "
            "0.90") in markdown(at)


def test_escalated_call_opens_in_the_explorer(app, sample_results):
    at = app(sample_results)
    assert list(at.dataframe(key="escalated_table").value.call_id) == ["c3", "c2"]
    at.session_state["escalated_table"] = {"selection": {"rows": [1], "columns": [],
                                                         "cells": []}}
    rerun(at)
    assert at.title[0].value == "Call explorer"
    assert at.selectbox(key="explorer_call").value == "c2"


@pytest.mark.parametrize("page", [None, "page_agents.py", "page_explorer.py"])
def test_every_page_on_an_empty_folder(app, empty_results, page):
    at = app(empty_results, page)
    assert app_data.NO_CALLS in [i.value for i in at.info]
    assert [s.label for s in at.sidebar.selectbox] == ["Queue", "Agent", "Role", "Emotion"]
    if page is None:
        assert metrics(at)["Calls"] == "0" and "**Last run:** never" in markdown(at)


def test_missing_folder_is_reported(app, tmp_path, monkeypatch):
    monkeypatch.setenv(app_data.RESULTS_ENV, str(tmp_path / "nope"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception and "does not exist" in at.error[0].value


def test_audio_cut(sample_results):
    roots = input_roots(sample_results)
    source = str(sample_results.parent / "audio" / "c1.wav")
    whole, mime = read_audio(source, roots)
    cut, cut_mime = read_audio(source, roots, 20.0, 30.0)
    assert cut_mime == "audio/wav" and mime.startswith("audio/")
    # 10 s of 2-channel 16-bit audio at 8 kHz, plus the WAV header.
    assert len(cut) == pytest.approx(10 * 8000 * 2 * 2, abs=100)
    assert len(whole) > len(cut)
    assert read_audio(str(sample_results / "missing.wav"), roots) is None


def test_only_audio_files_under_the_scored_input_folders_are_served(tmp_path):
    inputs = tmp_path / "calls::night"  # '::' is no URL chain here
    write_audio(inputs / "a.wav", 1.0)
    roots = [inputs.resolve()]
    assert read_audio(str(inputs / "a.wav"), roots)[1] == "audio/x-wav"
    assert read_audio(str(inputs / "a.wav"), []) is None  # no recorded input folders
    # a scored recording replaced by a link to a secret
    (inputs / "a.wav").unlink()
    (inputs / "a.wav").symlink_to("/etc/passwd")
    assert read_audio(str(inputs / "a.wav"), roots) is None
    # a link to audio outside the input folders, text inside them, a FIFO inside them
    write_audio(tmp_path / "elsewhere.wav", 1.0)
    (inputs / "b.wav").symlink_to(tmp_path / "elsewhere.wav")
    (inputs / "c.wav").write_text("not audio")
    os.mkfifo(inputs / "d.wav")
    for name in ("b.wav", "c.wav", "d.wav"):
        assert read_audio(str(inputs / name), roots) is None, name
        assert read_audio(str(inputs / name), roots, 0.0, 0.5) is None, name


def test_dashboard_command_line(sample_results, tmp_path):
    from callmood.dashboard.launch import streamlit_command
    from callmood.dashboard.results_db import ResultsError

    cmd = streamlit_command(sample_results, ["--server.port", "8999"])
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app.py")
    assert cmd.index("--server.headless") < cmd.index("--server.port")  # user options win
    assert cmd[-3:] == ["--", "--results", str(sample_results)]
    with pytest.raises(ResultsError):
        streamlit_command(tmp_path / "nope")
    # this machine only unless asked: the page has no login
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    exposed = streamlit_command(sample_results, ["--server.address", "0.0.0.0"])
    assert exposed.index("0.0.0.0") > exposed.index("127.0.0.1")  # the later option wins


def test_sigterm_to_the_dashboard_command_stops_the_server(sample_results):
    """`callmood dashboard` becomes the server, so a service manager's SIGTERM stops it;
    it used to leave its Streamlit child serving, orphaned."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", "from callmood.cli import main; main()",
                                "dashboard", str(sample_results), "--server.port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/_stcore/health"
    try:
        wait_for_http(url, process)
    except AssertionError:
        process.kill()
        raise
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) is not None
    time.sleep(0.5)
    with pytest.raises(OSError):  # nothing serves on the port any more
        urllib.request.urlopen(url, timeout=1)


def test_dashboard_refuses_an_unknown_time_zone_before_starting(sample_results):
    from click.testing import CliRunner

    from callmood.cli import main

    result = CliRunner().invoke(main, ["dashboard", str(sample_results), "--timezone",
                                       "Europe/Atlantis"])
    assert result.exit_code == 1 and "unknown time zone 'Europe/Atlantis'" in result.output
