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
and answered with INTERNAL_ERROR. When a call stops or its connection drops, its
segments and calls row are written to ``--results`` with the nightly job's writer
(results.writer.write_live_call); while a nightly run holds the results folder, finished
calls wait in its spool and a retry every RETRY_S writes them once it is free. Several
calls can stream at once; the model runs in a pool of threads, one torch thread each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
# within a second: 16 calls on 2 cores
# held p95 0.55 s, 32 fell behind real time (docs/benchmarks.md, live scoring)
CALLS_PER_CORE = 8
TRY_AGAIN_LATER = 1013  # the WebSocket close code a refused media stream gets
RETRY_S = 10.0  # how often spooled calls are written while the results folder is busy
# the answer to a message that failed other than by a StreamError: its text is for the log
INTERNAL_ERROR = "the server failed on this message (its log says why); it was not used"


class Busy(StreamError):
    """A call refused at its start: the server scores as many calls as it can."""

    def __init__(self, protocol: str, max_calls: int):
        super().__init__(f"the server is at capacity ({max_calls} calls at once); the call "
                         "was not accepted: send it to another server or try again later")
        self.protocol = protocol


@dataclass
class _Call:
    scorer: StreamScorer
    protocol: str  # protocol.CALLMOOD | protocol.MEDIA
    encoding: str = "mulaw"
    partial: bytes = b""  # a frame split across binary messages: its first bytes

    @property
    def streaming(self) -> InCall:
        return InCall(self.scorer.call.call_id, self.protocol)


class LiveServer:
    """Scores the calls of every connection; writes each finished call to `results`."""

    def __init__(self, model: LoadedModel, results: str | None = None,
                 vad: VadConfig | None = None, analytics: CallAnalytics | None = None,
                 threads: int | None = None, source_zone: tzinfo = timezone.utc,
                 max_calls: int | None = None):
        # source_zone: the zone of a start message's started_at written without an offset
        self.model, self.results, self.source_zone = model, results, source_zone
        threads = threads or usable_cores()
        self.max_calls = max_calls or CALLS_PER_CORE * threads
        self.refused = 0  # calls refused at their start, since the server started
        self.vad, self.analytics = vad or VadConfig(), analytics or CallAnalytics()
        self.pool = ThreadPoolExecutor(threads, initializer=_one_torch_thread)
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
        async with serve(self.handle, host, port, max_size=MAX_MESSAGE_BYTES,
                         process_request=self._health) as server:
            log.info("listening on ws://%s:%d", host, port)
            await stop.wait()
            log.info("stopping: finishing the calls in progress")
            server.close()
            await server.wait_closed()
        self.pool.shutdown(wait=True)
        if retry is not None:
            retry.cancel()
            if not await loop.run_in_executor(None, flush_live_spool, self.results,
                                              self.analytics, RETRY_S):
                log.warning("the results folder is busy: finished calls wait in its "
                            "_live_spool/ for the nightly run or the next live server")

    def status(self) -> dict:
        """What a load balancer reads at /health: whether a new call would be taken."""
        return {"accepting": len(self.streaming) < self.max_calls,
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
        """One connection: calls one after another, events back as they happen."""
        from websockets.exceptions import ConnectionClosed

        call: _Call | None = None
        try:
            async for message in websocket:
                try:
                    call, events = await self._on_message(call, message)
                except Busy as err:
                    await websocket.send(json.dumps({"type": "error", "code": "busy",
                                                     "message": str(err)}))
                    if err.protocol == MEDIA:  # a media stream cannot wait: hang up
                        await websocket.close(TRY_AGAIN_LATER, "server at capacity")
                        return
                    continue
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
        parsed = parse_message(message, call.streaming if call is not None else None,
                               self.source_zone)
        if isinstance(parsed, Audio):
            data = call.partial + parsed.data
            whole = len(data) - len(data) % frame_bytes(call.encoding,
                                                          len(call.scorer.channels))
            call.partial = data[whole:]
            audio = decode_frames(data[:whole], call.encoding, len(call.scorer.channels))
            return call, await run(self.pool, call.scorer.feed, audio)
        if isinstance(parsed, Start):
            return self._start(parsed), []
        if isinstance(parsed, Media):
            audio = decode_frames(parsed.payload, "mulaw", 1)[0]
            return call, await run(self.pool, call.scorer.feed_channel, parsed.channel, audio)
        if isinstance(parsed, Stop):
            return None, await self._finish(call)
        return call, []  # Ignored

    def _start(self, start: Start) -> _Call:
        meta = CallMeta(start.call_id, start.agent_id, start.queue,
                        start.started_at or datetime.now(timezone.utc),
                        start.customer_channel)
        return _Call(self._scorer(meta, start.channels, start.sample_rate, start.protocol),
                     start.protocol, start.encoding)

    def _scorer(self, meta: CallMeta, channels: int, rate: int,
                protocol: str) -> StreamScorer:
        """The call's scorer, its id then streaming until `_finish`: a second stream of a
        call in progress would write one call twice, or lose one of them."""
        if meta.call_id in self.streaming:
            raise StreamError(f"call {meta.call_id!r:.80} is already streaming to this "
                              "server; a call id can stream once at a time")
        if len(self.streaming) >= self.max_calls:
            self.refused += 1
            log.warning("call %.80r refused: %d calls at once is the limit (%d refused so "
                        "far)", meta.call_id, self.max_calls, self.refused)
            raise Busy(protocol, self.max_calls)
        scorer = StreamScorer(self.model, meta, channels, rate, self.vad,
                              analytics=self.analytics)
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
                    call.scorer.scored_call(), self.analytics)
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

