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
reads is checked, and the error names the field (live/protocol.py parses each message,
pure functions); a call id already streaming to this server is refused, and so is a call
beyond `max_calls` at once (an ``error`` event with ``"code": "busy"``; a media stream is
then closed with 1013, try again later), counted in GET /health, which answers 200 while
the server takes calls and 503 when it is full. Clients only get
the server's own words (StreamError): anything else that fails on a message is logged
and answered with INTERNAL_ERROR.

Each connection has a reader (`handle`) and a scorer (`_score_behind`): the reader takes
every message as it arrives, so keepalive pings and control messages are answered while
audio waits, and queues each call's audio; the scorer works through it behind, in order,
from LEAST_S (unless the call has ended: fewer, larger tasks for the model's threads) to
BATCH_S seconds of it at a time, and sends the events. At most `buffer_s`
seconds of a call's audio wait: beyond them, a sender ahead of real time (a recording sent
whole) is read no further until some is scored, and a call coming in real time, which
cannot wait, is cut (`_Call.cut`): what waits is dropped, the client gets an ``error``
with ``"code": "behind"``, and the part scored is written marked incomplete, so that the
nightly run scores its recording and replaces it. SIGTERM cuts every call in progress
the same way, so the server stops within a bound: each connection's batch in progress,
then each call's end and write. When a call ends, its segments and calls row are written
to ``--results`` with the nightly job's writer (results.writer.write_live_call); while a
nightly run holds the results folder, finished calls wait in its spool and a retry every
RETRY_S writes them once it is free. The model runs in a pool of threads, one torch
thread each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from http import HTTPStatus

from callmood.live.protocol import MEDIA, Audio, InCall, Media, Start, Stop, parse_message
from callmood.live.stream import StreamError, StreamScorer, decode_frames, frame_bytes
from callmood.model.folder import LoadedModel, ModelOutputError
from callmood.results.call_summary import CallAnalytics
from callmood.results.meta import CallMeta
from callmood.results.store import ResultsError, ResultsStore
from callmood.results.writer import ModelStamp, check_labels, flush_live_spool, write_live_call
from callmood.signal.segment import VadConfig
from callmood.workers import usable_cores

log = logging.getLogger("callmood.live")
MAX_MESSAGE_BYTES = 1 << 20
# calls per scoring thread (one per usable core by default) that still get their events
# within a second: 32 real-time media streams on 2 cores held p95 0.68 s, 48 did not
# (1.10 s; docs/live.md, benchmarks/results/live.json)
CALLS_PER_CORE = 16
BUFFER_S = 30.0  # default --buffer-s: seconds of a call's audio that may wait to be scored
BATCH_S = 2.0  # most seconds of a call's audio scored at once: what SIGTERM waits for
# least seconds of a call's audio scored at once, unless its end came: fewer, larger tasks
# for the model's threads (one per 20-ms media event, with deflate on, kept the event loop
# busy all the time at 48 calls; under half the time without either)
LEAST_S = 0.1
AHEAD_S = 2.0  # a call this far ahead of real time is a recording sent whole, not live
TRY_AGAIN_LATER = 1013  # the WebSocket close code a refused media stream gets
GOING_AWAY = 1001  # ... and every connection when the server stops
RETRY_S = 10.0  # how often spooled calls are written while the results folder is busy
# at SIGTERM: how long connections have to end their calls, send the summaries and close
# (then the rest are cut off: a client that reads nothing would hold a send forever), and
# how long the last write of the spool waits for the results folder
STOP_S, STOP_WAIT_S = 10.0, 2.0
# the answer to a message that failed other than by a StreamError: its text is for the log
INTERNAL_ERROR = "the server failed on this message (its log says why); it was not used"
# why not all of a call's audio was scored (besides falling behind it): then its results
# are marked incomplete
STOPPING = "the server stopped during the call"
DROPPED = "the connection closed before the call's stop"


