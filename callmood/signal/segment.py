"""Where the speech is: an energy voice-activity detector and the windows that get scored.

The detector compares the energy of short frames with the channel's own noise floor, so
it needs no model and behaves the same on every machine. Its thresholds are declared in
VadConfig, apart from the model's settings.

One planner decides, for the nightly job (a whole file, block by block) and for live
scoring (a call as it is heard), where the speech is and which windows are scored
(WindowPlanner): it looks at the audio every STEP_S of it, with the noise floor of the
last NOISE_WINDOW_S heard, so its decisions depend on the audio only, never on how it
was cut into blocks, and a live call gets exactly the windows its recording gets at
night. Speech regions longer than the model's clip are cut into clips that overlap by at
least as much as evaluation's (features.window_starts), laid from the region's start on,
each final as soon as its audio has been heard; a shorter region is scored inside a clip
of its surrounding audio that reaches only a little past it, and only a recording
shorter than a clip is repeated to fill one, as features.fit_frames fills a short
utterance in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from callmood.signal.features import MelConfig, audio_features, fit_frames


@dataclass(frozen=True)
class VadConfig:
    """Thresholds of the energy detector (times in seconds, levels in dB)."""

    frame_s: float = 0.02
    noise_percentile: float = 10.0  # the quietest 10% of frames estimate the noise floor
    snr_db: float = 9.0  # speech frames are this far above the noise floor ...
    floor_db: float = -60.0  # ... and above this absolute level (dBFS)
    min_speech_s: float = 0.25  # shorter bursts are clicks or breaths
    min_silence_s: float = 0.35  # shorter pauses inside speech are bridged
    pad_s: float = 0.05  # kept around each region for soft onsets and endings
    # a region shorter than a clip is scored inside a clip of the audio around it, reaching
    # at most this far past its end (the rest before it): live scoring, which closes a
    # region after min_silence_s, then scores the same clip as the nightly job
    clip_lookahead_s: float = 0.35

    def __post_init__(self):
        if self.frame_s <= 0 or not 0 <= self.noise_percentile <= 100 \
                or not 0 <= self.clip_lookahead_s <= self.min_silence_s:
            raise ValueError(f"invalid VAD settings: {self}")


NOISE_WINDOW_S = 300.0  # the noise floor is the percentile of this much recent audio
STEP_S = 0.1  # the planner looks at the audio every this much of it
NOISE_UPDATE_S = 1.0  # and estimates the noise floor again every this much (a percentile
# over minutes of frames costs more than the rest of a look)


def detect_speech(waveform: np.ndarray, rate: int, vad: VadConfig) -> list[tuple[int, int]]:
    """Speech regions of one channel as (start, end) sample indices, in order, as the
    planner finds them (the clip length does not matter for the regions)."""
    planner = WindowPlanner(rate, clip=rate, overlap=0.0, vad=vad)
    planner.add(waveform)
    planner.finish()
    return planner.speech


class WindowPlanner:
    """One channel's speech regions and the windows to score in them, decided as its
    audio (at `rate`) arrives, whatever blocks it comes in.

    Every STEP_S of audio it finds the speech regions from the last finished one on,
    against the noise floor of the last NOISE_WINDOW_S heard (estimated again every
    NOISE_UPDATE_S). A region is closed (final)
    once vad.min_silence_s of pause follows it; a long region's clips are given as soon
    as each is complete, every clip_hop samples from its start, and one more ending where
    it ends if they stop short of it; a short one is one window. Memory does not grow with
    the call: levels it no longer reads are forgotten.
    """

    def __init__(self, rate: int, clip: int, overlap: float, vad: VadConfig):
        self.rate, self.clip, self.vad = rate, clip, vad
        self.hop = clip_hop(clip, overlap)
        self.meter = LevelMeter(rate, vad)
        self.step = max(1, round(STEP_S * rate))
        self.noise_frames = int(NOISE_WINDOW_S / vad.frame_s)
        self.speech: list[tuple[int, int]] = []  # closed regions, in order
        self._done_frame = 0  # frames before this belong to closed regions or silence
        self._next_window: int | None = None  # start of the next clip of an open region
        self._covered: int | None = None  # end of the last clip of the open region
        self._threshold = 0.0  # speech level, estimated at sample _threshold_at
        self._threshold_at: int | None = None

    @property
    def samples(self) -> int:
        return self.meter.samples

    @property
    def needed_from(self) -> int:
        """The first sample a later window can end after: audio more than a clip before
        it is no longer needed to cut clips."""
        return self._next_window if self._next_window is not None \
            else min(self._done_frame * self.meter.frame, self.samples)

    def add(self, samples: np.ndarray) -> list[tuple[int, int]]:
        """Hear more audio; returns the (start, end) windows it completed.

        The block's frame levels are measured at once; each look then reads only the
        frames heard up to its own moment, so the decisions are those of a look after
        every STEP_S fed one by one, at a fraction of the cost."""
        heard = self.samples
        self.meter.add(samples)
        windows = []
        for now in range(heard - heard % self.step + self.step, self.samples + 1, self.step):
            windows += self._look(closing=False, now=now)
        return windows

    def finish(self) -> list[tuple[int, int]]:
        """The audio has ended: close what is open; returns the windows that completes."""
        return self._look(closing=True, now=self.samples)

    def _look(self, closing: bool, now: int) -> list[tuple[int, int]]:
        """Decide on what was heard up to sample `now`."""
        first = self.meter.first_frame  # levels[0] is frame `first`
        levels = self.meter.levels()[:now // self.meter.frame - first]
        if len(levels) == 0:
            return []
        if self._threshold_at is None \
                or now - self._threshold_at >= NOISE_UPDATE_S * self.rate:
            self._threshold = noise_threshold(levels[-self.noise_frames:], self.vad)
            self._threshold_at = now
        regions = speech_regions(levels[self._done_frame - first:], self.vad, self.rate,
                                 now, self._threshold, self._done_frame)
        pause = round(self.vad.min_silence_s * self.rate)  # >= the clips' lookahead
        windows = []
        for a, b in regions:
            closed = closing or now - b >= pause
            if self._next_window is None and b - a >= self.clip:
                self._next_window = a
            while self._next_window is not None and self._next_window + self.clip <= b:
                windows.append((self._next_window, self._next_window + self.clip))
                self._covered = self._next_window + self.clip
                self._next_window += self.hop
            if not closed:
                break
            if self._covered is None:  # a short region: one window around it
                windows.append((a, b))
            elif self._covered < b:  # the end of a long one
                windows.append((b - self.clip, b))
            self.speech.append((a, b))
            self._done_frame = -(-b // self.meter.frame)
            self._next_window = self._covered = None
        if not regions:  # silence: what is older than the shortest speech plus a pause
            settled = first + len(levels) - int((self.vad.min_speech_s
                                                 + self.vad.min_silence_s)
                                                / self.vad.frame_s) - 1
            self._done_frame = max(self._done_frame, settled)
        # later looks read the noise window and the frames from _done_frame on, no more
        self.meter.forget_before(min(self._done_frame, first + len(levels) - self.noise_frames))
        return windows


class LevelMeter:
    """Frame levels of one channel fed block by block (the frames run on across blocks,
    so any blocking gives the levels of the whole waveform)."""

    def __init__(self, rate: int, vad: VadConfig):
        self.frame = max(1, round(vad.frame_s * rate))
        self.samples = 0
        self._tail = np.zeros(0, np.float32)
        self._levels: list[np.ndarray] = []
        self.first_frame = 0  # frames forgotten (forget_before): levels() starts here

    def add(self, block: np.ndarray) -> None:
        self.samples += len(block)
        x = np.concatenate([self._tail, block])
        n = len(x) // self.frame
        frames = x[:n * self.frame].reshape(n, self.frame).astype(np.float64)
        self._levels.append(10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12))
        self._tail = x[n * self.frame:]

    def levels(self) -> np.ndarray:
        """The levels of the frames from first_frame on."""
        if len(self._levels) > 1:  # joined once, not on every call
            self._levels = [np.concatenate(self._levels)]
        return self._levels[0] if self._levels else np.zeros(0)

    def forget_before(self, frame: int) -> None:
        """Drop the levels of the frames before `frame`: a stream keeps only those it
        still reads, so an hours-long live call costs no more per second than a short one."""
        levels = self.levels()
        drop = min(max(0, frame - self.first_frame), len(levels))
        if drop:
            self._levels, self.first_frame = [levels[drop:]], self.first_frame + drop


def speech_span(waveform: np.ndarray, rate: int, vad: VadConfig | None = None) -> np.ndarray:
    """The waveform from its first speech region's start to its last one's end, as the
    nightly job's detector finds them (the whole waveform when it finds none): an
    utterance as a call's speech region presents it, without the silence a corpus leaves
    around its takes."""
    regions = detect_speech(waveform, rate, vad or VadConfig())
    return waveform[regions[0][0]:regions[-1][1]] if regions else waveform


TAKE_FLOOR_DB = 35.0  # a recorded take's speech: its frames within this of its loudest
TAKE_MIN_RUN_S = 0.08  # shorter runs of such frames are clicks and breaths, not the voice


def take_bounds(power_db: np.ndarray, frames_per_second: float) -> tuple[int, int]:
    """[first, end) of the speech of one recorded take (a corpus file: one utterance in
    quiet) from its frames' power in dB: from its first to its last run of at least
    TAKE_MIN_RUN_S within TAKE_FLOOR_DB of its loudest frame, so that a click before a
    quiet second is not its start; the span of all such frames where no run is that long,
    and the whole take where no frame is finite. The call benchmark cuts its source takes
    so, and speech_margin training cuts its examples so."""
    loud = np.concatenate([[False], power_db > np.max(power_db) - TAKE_FLOOR_DB, [False]])
    runs = np.flatnonzero(np.diff(loud.astype(np.int8))).reshape(-1, 2)  # [start, end)
    if not len(runs):
        return 0, len(power_db)
    voiced = runs[runs[:, 1] - runs[:, 0] >= round(TAKE_MIN_RUN_S * frames_per_second)]
    first, last = (voiced if len(voiced) else runs)[[0, -1]]
    return int(first[0]), int(last[1])


def detector_key() -> dict:
    """The settings that decide where speech_span cuts (the feature cache keys trimmed
    log-mels by them)."""
    return {"vad": asdict(VadConfig()), "step_s": STEP_S, "noise_window_s": NOISE_WINDOW_S,
            "noise_update_s": NOISE_UPDATE_S}


def utterance_audio(waveform: np.ndarray, mel: MelConfig) -> np.ndarray:
    """An utterance file's samples as a model with these settings reads them: its speech
    span when mel.trim_silence, else all of it."""
    return speech_span(waveform, mel.sample_rate) if mel.trim_silence else waveform


def noise_threshold(levels: np.ndarray, vad: VadConfig) -> float:
    """The level above which a frame counts as speech: the channel's own noise floor plus
    vad.snr_db, and at least vad.floor_db."""
    return max(float(np.percentile(levels, vad.noise_percentile)) + vad.snr_db, vad.floor_db)


def speech_regions(levels: np.ndarray, vad: VadConfig, rate: int, samples: int,
                   threshold: float, first_frame: int = 0) -> list[tuple[int, int]]:
    """(start, end) sample indices of speech in frame `levels` (the frames of a channel of
    `samples` samples from `first_frame` on): frames above `threshold`, short pauses
    bridged, short bursts dropped."""
    if len(levels) == 0:
        return []
    frame = max(1, round(vad.frame_s * rate))
    active = np.concatenate([[False], levels > threshold, [False]])
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))
    runs = list(zip(edges[::2], edges[1::2], strict=True))  # [start, end) in frames

    min_gap = vad.min_silence_s / vad.frame_s
    merged: list[list[int]] = []
    for start, end in runs:
        if merged and start - merged[-1][1] < min_gap:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    pad = round(vad.pad_s * rate)
    return [(max(0, (first_frame + start) * frame - pad),
             min(samples, (first_frame + end) * frame + pad))
            for start, end in merged if (end - start) * vad.frame_s >= vad.min_speech_s]


def clip_hop(clip: int, overlap: float) -> int:
    """Samples between the starts of a long region's clips."""
    return max(1, int(clip * (1 - overlap)))


