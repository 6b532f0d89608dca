"""live/protocol.py: the live server's messages parsed without a socket or a model. Every
kind of message, in and out of a call, and every bad field naming itself."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from callmood.live.protocol import (
    CALLMOOD,
    MEDIA,
    Audio,
    Ignored,
    InCall,
    Media,
    Start,
    Stop,
    parse_message,
)
from callmood.live.stream import StreamError

IN_CALLMOOD = InCall("c-1", CALLMOOD)
IN_MEDIA = InCall("CA1", MEDIA)
RAW_EXCEPTION = re.compile(r"\b[A-Z]\w*(Error|Exception)\b|Traceback")
PLUS_TWO = timezone(timedelta(hours=2))


def parse(message, call=None, zone=timezone.utc):
    """A dict is sent as JSON; text and bytes as they are."""
    return parse_message(json.dumps(message) if isinstance(message, dict) else message,
                         call, zone)


def error(message, call=None) -> str:
    with pytest.raises(StreamError) as raised:
        parse(message, call)
    text = str(raised.value)
    assert not RAW_EXCEPTION.search(text), text
    return text


def start(**fields) -> dict:
    return {"type": "start", "call_id": "x", "sample_rate": 8000, **fields}


def media_start(**start_fields) -> dict:
    return {"event": "start", "streamSid": "MZ1", "start": {"callSid": "CA1", **start_fields}}


def media(**media_fields) -> dict:
    return {"event": "media", "media": media_fields}


# --- binary messages


def test_audio_is_the_bytes_of_a_callmood_call():
    assert parse(b"\x01\x02\x03", IN_CALLMOOD) == Audio(b"\x01\x02\x03")
    assert parse(b"", IN_CALLMOOD) == Audio(b"")  # joining frames is the server's


def test_audio_outside_a_callmood_call_is_refused():
    assert error(b"\x00\x01") == "audio before a start message"
    assert "JSON media events" in error(b"\x00\x01", IN_MEDIA)


# --- text that is no message


@pytest.mark.parametrize(("text", "expected"), [
    ("{not json", "not JSON: '{not json'"),
    ("", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ("[1, 2]", "a message must be a JSON object"),
    ('"start"', "a message must be a JSON object"),
    ("null", "a message must be a JSON object"),
])
def test_text_that_is_not_a_json_object_is_refused(text, expected):
    assert expected in error(text)
    assert expected in error(text, IN_CALLMOOD)


def test_the_not_json_error_quotes_only_the_start_of_the_text():
    assert len(error("x" * 10_000)) < 120


def test_the_kind_is_the_type_or_else_the_event():
    assert error({"nothing": 1}) == "type is missing"
    assert error({"type": None}) == "type is missing"
    assert error({"type": ["start"]}).startswith("type must be a string")
    assert error({"event": 5}).startswith("event must be a string")
    # a message with both is callmood's: its type decides
    assert parse({"type": "stop", "event": "start"}, IN_CALLMOOD) == Stop()


def test_an_unknown_kind_is_refused_and_quoted_briefly():
    assert error({"type": "pause"}, IN_CALLMOOD) == "unknown message 'pause'"
    assert error({"event": "pause"}, IN_MEDIA) == "unknown message 'pause'"
    assert error({"type": "pause"}) == "'pause' before a start message"
    assert len(error({"type": "p" * 10_000}, IN_CALLMOOD)) < 120


# --- callmood's start


def test_a_callmood_start_with_every_field():
    got = parse(start(call_id="c-7", sample_rate=16000, encoding="mulaw", channels=2,
                      customer_channel=1, agent_id="a-3", queue="billing",
                      started_at="2026-11-20T09:30:00+02:00"))
    assert got == Start(CALLMOOD, "c-7", "a-3", "billing",
                        datetime(2026, 11, 20, 7, 30, tzinfo=timezone.utc), 1, 2, 16000,
                        "mulaw")


def test_a_callmood_start_takes_defaults_for_what_it_leaves_out():
    assert parse(start()) == Start(CALLMOOD, "x", None, None, None, None, 1, 8000, "pcm16")
    # null is absent
    assert parse(start(agent_id=None, queue=None, started_at=None, channels=None,
                       customer_channel=None, encoding=None)) == parse(start())
    assert parse(start(started_at="")).started_at is None


def test_a_start_time_without_an_offset_is_read_in_the_source_zone():
    got = parse(start(started_at="2026-11-20T09:30:00"), zone=PLUS_TWO).started_at
    assert got == datetime(2026, 11, 20, 7, 30, tzinfo=timezone.utc)
    got = parse(start(started_at="2026-11-20T09:30:00Z"), zone=PLUS_TWO).started_at
    assert got == datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize(("message", "expected"), [
    (start(call_id=None), "call_id is missing"),
    ({"type": "start", "sample_rate": 8000}, "call_id is missing"),
    (start(call_id=["x"]), "call_id must be a string, got ['x']"),
    (start(call_id=7), "call_id must be a string"),
    (start(call_id="  "), "call_id is empty"),
    (start(agent_id={"id": 1}), "agent_id must be a string"),
    (start(queue=[1]), "queue must be a string"),
    (start(started_at=20260301), "started_at must be a string"),
    (start(started_at="yesterday"), "started_at: 'yesterday' is not an ISO 8601 time"),
    (start(started_at="10000-01-01T00:00:00"), "started_at: "),
    (start(started_at="2300-01-01T00:00:00Z"), "started_at: '2300-01-01T00:00:00Z' lies "
                                               "outside 1970-2100"),
    (start(customer_channel=True), "customer_channel must be a whole number, got True"),
    (start(customer_channel="one"), "customer_channel must be a whole number"),
    (start(customer_channel=1.5), "customer_channel must be a whole number"),
    (start(channels=2.0), "channels must be a whole number, got 2.0"),
    (start(channels=False), "channels must be a whole number"),
    ({"type": "start", "call_id": "x"}, "sample_rate is missing"),
    (start(sample_rate="8000"), "sample_rate must be a whole number, got '8000'"),
    (start(sample_rate=8000.5), "sample_rate must be a whole number"),
    (start(encoding=["pcm16"]), "encoding must be a string"),
    (start(encoding="opus"), "unknown encoding 'opus'"),
])
def test_each_bad_field_of_a_callmood_start_is_named(message, expected):
    assert expected in error(message)


def test_start_fields_are_checked_in_order_so_the_first_bad_one_is_named():
    assert error(start(call_id=1, channels="two")).startswith("call_id")
    assert error(start(call_id=" ", channels="two")) == "call_id is empty"
    assert error(start(started_at="never", sample_rate="x")).startswith("started_at")
    assert error(start(channels="two", encoding="opus")).startswith("channels")


def test_ranges_that_need_the_scorer_are_left_to_it():
    """channels, sample rate and customer_channel ranges are StreamScorer's to check
    (after the server's duplicate-call check): the parser takes any whole number."""
    got = parse(start(channels=0, sample_rate=-1, customer_channel=9))
    assert (got.channels, got.sample_rate, got.customer_channel) == (0, -1, 9)


def test_a_start_during_a_call_names_the_call_before_any_field():
    assert error(start(), IN_CALLMOOD) == "call 'c-1' has not stopped"
    assert error(start(channels="bad"), IN_CALLMOOD) == "call 'c-1' has not stopped"
    assert error(media_start(), IN_MEDIA) == "call 'CA1' has not stopped"
    long_id = InCall("y" * 1000, CALLMOOD)
    assert len(error(start(), long_id)) < 120


# --- a media stream's start


def test_a_media_start_is_two_tracks_of_8khz_mulaw_the_inbound_one_the_customer():
    got = parse(media_start(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                         "channels": 1}))
    assert got == Start(MEDIA, "CA1", None, None, None, 1, 2, 8000, "mulaw")


