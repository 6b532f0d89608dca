"""Scoring a call while it happens: audio in, one event per scored speech segment out.

`StreamScorer(model, call, channels, sample_rate).feed(chunk)` takes audio as it arrives
and returns the events it caused; `finish()` scores what is still open and adds the call
summary. The pieces are the nightly job's: the same window planner (callmood/signal/segment.py,
which decides as the audio arrives), the same log-mels and model, the same call summary
and escalation rule (callmood/results/call_summary.py), so a call scored live gets exactly
the windows and probabilities its recording gets at night, however its audio was cut
into messages.

A speech region is scored when it ends (after the VAD's minimum pause), inside a clip
of the audio heard up to then, or, while it goes on, each time another clip of it is
complete, so a long monologue yields events as it goes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr
import torch

from callmood.model.folder import LoadedModel
from callmood.results.call_summary import (
    AlertConfirmation,
    CallAnalytics,
    alert_trend,
    roles_for,
    summarize_call,
    trend_focus,
)
from callmood.results.meta import CallMeta
from callmood.results.scored import ScoredCall, Segment, top_labels
from callmood.results.writer import LIVE
from callmood.signal.features import CLIP_OVERLAP, band_levels, prior_profile
from callmood.signal.segment import VadConfig, WindowPlanner, window_mels

ENCODINGS = {"pcm16": "PCM_16", "mulaw": "ULAW"}


class StreamError(ValueError):
    """Audio or a message that cannot be used; the message says why."""


def frame_bytes(encoding: str, channels: int) -> int:
    """Bytes of one sample of every channel."""
    if encoding not in ENCODINGS:
        raise StreamError(f"unknown encoding {encoding!r}; choose one of {sorted(ENCODINGS)}")
    return (2 if encoding == "pcm16" else 1) * channels


def decode_frames(payload: bytes, encoding: str, channels: int) -> np.ndarray:
    """(channels, samples) float32 of raw interleaved `pcm16` (little-endian) or `mulaw`."""
    if len(payload) % frame_bytes(encoding, channels):
        raise StreamError(f"{len(payload)} bytes are not whole {encoding} frames of "
                          f"{channels} channel(s)")
    if not payload:
        return np.zeros((channels, 0), np.float32)
    data, _ = sf.read(io.BytesIO(payload), dtype="float32", always_2d=True, format="RAW",
                      subtype=ENCODINGS[encoding], samplerate=8000, channels=channels,
                      endian="LITTLE")
    return np.ascontiguousarray(data.T)


@dataclass
class _ChannelState:
    """One channel's audio at the model rate, not yet cut into clips, and its planner."""

    planner: WindowPlanner
    resampler: soxr.ResampleStream | None
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    offset: int = 0  # sample index of buffer[0] in the call
    regions_seen: int = 0  # of planner.speech, those already in StreamScorer.speech
    # with mel.speaker_mean: the sum of the band levels of the windows scored so far
    levels_sum: torch.Tensor | float = 0.0
    levels_count: int = 0

    def speaker_profile(self, levels: torch.Tensor,
                        reference: tuple[float, ...] | None) -> torch.Tensor:
        """The speaker profile after one more window's band levels: over the channel's
        windows so far (features.prior_profile; the nightly job's is over the whole
        channel)."""
        self.levels_sum = self.levels_sum + levels
        self.levels_count += 1
        return prior_profile(self.levels_sum, self.levels_count, reference)

    @property
    def samples(self) -> int:
        return self.planner.samples


