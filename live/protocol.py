"""The live server's protocol: a client's message in, a typed message or a StreamError out.

Pure: no sockets, no model, no clock. `parse_message(message, call, zone)` reads one
WebSocket message (text or bytes) sent while the connection streams `call` (None between
calls) and returns what the server is to do with it:

* `Audio`: a binary message, interleaved frames of the callmood-protocol call in progress
  (its bytes as sent: a frame may be split across messages, the server joins them);
* `Start`: the start of a call, from callmood's ``{"type": "start", ...}`` or a media
  stream's ``{"event": "start", ...}`` (then 2 channels of 8 kHz mu-law, the inbound track
  the customer);
* `Media`: a media stream's ``media`` event: one track's mu-law bytes;
* `Stop`: the end of the call;
* `Ignored`: a media stream's ``connected``, ``mark`` and ``dtmf`` events.

Every field read is checked (type first, then value) and a StreamError names the field
(``start.mediaFormat.sampleRate must be a whole number, got '8000'``); its text is the
server's own words and goes back to the client as they are. What needs the model or the
server's state (channel and rate ranges, a call id streaming elsewhere) is not checked
here: StreamScorer and the server check it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

from callmood.live.stream import StreamError, frame_bytes
from callmood.results.meta import parse_time

CALLMOOD, MEDIA = "callmood", "media"  # the two protocols a call can stream in
TRACKS = {"outbound": 0, "inbound": 1}  # a media stream's tracks: agent, customer
IGNORED = ("connected", "mark", "dtmf")  # media-stream events that carry nothing to score
MEDIA_ENCODING, MEDIA_RATE = "audio/x-mulaw", 8000  # the only media format taken


@dataclass(frozen=True)
class InCall:
    """The call a connection is streaming, as far as the protocol's rules need it."""

    call_id: str
    protocol: str  # CALLMOOD | MEDIA


@dataclass(frozen=True)
class Audio:
    """A binary message of a callmood-protocol call: interleaved frames, maybe partial."""

    data: bytes


@dataclass(frozen=True)
class Start:
    """A call's start, in either protocol; `started_at` None: not given (the server
    dates the call when it starts)."""

    protocol: str  # CALLMOOD | MEDIA
    call_id: str
    agent_id: str | None
    queue: str | None
    started_at: datetime | None  # UTC
    customer_channel: int | None
    channels: int
    sample_rate: int
    encoding: str  # pcm16 | mulaw (stream.ENCODINGS)


@dataclass(frozen=True)
class Media:
    """A media event: one track's audio as 8 kHz mu-law bytes."""

    channel: int  # TRACKS[track]
    payload: bytes


@dataclass(frozen=True)
class Stop:
    """The end of the call in progress."""


@dataclass(frozen=True)
class Ignored:
    """An event that carries nothing to score (`kind`: connected, mark or dtmf)."""

    kind: str


Message = Audio | Start | Media | Stop | Ignored


def parse_message(message: str | bytes, call: InCall | None = None,
                  zone: tzinfo = timezone.utc) -> Message:
    """What `message` asks, sent while the connection streams `call` (None: between calls);
    a start's started_at written without an offset is a time in `zone`. Raises
    StreamError, naming the field, for a message that cannot be used now."""
    if isinstance(message, bytes):
        if call is None:
            raise StreamError("audio before a start message")
        if call.protocol != CALLMOOD:
            raise StreamError("a binary message in a media-stream call: its audio comes "
                              "as base64 in JSON media events")
        return Audio(message)
    data = _json_object(message)
    media_stream = "event" in data and "type" not in data  # callmood's have a type
    kind = field(data, "event" if media_stream else "type", str)
    if kind == "start":
        if call is not None:
            raise StreamError(f"call {call.call_id!r:.80} has not stopped")
        return parse_media_start(data) if media_stream else parse_start(data, zone)
    if kind in IGNORED:
        return Ignored(kind)
    if call is None:
        raise StreamError(f"{kind!r:.80} before a start message")
    if kind == "media":
        if call.protocol != MEDIA:
            raise StreamError("a media event in a callmood-protocol call; send its "
                              "audio as binary messages")
        return parse_media(data)
    if kind == "stop":
        return Stop()
    raise StreamError(f"unknown message {kind!r:.80}")