def test_a_media_start_names_its_call_from_the_custom_parameters_first():
    custom = {"call_id": "c-9", "agent_id": "a-1", "queue": "sales"}
    got = parse(media_start(customParameters=custom))
    assert (got.call_id, got.agent_id, got.queue) == ("c-9", "a-1", "sales")
    assert parse(media_start(customParameters={"call_id": ""})).call_id == "CA1"
    assert parse(media_start(callSid=None)).call_id == "MZ1"
    assert parse({"event": "start", "streamSid": "MZ1"}).call_id == "MZ1"
    # the first usable id wins: later candidates are not read
    assert parse(media_start(customParameters={"call_id": "c-9"}, callSid=[1])).call_id \
        == "c-9"


@pytest.mark.parametrize(("message", "expected"), [
    ({"event": "start", "start": "x"}, "start must be a JSON object, got 'x'"),
    (media_start(customParameters=[1]), "start.customParameters must be a JSON object"),
    (media_start(customParameters={"call_id": 7}),
     "start.customParameters.call_id must be a string"),
    (media_start(customParameters={"agent_id": 7}),
     "start.customParameters.agent_id must be a string"),
    (media_start(customParameters={"queue": ["q"]}),
     "start.customParameters.queue must be a string"),
    (media_start(callSid=["CA1"]), "start.callSid must be a string"),
    ({"event": "start", "streamSid": 5, "start": {}}, "streamSid must be a string"),
    ({"event": "start", "start": {}}, "start has no call id"),
    (media_start(callSid="  "), "call_id is empty"),
    (media_start(mediaFormat="x"), "start.mediaFormat must be a JSON object"),
    (media_start(mediaFormat={"sampleRate": "8000"}),
     "start.mediaFormat.sampleRate must be a whole number"),
    (media_start(mediaFormat={"encoding": 1}),
     "start.mediaFormat.encoding must be a string"),
    (media_start(mediaFormat={"sampleRate": 16000}),
     "start.mediaFormat must be 8 kHz mu-law (audio/x-mulaw), got 'audio/x-mulaw' at "
     "16000 Hz"),
    (media_start(mediaFormat={"encoding": "audio/x-alaw"}), "start.mediaFormat must be"),
])
def test_each_bad_field_of_a_media_start_is_named(message, expected):
    assert expected in error(message)