class StreamScorer:
    """The live scoring of one call; not thread-safe (one per connection)."""

    def __init__(self, model: LoadedModel, call: CallMeta, channels: int, sample_rate: int,
                 vad: VadConfig | None = None, overlap: float = CLIP_OVERLAP,
                 analytics: CallAnalytics | None = None):
        if not 1 <= channels <= 8:
            raise StreamError(f"channels must be 1 to 8, got {channels}")
        if not 4000 <= sample_rate <= 192000:
            raise StreamError(f"sample rate must be 4000 to 192000 Hz, got {sample_rate}")
        if call.customer_channel is not None and not 0 <= call.customer_channel < channels:
            raise StreamError(f"customer_channel {call.customer_channel} is not one of the "
                              f"{channels} channel(s)")
        self.model, self.call = model, call
        self.rate, self.vad = sample_rate, vad or VadConfig()
        self.analytics = analytics or CallAnalytics.of_model(model)
        self.clip = model.mel.clip_samples
        rate = model.mel.sample_rate
        self.lookahead = round(self.vad.clip_lookahead_s * rate)
        self.roles = roles_for(channels, call.customer_channel)
        self.channels = [_ChannelState(WindowPlanner(rate, self.clip, overlap, self.vad),
                                       None if sample_rate == rate
                                       else soxr.ResampleStream(sample_rate, rate, 1,
                                                                dtype="float32"))
                         for _ in range(channels)]
        self.speech: list[Segment] = []
        self.windows: list[Segment] = []
        self.probs: list[np.ndarray] = []
        self.alerted = False
        # the alert reads the rule after each new customer segment (every segment without
        # roles), on the segments heard by the time that one ended
        self.focus = set(np.flatnonzero(trend_focus(np.array(self.roles))).tolist())
        self.confirmation = AlertConfirmation(self.analytics)
        self.finished = False

    # --- audio in
    def feed(self, audio: np.ndarray) -> list[dict]:
        """Audio of every channel, (channels, samples) or (samples,) for one channel."""
        audio = np.asarray(audio, dtype=np.float32)
        audio = audio[None] if audio.ndim == 1 else audio
        if audio.shape[0] != len(self.channels):
            raise StreamError(f"expected {len(self.channels)} channel(s), got {audio.shape[0]}")
        return self._score([w for c, samples in enumerate(audio)
                            for w in self._hear(c, samples, last=False)])

    def feed_channel(self, channel: int, samples: np.ndarray) -> list[dict]:
        """Audio of one channel (a telephony track)."""
        if not 0 <= channel < len(self.channels):
            raise StreamError(f"no channel {channel} in a {len(self.channels)}-channel call")
        return self._score(self._hear(channel, np.asarray(samples, np.float32), last=False))

    def finish(self, score_open: bool = True) -> list[dict]:
        """Score what is still open (unless `score_open` is False: a call cut short ends
        with what is scored) and end with the call summary."""
        if self.finished:
            return []
        events = self._score([w for c in range(len(self.channels))
                              for w in self._hear(c, np.zeros(0, np.float32), last=True)]
                             ) if score_open else []
        self.finished = True
        return events + [{"type": "summary", "call_id": self.call.call_id,
                          "duration_s": round(self.duration_s, 3),
                          "segments": len(self.windows), **self.summary()}]

    # --- the planner, as audio arrives
    def _hear(self, c: int, samples: np.ndarray, last: bool) -> list[tuple]:
        """Take a channel's audio; return the windows it completed (channel, start, end,
        log-mels)."""
        ch = self.channels[c]
        if ch.resampler is not None:
            samples = ch.resampler.resample_chunk(samples[:, None], last=last)[:, 0]
        ch.buffer = np.concatenate([ch.buffer, samples])
        windows = ch.planner.add(samples)
        if last:
            windows += ch.planner.finish()
        rate = self.model.mel.sample_rate
        self.speech += [Segment(c, a / rate, b / rate)
                        for a, b in ch.planner.speech[ch.regions_seen:]]
        ch.regions_seen = len(ch.planner.speech)
        return self._cut(c, ch, windows)

    def _cut(self, c: int, ch: _ChannelState, windows: list[tuple[int, int]]) -> list[tuple]:
        """Windows with their log-mels, and the channel's buffer trimmed to what later
        windows can still need (a clip before the earliest of them)."""
        cut = [(c, a, b, window_mels(ch.buffer, [(a - ch.offset, b - ch.offset)],
                                     self.model.mel, self.lookahead))
               for a, b in windows]
        keep = max(ch.offset, ch.planner.needed_from - self.clip)
        ch.buffer, ch.offset = ch.buffer[keep - ch.offset:], keep
        return cut

    # --- scoring and events
    def _score(self, windows: list[tuple]) -> list[dict]:
        if not windows:
            return []
        mels = torch.cat([m for *_, m in windows])
        speakers = None
        if self.model.mel.speaker_mean:
            reference = self.model.norm.speaker_reference
            speakers = torch.stack([self.channels[c].speaker_profile(levels, reference)
                                    for (c, *_), levels
                                    in zip(windows, band_levels(mels), strict=True)])
        probs = self.model.predict_mels(mels, speakers=speakers)
        rate = self.model.mel.sample_rate
        events = []
        emotions, confidences = top_labels(probs, self.model.labels)
        for (c, a, b, _), p, emotion, confidence in zip(windows, probs, emotions, confidences,
                                                        strict=True):
            self.windows.append(Segment(c, a / rate, b / rate))
            self.probs.append(p)
            events.append({"type": "segment", "call_id": self.call.call_id,
                           "role": self.roles[c], "channel": c,
                           "start_s": round(a / rate, 3), "end_s": round(b / rate, 3),
                           "emotion": emotion, "confidence": round(float(confidence), 4),
                           "probabilities": {label: round(float(v), 4) for label, v in
                                             zip(self.model.labels, p, strict=True)}})
        if not self.alerted:
            events += self._alert(sorted(b / rate for c, _, b, _ in windows
                                         if c in self.focus))
        return events

    def _alert(self, new_ends: list[float]) -> list[dict]:
        """The alert event, if the live rule now holds for `confirm_segments` customer
        segments in a row: it is read after each new one (`new_ends`, in time order) on the
        segments that had ended by then, as the nightly job replays it (alert_held_counts)."""
        ends, times, trend = alert_trend(self.model.labels, self.model.card.valence,
                                         [(self.roles[c], s, e) for c, s, e in self.windows],
                                         np.array(self.probs))
        for end in new_ends:
            if self.confirmation.after_end(ends, times, trend, end):
                self.alerted = True
                summary = self.summary()
                return [{"type": "alert", "call_id": self.call.call_id,
                         "at_s": round(self.duration_s, 3), "segment_end_s": float(end),
                         "reason": "customer negative emotion rising",
                         "escalation_slope": summary["escalation_slope"],
                         "customer_negative_share": summary["customer_negative_share"]}]
        return []

    @property
    def duration_s(self) -> float:
        return max(ch.samples for ch in self.channels) / self.model.mel.sample_rate

    def summary(self) -> dict:
        """The computed columns of the call's `calls` row, as the nightly job makes them."""
        probs = np.array(self.probs) if self.probs else np.zeros((0, len(self.model.labels)))
        return summarize_call(self.model.labels, self.model.card.valence, self.duration_s,
                              [(self.roles[c], s, e) for c, s, e in self.speech],
                              [(self.roles[c], s, e) for c, s, e in self.windows], probs,
                              self.analytics)

    def scored_call(self) -> ScoredCall:
        """The call as a ScoredCall, for the nightly job's writer."""
        return ScoredCall(LIVE + self.call.call_id, None, self.duration_s,
                          len(self.channels), list(self.speech), list(self.windows),
                          np.array(self.probs, dtype=np.float32).reshape(
                              len(self.probs), len(self.model.labels)))
