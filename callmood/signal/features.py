"""The one log-mel implementation of callmood, used by training, evaluation and batch scoring,
and the framed waveform that a raw-audio encoder (wav2vec2) reads instead (`frontend`).

The log-mel is written with torch (torch.stft + a Slaney mel filter bank) rather than
torchaudio: the torchaudio wheels available here are CUDA-linked and do not load with the
CPU torch build. The values match librosa.feature.melspectrogram
(tests/signal/test_features.py checks this).
"""

from __future__ import annotations

import json
import math
import numbers
import reprlib
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
import torch

# Sane limits of the mel settings, far above any speech model's (callmood's: 16 kHz, n_fft
# 400, 128 mels, 304 frames of 10 ms; Whisper's: 30-s clips): a stranger's
# preprocessor_config.json must not make scoring allocate gigabytes (n_fft 2**30) or
# build a model for a 24576 x 24576 input.
MEL_LIMITS = {"sample_rate": 192_000, "n_fft": 4096, "win_length": 4096, "hop_length": 4096,
              "n_mels": 512, "input_frames": 4096}
MAX_FRAMES_PER_SECOND = 1000  # a hop of at least 1 ms; predict takes a whole file's log-mel
MAX_CLIP_SECONDS = 30.0
LOG_MEL, WAVEFORM = "log-mel", "waveform"
MAX_PROSODY_ROWS = 64