# --- media events


def test_a_media_event_is_one_tracks_mulaw_bytes():
    payload = base64.b64encode(b"\x00\x7f\xff").decode()
    assert parse(media(track="inbound", payload=payload), IN_MEDIA) == \
        Media(1, b"\x00\x7f\xff")
    assert parse(media(track="outbound", payload=payload), IN_MEDIA) == \
        Media(0, b"\x00\x7f\xff")
    assert parse(media(payload=payload), IN_MEDIA).channel == 1  # inbound by default
    assert parse(media(), IN_MEDIA) == Media(1, b"")
    assert parse({"event": "media"}, IN_MEDIA) == Media(1, b"")


@pytest.mark.parametrize(("message", "expected"), [
    ({"event": "media", "media": "x"}, "media must be a JSON object"),
    (media(track=["inbound"]), "media.track must be a string"),
    (media(track="sideways"), "media.track must be one of ['inbound', 'outbound'], "
                              "got 'sideways'"),
    (media(payload=5), "media.payload must be a string"),
    (media(payload="é"), "media.payload is not base64"),
    (media(payload="AAA"), "media.payload is not base64"),  # bad padding
    (media(payload="A!=="), "media.payload is not base64"),
])
def test_each_bad_field_of_a_media_event_is_named(message, expected):
    assert expected in error(message, IN_MEDIA)


def test_a_media_event_outside_a_media_call_is_refused_before_its_fields():
    assert error(media(track="sideways")) == "'media' before a start message"
    assert "callmood-protocol call" in error(media(track="sideways"), IN_CALLMOOD)


# --- stop and the events that carry nothing


def test_stop_ends_a_call_of_either_protocol():
    assert parse({"type": "stop"}, IN_CALLMOOD) == Stop()
    assert parse({"event": "stop", "stop": {"callSid": "CA1"}}, IN_MEDIA) == Stop()
    assert error({"type": "stop"}) == "'stop' before a start message"


@pytest.mark.parametrize("kind", ["connected", "mark", "dtmf"])
def test_events_with_nothing_to_score_are_ignored_in_and_out_of_a_call(kind):
    for call in (None, IN_MEDIA, IN_CALLMOOD):
        assert parse({"event": kind, "whatever": [1]}, call) == Ignored(kind)