class Busy(StreamError):
    """A call refused at its start: the server is full, or stopping."""

    def __init__(self, protocol: str, reason: str):
        super().__init__(f"{reason}; the call was not accepted: send it to another server "
                         "or try again later")
        self.protocol = protocol


@dataclass(eq=False)
class _Call:
    """One call of a connection, from its start until it is written. Its audio waits in
    `waiting`, as received ((channel, bytes) of a media track, or (None, interleaved
    frames)), until the connection's scorer takes it."""

    scorer: StreamScorer
    protocol: str  # protocol.CALLMOOD | protocol.MEDIA
    encoding: str
    bytes_per_s: int  # of its audio as received, every channel
    started: float = field(default_factory=time.monotonic)
    partial: bytes = b""  # a frame split across binary messages: its first bytes
    waiting: deque = field(default_factory=deque)
    waiting_bytes: int = 0
    received_bytes: int = 0
    ended: bool = False  # no more of its audio comes to be scored: stopped, dropped, cut
    cut_short: bool = False  # none of its audio is scored any more, even if taken
    incomplete: str | None = None  # why not all of its audio was scored

    @property
    def streaming(self) -> InCall:
        return InCall(self.scorer.call.call_id, self.protocol)

    @property
    def frame(self) -> int:
        return frame_bytes(self.encoding, len(self.scorer.channels))

    def wait(self, channel: int | None, data: bytes) -> None:
        self.waiting.append((channel, data))
        self.waiting_bytes += len(data)
        self.received_bytes += len(data)

    def ahead_of_real_time(self) -> bool:
        """More of its audio came than time has passed since its start (and AHEAD_S)."""
        return self.received_bytes / self.bytes_per_s > \
            time.monotonic() - self.started + AHEAD_S

    def take(self) -> list[tuple[int | None, bytes]]:
        """The oldest waiting audio, at most BATCH_S seconds of it (a binary message is
        split at a frame if need be)."""
        most = BATCH_S * self.bytes_per_s
        batch, size = [], 0
        while self.waiting and size < most:
            channel, data = self.waiting.popleft()
            room = int(most - size) // self.frame * self.frame
            if channel is None and len(data) > room > 0:
                self.waiting.appendleft((None, data[room:]))
                data = data[:room]
            batch.append((channel, data))
            size += len(data)
        self.waiting_bytes -= size
        return batch

    def cut(self, why: str) -> None:
        """Score none of its audio from now on: what waits is dropped, a batch taken and
        not yet started too, and what the VAD holds open is not scored at its end."""
        self.incomplete = self.incomplete or why
        self.ended = self.cut_short = True
        self.waiting.clear()
        self.waiting_bytes = 0

    def score(self, batch: list[tuple[int | None, bytes]]) -> list[dict]:
        """Feed a batch of its audio to its scorer (in a pool thread); the events."""
        if self.cut_short:
            return []
        if self.protocol != MEDIA:
            return self.scorer.feed(decode_frames(b"".join(data for _, data in batch),
                                                  self.encoding, len(self.scorer.channels)))
        tracks: dict[int, list[bytes]] = {}
        for channel, data in batch:
            tracks.setdefault(channel, []).append(data)
        return [event for channel, parts in tracks.items()
                for event in self.scorer.feed_channel(
                    channel, decode_frames(b"".join(parts), "mulaw", 1)[0])]


class _Connection:
    """One WebSocket: its calls in order, from start until written. `wake` is set when
    its scorer may have work, `room` when it took waiting audio."""

    def __init__(self, websocket):
        self.websocket = websocket
        self.calls: deque[_Call] = deque()
        self.streaming: _Call | None = None  # the call whose audio comes now
        self.ended = False  # no more messages come
        self.wake = asyncio.Event()
        self.room = asyncio.Event()