def _json_object(text: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        raise StreamError(f"not JSON: {text[:80]!r}") from None
    except RecursionError:
        raise StreamError("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise StreamError("a message must be a JSON object")
    return data


def parse_start(data: dict, zone: tzinfo = timezone.utc) -> Start:
    """callmood's start message: ``call_id`` and ``sample_rate`` required; ``channels``
    (1), ``encoding`` (pcm16), ``customer_channel``, ``agent_id``, ``queue``,
    ``started_at`` (ISO 8601; without an offset a time in `zone`) optional."""
    call_id = field(data, "call_id", str)
    agent_id = field(data, "agent_id", str, None)
    queue = field(data, "queue", str, None)
    started_at = field(data, "started_at", str, None)
    customer_channel = field(data, "customer_channel", int, None)
    call_id, when = _checked_call(call_id, started_at, zone)
    channels = field(data, "channels", int, 1)
    rate = field(data, "sample_rate", int)
    encoding = field(data, "encoding", str, "pcm16")
    frame_bytes(encoding, 1)  # an unknown encoding is refused now
    return Start(CALLMOOD, call_id, agent_id, queue, when, customer_channel, channels, rate,
                 encoding)


def parse_media_start(data: dict) -> Start:
    """A media stream's start event: 8 kHz mu-law only; the call id is
    ``start.customParameters.call_id``, else ``start.callSid``, else ``streamSid``;
    ``agent_id`` and ``queue`` from ``start.customParameters``."""
    encoding = field(data, "start.mediaFormat.encoding", str, MEDIA_ENCODING)
    rate = field(data, "start.mediaFormat.sampleRate", int, MEDIA_RATE)
    if (encoding, rate) != (MEDIA_ENCODING, MEDIA_RATE):
        raise StreamError(f"start.mediaFormat must be 8 kHz mu-law ({MEDIA_ENCODING}), got "
                          f"{encoding!r:.80} at {rate} Hz")
    call_id = field(data, "start.customParameters.call_id", str, None) \
        or field(data, "start.callSid", str, None) or field(data, "streamSid", str, None)
    if not call_id:
        raise StreamError("start has no call id (customParameters.call_id or callSid)")
    agent_id = field(data, "start.customParameters.agent_id", str, None)
    queue = field(data, "start.customParameters.queue", str, None)
    call_id, _ = _checked_call(call_id, None, timezone.utc)
    return Start(MEDIA, call_id, agent_id, queue, None, TRACKS["inbound"], len(TRACKS),
                 MEDIA_RATE, "mulaw")


def parse_media(data: dict) -> Media:
    """A media event: ``media.track`` (inbound, the default, or outbound) and
    ``media.payload``, base64 mu-law."""
    track = field(data, "media.track", str, "inbound")
    if track not in TRACKS:
        raise StreamError(f"media.track must be one of {sorted(TRACKS)}, got {track!r:.80}")
    text = field(data, "media.payload", str, "")  # not in the try: a StreamError is a
    try:  # ValueError too, and a payload that is no string would read "not base64"
        payload = base64.b64decode(text, validate=True)
    except ValueError:
        raise StreamError("media.payload is not base64") from None
    return Media(TRACKS[track], payload)


def _checked_call(call_id: str, started_at: str | None,
                  zone: tzinfo) -> tuple[str, datetime | None]:
    if not call_id.strip():
        raise StreamError("call_id is empty")
    if not started_at:
        return call_id, None
    try:
        return call_id, parse_time(started_at, zone)
    except ValueError as err:
        raise StreamError(f"started_at: {err}") from None


_REQUIRED = object()
_KINDS = {str: "a string", int: "a whole number"}


def field(message: dict, path: str, kind: type, default=_REQUIRED):
    """The value at `path` of a message ("start.mediaFormat.sampleRate": keys of nested
    objects), checked to be a `kind` (str or int, not a bool); `default` where it, or an
    object on its way, is absent or null. Raises StreamError naming the field."""
    value, keys = message, path.split(".")
    for depth, key in enumerate(keys):
        if not isinstance(value, dict):
            raise StreamError(f"{'.'.join(keys[:depth])} must be a JSON object, "
                              f"got {value!r:.80}")
        value = value.get(key)
        if value is None:
            if default is _REQUIRED:
                raise StreamError(f"{path} is missing")
            return default
    if isinstance(value, bool) or not isinstance(value, kind):
        raise StreamError(f"{path} must be {_KINDS[kind]}, got {value!r:.80}")
    return value