def window_mels(waveform: np.ndarray, windows: list[tuple[int, int]],
                mel: MelConfig, lookahead: int | None = None) -> torch.Tensor:
    """(W, n_mels, input_frames) log-mels of the windows of one channel at mel.sample_rate.

    A window shorter than a clip is scored inside a clip-long span of the audio around
    it (see clip_start): the pauses and the other talker's echo around the speech, where
    a training clip is a crop of an utterance file with the silence its corpus recorded
    around it (or, with mel.trim_silence, of its speech alone, repeated to fill a clip
    when shorter). A recording shorter than a clip is repeated to fill it
    (features.fit_frames), as a short utterance is in training.
    """
    clip = mel.clip_samples
    if len(waveform) < clip:
        whole = fit_frames(audio_features(waveform, mel), mel.input_frames)
        return whole.expand(len(windows), -1, -1).clone()
    clips = np.zeros((len(windows), clip), dtype=np.float32)
    for i, (start, end) in enumerate(windows):
        first = clip_start(start, end, clip, len(waveform), lookahead)
        clips[i] = waveform[first:first + clip]
    return audio_features(clips, mel)


def clip_start(start: int, end: int, clip: int, length: int,
               lookahead: int | None = None) -> int:
    """Where the clip that scores the window [start, end) begins in audio of `length`
    samples (>= clip): at the window, or for a shorter window centred on it but reaching
    at most `lookahead` samples past its end (None: no limit), kept within the audio."""
    if end - start >= clip:
        return start
    first = (start + end) // 2 - clip // 2
    if lookahead is not None:
        first = min(first, end + lookahead - clip)
    return min(max(0, first), length - clip)