class LiveServer:
    """Scores the calls of every connection; writes each finished call to `results`."""

    def __init__(self, model: LoadedModel, results: str | None = None,
                 vad: VadConfig | None = None, analytics: CallAnalytics | None = None,
                 threads: int | None = None, source_zone: tzinfo = timezone.utc,
                 max_calls: int | None = None, buffer_s: float | None = None):
        # source_zone: the zone of a start message's started_at written without an offset
        self.model, self.results, self.source_zone = model, results, source_zone
        threads = threads or usable_cores()
        self.max_calls = max_calls or CALLS_PER_CORE * threads
        self.buffer_s = buffer_s or BUFFER_S
        self.refused = 0  # calls refused at their start, since the server started
        self.vad = vad or VadConfig()
        self.analytics = analytics or CallAnalytics.of_model(model)
        self.pool = ThreadPoolExecutor(threads, initializer=_one_torch_thread)
        self.streaming: set[str] = set()  # call ids started and not yet written
        self.connections: set[_Connection] = set()
        self.stopping = False
        if results:  # refused now, not at the end of every call (ResultsError)
            check_labels(ResultsStore(results), ModelStamp.of(model))

    async def serve(self, host: str, port: int) -> None:
        """Serve until SIGTERM or SIGINT; then cut the calls in progress, write them, close
        every connection once its calls are written, and return."""
        from websockets.asyncio.server import serve

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        retry = asyncio.create_task(self._retry_spool()) if self.results else None
        # no per-message compression: audio barely compresses, and inflating every 20-ms
        # media event was the costliest step of reading it (profiled at 16 calls)
        async with serve(self.handle, host, port, max_size=MAX_MESSAGE_BYTES,
                         compression=None, process_request=self._health) as server:
            log.info("listening on ws://%s:%d", host, port)
            await stop.wait()
            log.info("stopping: ending and writing the calls in progress")
            self._stop()
            server.close(close_connections=False)  # each closes once its calls are written
            try:
                await asyncio.wait_for(server.wait_closed(), STOP_S)
            except TimeoutError:
                for conn in self.connections:  # their calls are still written
                    conn.websocket.transport.abort()
                await server.wait_closed()
        self.pool.shutdown(wait=True)
        if retry is not None:
            retry.cancel()
            if not await loop.run_in_executor(None, flush_live_spool, self.results,
                                              self.analytics, STOP_WAIT_S):
                log.warning("the results folder is busy: finished calls wait in its "
                            "_live_spool/ for the nightly run or the next live server")

    def _stop(self) -> None:
        """Take no more calls, and cut each call whose audio is not all in and scored."""
        self.stopping = True
        for conn in self.connections:
            for call in conn.calls:
                if not call.ended or call.waiting:
                    call.cut(STOPPING)
            conn.wake.set()
            conn.room.set()

    def status(self) -> dict:
        """What a load balancer reads at /health: whether a new call would be taken."""
        return {"accepting": not self.stopping and len(self.streaming) < self.max_calls,
                "calls": len(self.streaming), "max_calls": self.max_calls,
                "refused": self.refused}

    def _health(self, connection, request):
        """GET /health: 200 while the server takes calls, 503 when it is full (its status
        as JSON either way); other paths go on to the WebSocket handshake."""
        if request.path.split("?")[0] != "/health":
            return None
        status = self.status()
        response = connection.respond(HTTPStatus.OK if status["accepting"]
                                      else HTTPStatus.SERVICE_UNAVAILABLE,
                                      json.dumps(status) + "\n")
        del response.headers["Content-Type"]  # respond() set text/plain
        response.headers["Content-Type"] = "application/json"
        return response

    async def _retry_spool(self) -> None:
        """Write the calls that ended while another process held the results folder."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                await loop.run_in_executor(None, flush_live_spool, self.results,
                                           self.analytics)
            except Exception:  # the retry must outlive any one failure
                log.exception("spooled calls not written")

    async def handle(self, websocket) -> None:
        """One connection: read every message as it comes; its scorer task scores the
        audio behind and sends the events."""
        from websockets.exceptions import ConnectionClosed

        conn = _Connection(websocket)
        self.connections.add(conn)
        scoring = asyncio.create_task(self._score_behind(conn))
        try:
            async for message in websocket:
                try:
                    events = self._on_message(conn, message)
                except Busy as err:
                    await websocket.send(json.dumps({"type": "error", "code": "busy",
                                                     "message": str(err)}))
                    if err.protocol == MEDIA:  # a media stream cannot wait: hang up
                        await websocket.close(TRY_AGAIN_LATER, "server busy")
                        return
                    continue
                except Exception as err:
                    events = [self._error(err)]
                for event in events:
                    await websocket.send(json.dumps(event))
                await self._hold(conn)
        except ConnectionClosed:
            pass
        finally:
            if (call := conn.streaming) is not None and not call.ended:  # no stop came
                call.incomplete, call.ended = DROPPED, True  # what came is still scored
            conn.ended = True
            conn.wake.set()
            await scoring
            self.connections.discard(conn)

    def _on_message(self, conn: _Connection, message: str | bytes) -> list[dict]:
        """Take one message now, never waiting for the model (audio waits for the
        connection's scorer); the events that answer it."""
        call = conn.streaming
        parsed = parse_message(message, call.streaming if call is not None else None,
                               self.source_zone)
        if isinstance(parsed, Audio):
            data = call.partial + parsed.data
            whole = len(data) - len(data) % call.frame
            call.partial = data[whole:]
            return self._queue(conn, call, None, data[:whole])
        if isinstance(parsed, Media):
            return self._queue(conn, call, parsed.channel, parsed.payload)
        if isinstance(parsed, Start):
            conn.streaming = self._start(parsed)
            conn.calls.append(conn.streaming)
        elif isinstance(parsed, Stop):
            call.ended = True
            conn.streaming = None
            conn.wake.set()
        return []  # Ignored too

    def _queue(self, conn: _Connection, call: _Call, channel: int | None,
               data: bytes) -> list[dict]:
        """Let audio wait for the scorer; a call coming in real time that this puts over
        its bound is cut (one ahead of real time is held instead: `_hold`)."""
        if call.ended:  # cut: its audio is no longer scored
            return []
        call.wait(channel, data)
        conn.wake.set()
        if call.waiting_bytes <= self.buffer_s * call.bytes_per_s \
                or call.ahead_of_real_time():
            return []
        call.cut(f"the server fell {self.buffer_s:g} s of audio behind the call")
        call_id = call.scorer.call.call_id
        log.warning("call %.80r cut: %s", call_id, call.incomplete)
        return [{"type": "error", "code": "behind", "call_id": call_id, "message": (
            f"{call.incomplete}: the rest of it is not scored live; what was scored is "
            "written marked incomplete, and the nightly run scores its recording")}]

    async def _hold(self, conn: _Connection) -> None:
        """Read a sender ahead of real time no further while its call's bound of audio
        waits (flow control: a recording sent whole is read at the pace it is scored)."""
        call = conn.streaming
        while call is not None and not call.ended \
                and call.waiting_bytes > self.buffer_s * call.bytes_per_s:
            conn.room.clear()
            await conn.room.wait()

    async def _score_behind(self, conn: _Connection) -> None:
        """Score each call's waiting audio in turn, a batch at a time; end and write each
        call once all its audio is in; send the events as they come. Never raises."""
        loop = asyncio.get_running_loop()
        while conn.calls or not (conn.ended or self.stopping):
            call = conn.calls[0] if conn.calls else None
            if call is not None and call.waiting and (
                    call.ended or call.waiting_bytes >= LEAST_S * call.bytes_per_s):
                batch = call.take()
                conn.room.set()
                try:
                    events = await loop.run_in_executor(self.pool, call.score, batch)
                except Exception as err:
                    events = [self._error(err)]
            elif call is not None and call.ended:
                events = await self._finish(call)
                conn.calls.popleft()
            else:
                await conn.wake.wait()
                conn.wake.clear()
                continue
            await self._send(conn, events)
        if self.stopping and not conn.ended:
            await conn.websocket.close(GOING_AWAY, "the server is stopping")

    async def _send(self, conn: _Connection, events: list[dict]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for event in events:
                await conn.websocket.send(json.dumps(event))
        except ConnectionClosed:
            pass  # the client has gone: its calls are still scored and written

    def _error(self, err: Exception) -> dict:
        """The error event that answers a message (or a batch of audio) that failed."""
        if isinstance(err, StreamError):
            return {"type": "error", "message": str(err)}
        if isinstance(err, ModelOutputError):  # the server's model is broken, not the call
            log.error("%s", err.detail)
            return {"type": "error", "message": err.detail}
        log.error("message failed", exc_info=err)  # a bug on one must not end the others
        return {"type": "error", "message": INTERNAL_ERROR}

    def _start(self, start: Start) -> _Call:
        meta = CallMeta(start.call_id, start.agent_id, start.queue,
                        start.started_at or datetime.now(timezone.utc),
                        start.customer_channel)
        return _Call(self._scorer(meta, start.channels, start.sample_rate, start.protocol),
                     start.protocol, start.encoding,
                     start.sample_rate * frame_bytes(start.encoding, start.channels))

    def _scorer(self, meta: CallMeta, channels: int, rate: int,
                protocol: str) -> StreamScorer:
        """The call's scorer, its id then streaming until written: a second stream of a
        call in progress would write one call twice, or lose one of them."""
        if meta.call_id in self.streaming:
            raise StreamError(f"call {meta.call_id!r:.80} is already streaming to this "
                              "server; a call id can stream once at a time")
        if self.stopping or len(self.streaming) >= self.max_calls:
            self.refused += 1
            log.warning("call %.80r refused: %s (%d refused so far)", meta.call_id,
                        "stopping" if self.stopping else f"{self.max_calls} calls at once "
                        "is the limit", self.refused)
            raise Busy(protocol, "the server is stopping" if self.stopping else
                       f"the server is at capacity ({self.max_calls} calls at once)")
        scorer = StreamScorer(self.model, meta, channels, rate, self.vad,
                              analytics=self.analytics)
        self.streaming.add(meta.call_id)
        return scorer

    async def _finish(self, call: _Call) -> list[dict]:
        """End the call (score what is open, write it); then its call id may stream
        again. The summary says whether all of its audio was scored."""
        try:
            return await self._finish_and_write(call)
        except Exception as err:
            return [self._error(err)]
        finally:
            self.streaming.discard(call.scorer.call.call_id)

    async def _finish_and_write(self, call: _Call) -> list[dict]:
        loop = asyncio.get_running_loop()
        events = await loop.run_in_executor(self.pool, call.scorer.finish,
                                            not call.cut_short)
        events[-1]["complete"] = call.incomplete is None  # the summary
        if not (self.results and (call.scorer.windows or call.incomplete)):
            return events  # nothing scored: not written, unless not all of it was heard
        call_id = call.scorer.call.call_id
        incomplete = call.incomplete and (
            f"{call.incomplete}: scored live up to {call.scorer.duration_s:.1f} s of its "
            "audio; the nightly run scores its recording and replaces it")
        try:
            written = await loop.run_in_executor(
                self.pool, write_live_call, self.results, self.model, call.scorer.call,
                call.scorer.scored_call(), self.analytics, incomplete)
        except (ResultsError, OSError) as err:  # its text names the server's files
            log.error("call %s not written: %s", call_id, err)
            return events + [{"type": "error", "message": "the call was not written to "
                              "the results (the server's log says why)"}]
        if not written:
            log.info("call %s spooled: the results folder is busy (a nightly run?); "
                     "it is written once the folder is free", call_id)
        return events


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)

