"""`callmood live`: a WebSocket server that scores calls while they happen.

Two ways in, told apart by the first message of a call:

* callmood's own protocol: a JSON ``{"type": "start", "call_id", "sample_rate",
  "encoding": "pcm16"|"mulaw", "channels", "customer_channel", "agent_id", "queue"}``,
  then binary frames of interleaved audio, then ``{"type": "stop"}``;
* the media-stream messages telephony platforms send (JSON ``connected`` / ``start`` /
  ``media`` / ``stop`` events with base64 8 kHz mu-law per track): the inbound track is
  the customer (channel 1), the outbound one the agent (channel 0); the call id is the
  start event's ``customParameters.call_id``, else its ``callSid``.

Events go back as JSON text messages: ``segment`` per scored speech segment, ``alert``
when the escalation rule fires, ``summary`` after ``stop``, ``error`` for a message that
cannot be used (the connection stays open for the next one): every field the server
reads is checked, and the error names the field; a call id already streaming to this
server is refused. Clients only get the server's own words (StreamError): anything else
that fails on a message is logged and answered with INTERNAL_ERROR. When a call stops or its
connection drops, its segments and calls row are written to ``--results`` with the
nightly job's writer (results.writer.write_live_call); while a nightly run holds the results
folder, finished calls wait in its spool and a retry every RETRY_S writes them once it is
free. Several calls can stream at once; the model runs in a pool of threads, one torch
thread each.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

from callmood.live.stream import StreamError, StreamScorer, decode, frame_bytes
from callmood.model.folder import LoadedModel, ModelOutputError
from callmood.results.call_summary import EscalationConfig
from callmood.results.meta import CallMeta, parse_time
from callmood.results.store import ResultsError, ResultsStore
from callmood.results.writer import ModelStamp, check_labels, flush_live_spool, write_live_call
from callmood.signal.segment import VadConfig

log = logging.getLogger("callmood.live")
TRACKS = {"outbound": 0, "inbound": 1}  # agent, customer
MAX_MESSAGE_BYTES = 1 << 20
RETRY_S = 10.0  # how often spooled calls are written while the results folder is busy
# the answer to a message that failed other than by a StreamError: its text is for the log
INTERNAL_ERROR = "the server failed on this message (its log says why); it was not used"


@dataclass
class _Call:
    scorer: StreamScorer
    protocol: str  # callmood | media
    encoding: str = "mulaw"
    partial: bytes = b""  # a frame split across binary messages: its first bytes


class LiveServer:
    """Scores the calls of every connection; writes each finished call to `results`."""

    def __init__(self, model: LoadedModel, results: str | None = None,
                 vad: VadConfig | None = None, escalation: EscalationConfig | None = None,
                 threads: int | None = None, source_zone: tzinfo = timezone.utc):
        # source_zone: the zone of a start message's started_at written without an offset
        self.model, self.results, self.source_zone = model, results, source_zone
        self.vad, self.escalation = vad or VadConfig(), escalation or EscalationConfig()
        self.pool = ThreadPoolExecutor(threads or len(os.sched_getaffinity(0)),
                                       initializer=_one_torch_thread)
        self.streaming: set[str] = set()  # call ids in progress, on every connection
        if results:  # refused now, not at the end of every call (ResultsError)
            check_labels(ResultsStore(results), ModelStamp.of(model))

    async def serve(self, host: str, port: int) -> None:
        """Serve until SIGTERM or SIGINT; then close every connection, which finishes and
        writes each call in progress, and return."""
        from websockets.asyncio.server import serve

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        retry = asyncio.create_task(self._retry_spool()) if self.results else None
        async with serve(self.handle, host, port, max_size=MAX_MESSAGE_BYTES) as server:
            log.info("listening on ws://%s:%d", host, port)
            await stop.wait()
            log.info("stopping: finishing the calls in progress")
            server.close()
            await server.wait_closed()
        self.pool.shutdown(wait=True)
        if retry is not None:
            retry.cancel()
            if not await loop.run_in_executor(None, flush_live_spool, self.results,
                                              self.escalation, RETRY_S):
                log.warning("the results folder is busy: finished calls wait in its "
                            "_live_spool/ for the nightly run or the next live server")

    async def _retry_spool(self) -> None:
        """Write the calls that ended while another process held the results folder."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                await loop.run_in_executor(None, flush_live_spool, self.results,
                                           self.escalation)
            except Exception:  # the retry must outlive any one failure
                log.exception("spooled calls not written")

    async def handle(self, websocket) -> None:
        """One connection: calls one after another, events back as they happen."""
        from websockets.exceptions import ConnectionClosed

        call: _Call | None = None
        try:
            async for message in websocket:
                try:
                    call, events = await self._on_message(call, message)
                except StreamError as err:
                    events = [{"type": "error", "message": str(err)}]
                except ModelOutputError as err:  # the server's model is broken, not the call
                    log.error("%s", err.detail)
                    events = [{"type": "error", "message": err.detail}]
                except Exception:  # a bug on one message must not end the others
                    log.exception("message failed")
                    events = [{"type": "error", "message": INTERNAL_ERROR}]
                for event in events:
                    await websocket.send(json.dumps(event))
        except ConnectionClosed:
            pass
        finally:
            if call is not None:  # dropped mid-call: keep what was scored
                await self._finish(call)

    async def _on_message(self, call: _Call | None, message: str | bytes,
                          ) -> tuple[_Call | None, list[dict]]:
        run = asyncio.get_running_loop().run_in_executor
        if isinstance(message, bytes):
            if call is None:
                raise StreamError("audio before a start message")
            if call.protocol != "callmood":
                raise StreamError("a binary message in a media-stream call: its audio comes "
                                  "as base64 in JSON media events")
            data = call.partial + message
            whole = len(data) - len(data) % frame_bytes(call.encoding,
                                                          len(call.scorer.channels))
            call.partial = data[whole:]
            audio = decode(data[:whole], call.encoding, len(call.scorer.channels))
            return call, await run(self.pool, call.scorer.feed, audio)
        try:
            data = json.loads(message)
        except ValueError:
            raise StreamError(f"not JSON: {message[:80]!r}") from None
        except RecursionError:
            raise StreamError("JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise StreamError("a message must be a JSON object")
        media_stream = "event" in data and "type" not in data  # callmood's have a type
        kind = _field(data, "event" if media_stream else "type", str)
        if kind == "start":
            if call is not None:
                raise StreamError(f"call {call.scorer.call.call_id!r:.80} has not stopped")
            return (self._start_media(data) if media_stream else self._start(data)), []
        if kind in ("connected", "mark", "dtmf"):
            return call, []
        if call is None:
            raise StreamError(f"{kind!r:.80} before a start message")
        if kind == "media":
            if call.protocol != "media":
                raise StreamError("a media event in a callmood-protocol call; send its "
                                  "audio as binary messages")
            track = _field(data, "media.track", str, "inbound")
            if track not in TRACKS:
                raise StreamError(f"media.track must be one of {sorted(TRACKS)}, "
                                  f"got {track!r:.80}")
            try:  # ValueError: text that is not ASCII
                payload = base64.b64decode(_field(data, "media.payload", str, ""),
                                           validate=True)
            except ValueError:
                raise StreamError("media.payload is not base64") from None
            audio = decode(payload, "mulaw", 1)[0]
            return call, await run(self.pool, call.scorer.feed_channel, TRACKS[track], audio)
        if kind == "stop":
            return None, await self._finish(call)
        raise StreamError(f"unknown message {kind!r:.80}")

    def _start(self, data: dict) -> _Call:
        meta = _meta(_field(data, "call_id", str), _field(data, "agent_id", str, None),
                     _field(data, "queue", str, None), _field(data, "started_at", str, None),
                     _field(data, "customer_channel", int, None), self.source_zone)
        channels = _field(data, "channels", int, 1)
        rate = _field(data, "sample_rate", int)
        encoding = _field(data, "encoding", str, "pcm16")
        frame_bytes(encoding, 1)  # an unknown encoding is refused now
        return _Call(self._scorer(meta, channels, rate), "callmood", encoding)

    def _start_media(self, data: dict) -> _Call:
        encoding = _field(data, "start.mediaFormat.encoding", str, "audio/x-mulaw")
        rate = _field(data, "start.mediaFormat.sampleRate", int, 8000)
        if (encoding, rate) != ("audio/x-mulaw", 8000):
            raise StreamError(f"start.mediaFormat must be 8 kHz mu-law (audio/x-mulaw), got "
                              f"{encoding!r:.80} at {rate} Hz")
        call_id = _field(data, "start.customParameters.call_id", str, None) \
            or _field(data, "start.callSid", str, None) or _field(data, "streamSid", str, None)
        if not call_id:
            raise StreamError("start has no call id (customParameters.call_id or callSid)")
        meta = _meta(call_id, _field(data, "start.customParameters.agent_id", str, None),
                     _field(data, "start.customParameters.queue", str, None), None,
                     TRACKS["inbound"], self.source_zone)
        return _Call(self._scorer(meta, 2, 8000), "media")

    def _scorer(self, meta: CallMeta, channels: int, rate: int) -> StreamScorer:
        """The call's scorer, its id then streaming until `_finish`: a second stream of a
        call in progress would write one call twice, or lose one of them."""
        if meta.call_id in self.streaming:
            raise StreamError(f"call {meta.call_id!r:.80} is already streaming to this "
                              "server; a call id can stream once at a time")
        scorer = StreamScorer(self.model, meta, channels, rate, self.vad,
                              escalation=self.escalation)
        self.streaming.add(meta.call_id)
        return scorer

    async def _finish(self, call: _Call) -> list[dict]:
        """End the call (score the rest, write it); then its call id may stream again."""
        call_id = call.scorer.call.call_id
        try:
            return await self._finish_and_write(call)
        finally:
            self.streaming.discard(call_id)

    async def _finish_and_write(self, call: _Call) -> list[dict]:
        loop = asyncio.get_running_loop()
        events = await loop.run_in_executor(self.pool, call.scorer.finish)
        if self.results and call.scorer.windows:
            call_id = call.scorer.call.call_id
            try:
                written = await loop.run_in_executor(
                    self.pool, write_live_call, self.results, self.model, call.scorer.call,
                    call.scorer.outcome(), self.escalation)
            except (ResultsError, OSError) as err:  # its text names the server's files
                log.error("call %s not written: %s", call_id, err)
                return events + [{"type": "error", "message": "the call was not written to "
                                  "the results (the server's log says why)"}]
            if not written:
                log.info("call %s spooled: the results folder is busy (a nightly run?); "
                         "it is written once the folder is free", call_id)
        return events


_REQUIRED = object()
_KINDS = {str: "a string", int: "a whole number"}


def _field(message: dict, path: str, kind: type, default=_REQUIRED):
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


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _meta(call_id: str, agent_id: str | None, queue: str | None, started_at: str | None,
          customer_channel: int | None, zone: tzinfo) -> CallMeta:
    if not call_id.strip():
        raise StreamError("call_id is empty")
    when = datetime.now(timezone.utc)
    if started_at:
        try:
            when = parse_time(started_at, zone)
        except ValueError as err:
            raise StreamError(f"started_at: {err}") from None
    return CallMeta(call_id, agent_id, queue, when, customer_channel)