def is_finite_number(value: object) -> bool:
    """A real, finite number (not a bool, a string, NaN or inf), e.g. from a JSON file."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) \
        and math.isfinite(value)


@dataclass(frozen=True)
class MelConfig:
    """Signal-processing settings of a model; saved in its preprocessor_config.json."""

    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms
    win_length: int = 400
    hop_length: int = 160  # 10 ms
    n_mels: int = 128
    f_min: float = 20.0
    f_max: float = 8000.0
    input_frames: int = 304  # the model's clip: 304 frames = 3.03 s
    # Absolute floor of the cached log power: far below any recorded signal (16-bit
    # quantisation noise of a take 30 dB quieter than RAVDESS's quietest still lies ~60 dB
    # above it), so a gain shifts every cached value by the same constant.
    log_floor: float = 1e-20
    equalize_level: bool = True  # see equalize_level()
    # Dynamic range kept below the clip's level: the model sees log power relative to the
    # loud frames, floored this many dB below them (see level_relative()). None: the legacy
    # absolute floor (log_floor) of model folders written before this setting existed.
    level_floor_db: float | None = 80.0
    # subtract each mel band's mean over the clip (see level_relative()); False in every
    # model folder written before this setting existed
    spectral_mean: bool = False
    # subtract the speaker's mean band levels over all their speech (a call: the channel's),
    # see speaker_profiles(); False in every model folder written before this setting existed
    speaker_mean: bool = False
    # with speaker_mean: move each band by at most this many dB, from the speaker's profile
    # towards the training speakers' mean profile (Normalization.speaker_reference), so a
    # band a line left empty is not lifted to the level of speech; None: subtract the
    # whole profile
    speaker_shift_db: float | None = None
    # what the model reads: LOG_MEL (the ViT's image, n_mels x frames), or WAVEFORM: the
    # samples themselves in frames of hop_length (hop_length x frames), for a raw-audio
    # encoder (wav2vec2), so that cropping, windows and the cache stay in frames; the
    # log-mel settings and level ones then do not apply, as the encoder standardises each
    # clip's samples instead (standardized_waveform)
    frontend: str = LOG_MEL
    # rows of periodicity below the log-mel (periodicity()): how strongly each frame
    # repeats at each candidate pitch period, so the model sees the voice's pitch contour,
    # which the log-mel's 40-Hz bins cannot resolve; 0: none (every folder written before
    # this setting existed)
    prosody_rows: int = 0
    # cut an utterance file to its speech (segment.speech_span) before its features, in
    # training, evaluation and predict: a corpus's silence around its takes (its length,
    # its room) is a corpus cue the model learns, and a call's speech regions have none of
    # it; False in every model folder written before this setting existed
    trim_silence: bool = False

    def __post_init__(self):
        if self.frontend not in (LOG_MEL, WAVEFORM):
            raise ValueError(f"frontend must be {LOG_MEL!r} or {WAVEFORM!r}, got "
                             f"{reprlib.repr(self.frontend)}")
        if self.frontend == WAVEFORM and (self.spectral_mean or self.speaker_mean):
            raise ValueError("spectral_mean and speaker_mean act on mel bands: a waveform "
                             "frontend has none")
        if isinstance(self.prosody_rows, bool) or not isinstance(self.prosody_rows, int) \
                or not 0 <= self.prosody_rows <= MAX_PROSODY_ROWS:
            raise ValueError(f"prosody_rows must be an integer from 0 to {MAX_PROSODY_ROWS}, "
                             f"got {reprlib.repr(self.prosody_rows)}")
        if self.prosody_rows and (self.frontend == WAVEFORM or self.speaker_mean):
            raise ValueError("prosody_rows go below a log-mel, without speaker_mean (its "
                             "profiles are per mel band)")
        for name, limit in MEL_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                raise ValueError(f"{name} must be a positive integer of at most {limit}, got "
                                 f"{reprlib.repr(value)}")
        if self.speaker_shift_db is not None and not (
                self.speaker_mean and is_finite_number(self.speaker_shift_db)
                and self.speaker_shift_db >= 0):
            raise ValueError("speaker_shift_db needs speaker_mean and a number of dB >= 0, "
                             f"got {reprlib.repr(self.speaker_shift_db)}")
        if self.spectral_mean and self.speaker_mean:
            raise ValueError("spectral_mean and speaker_mean each subtract a mean: choose one")
        if self.win_length > self.n_fft:
            raise ValueError("win_length must not exceed n_fft")
        if self.sample_rate / self.hop_length > MAX_FRAMES_PER_SECOND:
            raise ValueError(f"hop_length {self.hop_length} gives more than "
                             f"{MAX_FRAMES_PER_SECOND} frames per second")
        if self.clip_seconds > MAX_CLIP_SECONDS:
            raise ValueError(f"input_frames x hop_length make a clip of {self.clip_seconds:g} "
                             f"s, longer than {MAX_CLIP_SECONDS:g} s")
        for name in ("f_min", "f_max", "log_floor", "level_floor_db", "speaker_shift_db"):
            value = getattr(self, name)
            if not (is_finite_number(value) or name in ("level_floor_db", "speaker_shift_db")
                    and value is None):
                raise ValueError(f"{name} must be a finite number, got {reprlib.repr(value)}")
        switches = ("equalize_level", "spectral_mean", "speaker_mean", "trim_silence")
        if not all(isinstance(getattr(self, name), bool) for name in switches):
            raise ValueError(f"{', '.join(switches)} must be true or false")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {self}")
        if self.log_floor <= 0:
            raise ValueError(f"log_floor must be > 0, got {self.log_floor}")

    @property
    def rows(self) -> int:
        """Rows of a frame: mel bands (and prosody rows), or a waveform frame's samples."""
        return self.hop_length if self.frontend == WAVEFORM else self.n_mels + self.prosody_rows

    @property
    def clip_samples(self) -> int:
        """Samples that give exactly `input_frames` frames (centred STFT, or whole frames of
        the waveform)."""
        if self.frontend == WAVEFORM:
            return self.input_frames * self.hop_length
        return (self.input_frames - 1) * self.hop_length

    @property
    def clip_seconds(self) -> float:
        return self.clip_samples / self.sample_rate

    def key(self) -> str:
        """Stable text of the settings that shape the cached log-mels (the feature cache key)."""
        shaping = asdict(self)
        # applied on the way into the model (level_relative), not cached
        for applied_later in ("equalize_level", "level_floor_db", "spectral_mean",
                              "speaker_mean", "speaker_shift_db"):
            del shaping[applied_later]
        for newer, off in (("frontend", LOG_MEL), ("prosody_rows", 0), ("trim_silence", False)):
            if shaping[newer] == off:  # as before the setting existed: the cache stays valid
                del shaping[newer]
        if self.prosody_rows:
            shaping["periodicity"] = {"pitch_range_hz": PITCH_RANGE_HZ,
                                      "window_s": PERIODICITY_WINDOW_S,
                                      "row": "highest over its lags"}
        return json.dumps(shaping, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> MelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown mel settings: {sorted(unknown)}")
        return cls(**values)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


def _mel_band_edges(n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    return np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)


def mel_band_edges_hz(n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """The n_mels + 2 frequencies (Hz) equally spaced in mel that bound the triangular
    filters: band i rises from edges[i], peaks at edges[i + 1] and falls to edges[i + 2]."""
    return _mel_to_hz(_mel_band_edges(n_mels, f_min, f_max))


def hz_to_mel_band(hz: np.ndarray, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Where frequencies fall on the band axis, as fractional band indices (band i's peak
    at i), clipped to the bands."""
    peaks = _mel_band_edges(n_mels, f_min, f_max)[1:-1]
    return np.interp(_hz_to_mel(hz), peaks, np.arange(n_mels, dtype=np.float64))


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                   f_max: float) -> torch.Tensor:
    """Triangular filters (n_mels, n_fft // 2 + 1) with Slaney area normalisation."""
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_band_edges_hz(n_mels, f_min, f_max)
    widths = np.diff(edges)
    rising = (fft_hz[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


@lru_cache(maxsize=8)
def _window(win_length: int) -> torch.Tensor:
    return torch.hann_window(win_length, periodic=True)


def log_mel(waveform: torch.Tensor | np.ndarray, config: MelConfig) -> torch.Tensor:
    """Log-mel spectrogram of (..., samples) audio at config.sample_rate -> (..., n_mels, frames).

    Frames are centred (zero padding), so a signal of n samples gives 1 + n // hop frames.
    """
    x = torch.as_tensor(waveform, dtype=torch.float32)
    batch_shape = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    spec = torch.stft(x, n_fft=config.n_fft, hop_length=config.hop_length,
                      win_length=config.win_length, window=_window(config.win_length),
                      center=True, pad_mode="constant", return_complex=True)
    power = spec.real.square() + spec.imag.square()
    fbank = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.f_min,
                           config.f_max)
    mel = torch.matmul(fbank, power)
    out = torch.log(mel + config.log_floor)
    return out.reshape(*batch_shape, config.n_mels, out.shape[-1])


def framed_waveform(waveform: torch.Tensor | np.ndarray, config: MelConfig) -> torch.Tensor:
    """(..., samples) -> (..., hop_length, frames): the samples in consecutive frames of
    hop_length, the last one completed with zeros (the WAVEFORM frontend's features)."""
    x = torch.as_tensor(waveform, dtype=torch.float32)
    hop = config.hop_length
    frames = max(1, math.ceil(x.shape[-1] / hop))
    x = torch.nn.functional.pad(x, (0, frames * hop - x.shape[-1]))
    return x.reshape(*x.shape[:-1], frames, hop).transpose(-1, -2)


# periodicity(): the pitch range its rows span and the window each frame's is measured over
PITCH_RANGE_HZ = (60.0, 500.0)
PERIODICITY_WINDOW_S = 0.04  # 2.4 periods of the lowest pitch
_PERIODICITY_MIN_SHARE = 1e-3  # of a frame's energy that a lag's overlap must hold
_PERIODICITY_CHUNK = 1 << 21  # samples of frames computed at once (8 MB a buffer)


def row_lags(config: MelConfig) -> torch.Tensor:
    """(prosody_rows, width) sample lags: row i holds every whole lag between the
    geometric midpoints of its period and its neighbours' (periods spaced evenly in log
    pitch over PITCH_RANGE_HZ, the lowest pitch first; the outer rows reach as far beyond
    their period, within the frame), the last repeated to fill the row."""
    low, high = PITCH_RANGE_HZ
    periods = config.sample_rate / np.geomspace(low, high, config.prosody_rows)
    step = np.sqrt(periods[0] / periods[1]) if config.prosody_rows > 1 else 1.0
    edges = np.concatenate([[periods[0] * step], np.sqrt(periods[:-1] * periods[1:]),
                            [periods[-1] / step]])
    edges = edges.clip(1, round(PERIODICITY_WINDOW_S * config.sample_rate) - 1)
    rows = [np.arange(np.ceil(shorter), np.floor(longer) + 1, dtype=np.int64)
            for longer, shorter in zip(edges[:-1], edges[1:], strict=True)]
    rows = [lags if len(lags) else np.array([round(period)])
            for lags, period in zip(rows, periods, strict=True)]
    width = max(map(len, rows))
    return torch.as_tensor(np.stack([np.pad(lags, (0, width - len(lags)), mode="edge")
                                     for lags in rows]))


def periodicity(waveform: torch.Tensor | np.ndarray, config: MelConfig) -> torch.Tensor:
    """(..., samples) -> (..., prosody_rows, frames): each frame's normalised
    autocorrelation, its highest over each row's lags (row_lags), within [-1, 1].

    A voiced frame gives a ridge at its pitch period and ridges as strong at its
    multiples (lower rows); nothing above its pitch: the highest strong ridge is the pitch.
    Noise and silence give near 0. Frames are centred as the log-mel's, so row for row
    they line up. A gain changes nothing (normalised). The highest over a row's lags, not
    the value at one lag: the peak at the period is only as wide as the strongest
    harmonic's cycle, so a voice rich in harmonics, or a telephone band that removes the
    fundamental, puts it between two rows' lags (a 110 Hz voice read 0.3 on its row, and
    below 0 through a 300-3400 Hz band). No pitch is picked, so there is no octave error
    to make: the model reads the contour from the ridges.
    """
    x = torch.as_tensor(waveform, dtype=torch.float32)
    batch_shape, n = x.shape[:-1], x.shape[-1]
    x = x.reshape(-1, n)
    hop, window = config.hop_length, int(round(PERIODICITY_WINDOW_S * config.sample_rate))
    padded = torch.nn.functional.pad(x, (window // 2, window - window // 2))
    count = 1 + n // hop
    lags = row_lags(config)
    out = torch.empty(x.shape[0], config.prosody_rows, count)
    step = max(1, _PERIODICITY_CHUNK // window)  # frames at a time: bounded memory
    for first in range(0, count, step):
        last = min(count, first + step)
        frames = padded[:, first * hop:(last - 1) * hop + window].unfold(-1, window, hop)
        spectrum = torch.fft.rfft(frames, n=2 * window)
        correlation = torch.fft.irfft(spectrum.real.square() + spectrum.imag.square(),
                                      n=2 * window)[..., :window]  # sum x[t] x[t + lag]
        # shares of the frame's energy, so that a quiet frame does not underflow
        energy = frames.square().cumsum(-1)
        total = energy[..., -1:].clamp_min(torch.finfo(torch.float32).tiny)
        energy = energy / total
        head = energy.flip(-1)  # share of x[t]^2 over t < window - lag, lag = 0, 1, ...
        tail = 1.0 - torch.nn.functional.pad(energy, (1, 0))[..., :window]
        # a lag whose overlap holds almost none of the frame's energy (an onset next to
        # silence) has no period to measure, only rounding error to divide
        enough = torch.minimum(head, tail) > _PERIODICITY_MIN_SHARE
        normalised = torch.where(enough, correlation / total / torch.sqrt(
            (head * tail).clamp_min(_PERIODICITY_MIN_SHARE ** 2)), 0.0).clamp(-1.0, 1.0)
        rows = normalised[..., lags].amax(-1)  # (waveforms, frames, rows)
        out[:, :, first:last] = rows.transpose(-1, -2)
    return out.reshape(*batch_shape, config.prosody_rows, count)


def audio_features(waveform: torch.Tensor | np.ndarray, config: MelConfig) -> torch.Tensor:
    """(..., samples) -> (..., rows, frames): what the model's frontend reads, the log-mel
    (with prosody_rows of periodicity below it) or the framed waveform; cached, cropped
    and windowed alike."""
    if config.frontend == WAVEFORM:
        return framed_waveform(waveform, config)
    if config.prosody_rows:
        return torch.cat([log_mel(waveform, config), periodicity(waveform, config)], dim=-2)
    return log_mel(waveform, config)


def standardized_waveform(frames: torch.Tensor) -> torch.Tensor:
    """(..., hop_length, frames) framed samples -> (..., samples), each clip at zero mean and
    unit variance, as wav2vec2's feature extractor gives them (do_normalize): the gain goes,
    as equalize_level removes it from a log-mel."""
    x = frames.transpose(-1, -2).reshape(*frames.shape[:-2], -1)
    x = x - x.mean(dim=-1, keepdim=True)
    return x / torch.sqrt(x.square().mean(dim=-1, keepdim=True) + 1e-7)


def window_starts(length: int, window: int, overlap: float, min_windows: int = 1) -> list[int]:
    """Starts of evenly spaced windows that cover `length` and overlap by >= `overlap`.

    The first window starts at 0 and the last ends at `length`, with at least
    `min_windows` windows; a length of at most one window gives the single start 0. Used
    in frames for utterances (evaluation, predict). Calls' speech regions are cut by
    batch.segment with at least this overlap, but from the region's start on, so that live
    scoring cuts the same clips as the nightly job.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if length <= window:
        return [0]
    hop = max(1, int(window * (1 - overlap)))
    count = max(min_windows, math.ceil((length - window) / hop) + 1)
    return [int(s) for s in np.linspace(0, length - window, count).round()]


def fit_frames(mel: torch.Tensor, frames: int, offset: int | None = None) -> torch.Tensor:
    """Crop or fill (..., n_mels, T) to exactly `frames` along time.

    Longer inputs are cropped at `offset` (centre when None). Shorter ones are repeated
    end to end until they fill the clip: padding with a constant (the log of silence) made
    every short corpus (EmoDB's 2-s clips) recognisable by its padding, and the model
    learnt "padded, so not surprised". The one crop/fill policy of training, evaluation,
    predict and scoring (whose short speech regions first take their surrounding audio).
    """
    length = mel.shape[-1]
    if length > frames:
        start = (length - frames) // 2 if offset is None else min(max(offset, 0),
                                                                   length - frames)
        return mel[..., start:start + frames]
    if length < frames:
        repeats = math.ceil(frames / length)
        return mel.repeat(*([1] * (mel.dim() - 1)), repeats)[..., :frames]
    return mel


# Overlap of the windows cut from an utterance or a call's speech region (a fraction of the clip).
CLIP_OVERLAP = 0.25


def utterance_clips(mel: torch.Tensor, frames: int, overlap: float = CLIP_OVERLAP) -> torch.Tensor:
    """(n_mels, T) -> (k, n_mels, frames): overlapping clips covering the whole utterance.

    Evaluation and predict average the model's probabilities over these clips; an
    utterance longer than a clip gets at least three (start, centre, end): in a 3.5-s
    acted take the speech sits in the middle, and start and end crops alone each cut some
    of it (bundled model, RAVDESS fold 1: UA 47.0 with two clips, 51.8 with three).
    """
    starts = window_starts(mel.shape[-1], frames, overlap, min_windows=3)
    return torch.stack([fit_frames(mel, frames, start) for start in dict.fromkeys(starts)])


# Loud frames: the share of a clip's frames that sets its level (speech, not the pauses).
_LEVEL_QUANTILE = 0.9


def clip_level(mels: torch.Tensor) -> torch.Tensor:
    """Log power of a (..., n_mels, T) clip's loud frames: the 90th percentile of frame
    energy, which ignores pauses."""
    return torch.quantile(torch.logsumexp(mels, dim=-2), _LEVEL_QUANTILE, dim=-1)


def equalize_level(mels: torch.Tensor) -> torch.Tensor:
    """Shift each (n_mels, T) log-mel so that its loud frames sit at 0 (log power).

    Recording level depends on the microphone, the handset, the line's gain control and
    the corpus (RAVDESS's angry takes are 16 dB louder than the same actor's neutral ones:
    benchmarks/level_cue.py), so the model must not read emotion from it. A gain is an
    additive constant in the log-mel domain, which this removes exactly.
    """
    return mels - clip_level(mels)[..., None, None]


def level_relative(mels: torch.Tensor, config: MelConfig,
                   speaker: torch.Tensor | None = None) -> torch.Tensor:
    """Cached log-mels -> log power relative to the clip's level (and with
    config.spectral_mean to each band's speech level in the clip, with config.speaker_mean
    to the speaker's: `speaker`, their profile (speaker_profiles), broadcastable to
    (..., n_mels, 1);
    without one, the clip's own), floored below it.

    With the floor set relative to the loud frames (level_floor_db below them) instead of
    at an absolute power, the input does not depend on the recording's gain at all: a
    gain shifts the cached log-mels and their level by the same constant. An absolute
    floor did not: a quiet take had more bins at the floor than a loud one, so after
    equalisation the quiet and the loud take of one utterance looked different, and on
    RAVDESS quiet reads as neutral.
    """
    if config.equalize_level:
        mels = equalize_level(mels)
    if config.spectral_mean:
        mels = mels - speech_band_mean(mels)
    if config.speaker_mean:
        mels = mels - (speech_band_mean(mels) if speaker is None else speaker)
    if config.level_floor_db is None:
        return mels
    floor = -config.level_floor_db / 10 * math.log(10)
    return torch.logaddexp(mels, torch.tensor(floor, dtype=mels.dtype))


# Frames within this many dB of the clip's level count as speech for speech_band_mean.
_SPEECH_RANGE_DB = 30.0


def speech_band_mean(mels: torch.Tensor) -> torch.Tensor:
    """Each band's mean log power over the clip's speech frames, (..., n_mels, 1).

    A microphone, handset or line colours the spectrum with a fixed filter, a gain per
    band, which in the log-mel domain is an additive constant per band: subtracting this
    mean removes it exactly, as equalize_level removes one gain (the clip-level form of
    cepstral mean normalisation). Pauses are left out, as their bands hold the line's
    noise rather than the filtered voice. It also removes the speaker's mean timbre
    within the clip, and with it some of what separates emotions by spectral tilt;
    benchmarks/ablate.py measures which weighs more on unseen voices.
    """
    energy = torch.logsumexp(mels, dim=-2)  # (..., T)
    floor = clip_level(mels)[..., None] - _SPEECH_RANGE_DB / 10 * math.log(10)
    speech = (energy >= floor).to(mels.dtype)[..., None, :]  # the loud frames at least
    return (mels * speech).sum(dim=-1, keepdim=True) / speech.sum(dim=-1, keepdim=True)


def band_levels(mels: torch.Tensor) -> torch.Tensor:
    """(..., n_mels, T) -> (..., n_mels, 1): each band's speech level relative to the clip's
    level (speech_band_mean of the level-equalised clip); a speaker's profile is their mean.
    """
    return speech_band_mean(equalize_level(mels))


def speaker_profiles(levels: torch.Tensor, speakers: list,
                     reference: tuple[float, ...] | None = None) -> torch.Tensor:
    """Each item's speaker profile, (N, n_mels, 1): the mean band levels of all the items
    of its speaker (`levels`: band_levels of each item, (N, n_mels, 1); `speakers`: one
    hashable id per item: a corpus speaker, a call channel); with a `reference`, drawn
    towards it as prior_profile says.

    Subtracted from each of their clips (MelConfig.speaker_mean) it removes what stays the
    same across their speech: the voice's timbre, and in a call the line's colouring; what
    changes with emotion stays, unlike a clip's own mean (spectral_mean), which removes
    the emotion's spectral tilt with the speaker's. Speaker normalisation is the main lever
    of cross-corpus emotion recognition in the literature (Schuller et al. 2010).
    """
    groups: dict = {}
    for i, speaker in enumerate(speakers):
        groups.setdefault(speaker, []).append(i)
    profiles = torch.empty_like(levels)
    for members in groups.values():
        mine = levels[members]
        profiles[members] = prior_profile(mine.sum(0), len(members), reference)
    return profiles


# How many clips' or utterances' worth of the training speakers' mean profile a scored
# speaker's profile starts from (prior_profile).
PROFILE_PRIOR = 4


def prior_profile(levels_sum: torch.Tensor, count: int,
                  reference: tuple[float, ...] | None) -> torch.Tensor:
    """The mean of `count` clips' band levels (their sum: `levels_sum`, (n_mels, 1)), drawn
    towards the training speakers' mean profile `reference` as if PROFILE_PRIOR more clips
    had it. A speaker heard for one clip so far (live, the first window of a channel) is
    then mostly the average speaker, not that clip's own spectrum, which removes the
    emotion's spectral tilt with the voice's (the per-clip mean lost 19 points on its
    ablation cell); after a minute of speech the speaker's own profile dominates. Without
    a reference (training, which always has a speaker's whole set), the plain mean."""
    if reference is None:
        return levels_sum / count
    prior = torch.tensor(reference, dtype=levels_sum.dtype)[:, None]
    return (levels_sum + PROFILE_PRIOR * prior) / (count + PROFILE_PRIOR)


@dataclass(frozen=True)
class Normalization:
    """Dataset statistics of the log-mel values; inputs become (x - mean) / (2 std) as in AST."""

    mean: float = 0.0
    std: float = 1.0
    # the training speakers' mean profile (speaker_profiles), one value per mel band, for
    # MelConfig.speaker_shift_db; None in folders without it
    speaker_reference: tuple[float, ...] | None = None

    def __post_init__(self):
        if not is_finite_number(self.mean) or not is_finite_number(self.std) or self.std <= 0:
            raise ValueError("normalization needs a finite mean and a finite std > 0, got "
                             f"mean {reprlib.repr(self.mean)}, std {reprlib.repr(self.std)}")
        reference = self.speaker_reference
        if reference is not None:
            if not isinstance(reference, list | tuple) or not all(map(is_finite_number,
                                                                       reference)):
                raise ValueError("normalization's speaker_reference must be a list of finite "
                                 f"numbers, got {reprlib.repr(reference)}")
            object.__setattr__(self, "speaker_reference", tuple(map(float, reference)))

    def speaker_shift(self, profiles: torch.Tensor, config: MelConfig) -> torch.Tensor:
        """What level_relative subtracts for speakers of these profiles (..., n_mels, 1):
        the whole profile, or with config.speaker_shift_db its difference to the reference
        bounded to that many dB per band."""
        if config.speaker_shift_db is None:
            return profiles
        if self.speaker_reference is None or len(self.speaker_reference) != config.n_mels:
            raise ValueError(f"speaker_shift_db needs a speaker_reference of {config.n_mels} "
                             "bands in the normalisation")
        limit = config.speaker_shift_db / 10 * math.log(10)
        reference = torch.tensor(self.speaker_reference, dtype=profiles.dtype)[:, None]
        return (profiles - reference).clamp(-limit, limit)

    def apply(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mean) / (2.0 * self.std)

    @classmethod
    def fit(cls, mels: list[torch.Tensor] | list[np.ndarray], config: MelConfig,
            speakers: torch.Tensor | list[torch.Tensor] | None = None) -> Normalization:
        """Statistics of the log-mels as the model sees them (relative to the clip level,
        and with config.speaker_mean to each one's speaker profile in `speakers`, whose
        mean becomes the speaker_reference)."""
        reference = None
        if config.speaker_mean and speakers is not None and len(speakers):
            reference = tuple(torch.stack(list(speakers)).mean(0).flatten().tolist())
        shifted = cls(speaker_reference=reference)
        total = count = square = 0.0
        for i, m in enumerate(mels):
            m = torch.as_tensor(m, dtype=torch.float32)
            if config.frontend == WAVEFORM:
                t = standardized_waveform(m).double()
            else:  # the log-mel's statistics; prosody rows are normalised already
                speaker = None if speakers is None else shifted.speaker_shift(speakers[i],
                                                                              config)
                t = level_relative(m[..., :config.n_mels, :], config, speaker).double()
            total += float(t.sum())
            square += float(t.square().sum())
            count += t.numel()
        if count == 0:
            raise ValueError("cannot fit normalisation statistics on no data")
        mean = total / count
        std = math.sqrt(max(square / count - mean * mean, 1e-12))
        return cls(mean=mean, std=std, speaker_reference=reference)


def model_input(mels: torch.Tensor, config: MelConfig, norm: Normalization,
                speakers: torch.Tensor | None = None) -> torch.Tensor:
    """(B, rows, frames) log-mels (and prosody rows) of exactly input_frames -> model input
    (B, 1, rows, frames); with the waveform frontend, (B, hop_length, frames) framed
    samples -> (B, samples). Only the log-mel rows are taken relative to the clip's level
    and normalised: periodicity lies in [-1, 1] whatever the gain.

    The one place where features become model input, for training, evaluation and scoring.
    `speakers`: (B, n_mels, 1), each clip's speaker profile, for a config with speaker_mean
    (without them each clip is its own speaker).
    """
    if mels.shape[-1] != config.input_frames or mels.shape[-2] != config.rows:
        raise ValueError(f"expected (B, {config.rows}, {config.input_frames}) "
                         f"{config.frontend} features, got {tuple(mels.shape)}")
    if config.frontend == WAVEFORM:
        return norm.apply(standardized_waveform(mels))
    if speakers is not None and tuple(speakers.shape) != (*mels.shape[:-1], 1):
        raise ValueError(f"expected speaker profiles of shape {(*mels.shape[:-1], 1)}, got "
                         f"{tuple(speakers.shape)}")
    if config.speaker_mean:
        speakers = norm.speaker_shift(band_levels(mels) if speakers is None else speakers,
                                      config)
    mels, prosody = mels.split([config.n_mels, config.prosody_rows], dim=-2)
    mels = norm.apply(level_relative(mels, config, speakers))
    return torch.cat([mels, prosody], dim=-2).unsqueeze(1)
