"""A waveform-domain simulation of the telephone / call channel.

Why: the model is trained on studio recordings (RAVDESS, EmoDB) but scores call-center
audio, which reached us through a room, a handset, a band-limited line and a speech
codec. This module reproduces that path on clean waveforms, so it serves twice:

* training augmentation: `ChannelConfig.draw` picks a random `PhoneLine` per example;
* evaluation: `CONDITIONS` are fixed, named channels, including ``unseen_*`` conditions
  that lie outside every range the default `ChannelConfig` draws from, so a report can
  tell robustness inside the training distribution from robustness beyond it.

Waveforms are float32 mono numpy arrays in [-1, 1]; the output always has the input's
length and rate, stays time-aligned with the input (no filter, resampler or codec delay
is left in it) and is a pure function of (waveform, rng).

Order of the stages (`PhoneLine.apply`), talker's side first, then the handset and line:

1. reverb: the room between talker and microphone (a room impulse response, RIR);
2. noise: background noise (white, pink or babble) picked up in the same room, at a given
   SNR relative to the reverberant speech;
3. gain: the handset / ADC level (a real gain on the waveform);
4. band limits: high-pass and low-pass, 4th-order Butterworth run forward and backward
   (`scipy.signal.sosfiltfilt`): zero phase, so nothing shifts in time; the magnitude is
   the square of the 4th-order one (-6 dB at the cut-off, 48 dB/octave beyond it);
5. narrowband: resampling to 8 kHz (soxr, high quality, delay-compensated) and later back;
6. codec: a real encode/decode through libsndfile (soundfile) in memory;
7. back to the input rate, length fixed to the input's, clip to [-1, 1].

The signal is also clipped to [-1, 1] right before the codec (the ADC's full scale; the
codecs cannot represent more), and at the very end (filters and codecs overshoot).

Codecs (`CODECS`):

* ``ulaw`` / ``alaw``: G.711 (WAV ULAW / ALAW), an 8 kHz codec: the signal is resampled to
  8 kHz for it whether or not `narrowband` is set. Round-trip SNR on speech at a normal
  level: about 37 dB (measured, both laws).
* ``gsm``: GSM 06.10 full rate (WAV GSM610, 8 kHz, 13 kbit/s), also run at 8 kHz; about
  12 dB waveform SNR on speech (a vocoder-like codec, not a waveform coder). The decoder
  pads to whole 160-sample frames; the padding is cut.
* ``opus``: Ogg Opus, encoded at the current rate when libsndfile accepts it (8, 12, 16, 24
  or 48 kHz; other rates go through 48 kHz). libsndfile 1.2.2 exposes the bitrate only
  as the "compression level" q in [0, 1], mapped linearly to a target bitrate of
  ``int((1 - q) * 250000 + 6000)`` bit/s per channel (ogg_opus.c), so any target in
  [6, 256] kbit/s can be set to the bit/s (`opus_compression_level`); 6 kbit/s (q = 1) is
  the lowest. libopus runs in (unconstrained) VBR mode; soundfile's `bitrate_mode` is
  refused by libsndfile for Opus. Measured on 19 s of continuous speech (RAVDESS, pauses
  removed), file size -> kbit/s, 8 and 16 kHz alike: target 6 -> 6.5, 8 -> 8.5,
  12 -> 12.6, 16 -> 16.6, 24 -> 24.6-25.0 (about 0.5 kbit/s above the target: Ogg
  framing); over pauses VBR spends less. The decoder drops Opus's pre-skip itself, so
  the decoded signal is already aligned (lag 0).

Noise (`snr_db`) is scaled against the *active-speech* power of the (reverberant) signal,
not its overall power, so pauses do not make a clip look quieter than it sounds:
`active_power` splits the signal into 20 ms frames and averages the power of the frames
within 30 dB of the 95th-percentile frame power. The noise's power is its mean power over
the whole clip (noise is continuous). White noise is flat; pink noise has a 1/f power
spectrum from 20 Hz to the Nyquist frequency (nothing below 20 Hz, where 1/f noise would
put inaudible power); babble is a caller-supplied waveform of other talkers
(`make_babble`), taken at a random offset and looped when shorter than the clip.

Reverb: `room_impulse_response` builds a shoebox room with pyroomacoustics (random
dimensions 3-9 x 2.5-7 x 2.4-3.6 m, talker and microphone at random places 0.5-3 m
apart), wall absorption from Sabine's formula (`pyroomacoustics.inverse_sabine`) for the
asked RT60. The image-source model is run only up to the order that is complete for the
first 80 ms (at most the order inverse_sabine asks for), which keeps one RIR to a few tens
of milliseconds even for RT60 = 1.4 s, where the full order would take about 9 s; the late
reverberation after 80 ms is an exponentially decaying Gaussian tail with exactly the
asked RT60, level-matched to the image-source response just before the joint (the usual
hybrid of early reflections and a statistical late tail). The RIR is scaled to unit
energy (the level stays about the same) and applied so that its direct path lands at lag
0. RIRs are cached per (RT60 rounded to 20 ms, sample rate, room); `apply` picks one of
`ROOMS` rooms with its rng, so training reuses a bounded set of RIRs.

Training ranges (`ChannelConfig` defaults), each drawn per example:

* gain_db uniform in [-20, 20] dB, always;
* with probability 0.8 band limits: high-pass uniform in [0, 400] Hz (below 50 Hz: none),
  low-pass uniform in [3200, 8000] Hz (at or above 0.95 x Nyquist: none);
* with probability 0.5 narrowband (8 kHz);
* with probability 0.6 a codec, uniformly one of ulaw, alaw, gsm, opus; opus at a target
  bitrate uniform in [6, 16] kbit/s;
* with probability 0.6 noise, SNR uniform in [5, 30] dB: babble with probability 0.4 when
  babble is available, else white or pink with equal probability;
* with probability 0.3 reverb, RT60 uniform in [0.2, 0.8] s.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

CODECS = ("ulaw", "alaw", "gsm", "opus")
NOISES = ("white", "pink", "babble")

NARROWBAND_RATE = 8000  # telephone band: G.711 and GSM 06.10 are 8 kHz codecs
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the rates libsndfile's Opus accepts
OPUS_KBPS_RANGE = (6.0, 256.0)  # what libsndfile's compression level can ask for
FILTER_ORDER = 4  # Butterworth order of each pass (run forward and backward)

ACTIVE_FRAME_S = 0.02  # frames for the active-speech power
ACTIVE_RANGE_DB = 30.0  # active frames: within this of the reference frame power
ACTIVE_REFERENCE_PERCENTILE = 95.0
PINK_LOW_HZ = 20.0

ROOMS = 16  # rooms `apply` picks from (per RT60), so RIRs are cached and reused
RT60_STEP_S = 0.02  # RIRs are cached per RT60 rounded to this
EARLY_S = 0.08  # image-source part of the RIR; a statistical tail follows
CROSSFADE_S = 0.005
MATCH_WINDOW_S = 0.02  # where the tail's level is matched to the image sources


# --- helpers -------------------------------------------------------------------------


def _resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return x
    return soxr.resample(np.ascontiguousarray(x, dtype=np.float64), rate_in, rate_out)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def active_power(waveform: np.ndarray, sample_rate: int) -> float:
    """Active-speech power: the mean power of the 20 ms frames whose power is within 30 dB
    of the 95th-percentile frame power (pauses do not count). Signals shorter than one
    frame use their whole mean power; a silent signal gives 0."""
    x = np.asarray(waveform, dtype=np.float64)
    if x.size == 0:
        return 0.0
    frame = max(1, int(round(ACTIVE_FRAME_S * sample_rate)))
    count = len(x) // frame
    if count == 0:
        return float(np.mean(x**2))
    powers = np.mean(x[: count * frame].reshape(count, frame) ** 2, axis=1)
    reference = np.percentile(powers, ACTIVE_REFERENCE_PERCENTILE)
    if reference <= 0:
        return float(np.mean(x**2))
    active = powers[powers >= reference * 10 ** (-ACTIVE_RANGE_DB / 10)]
    return float(np.mean(active))


def pink_noise(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum from 20 Hz to Nyquist, unit power."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    shape = np.zeros_like(freqs)
    band = freqs >= PINK_LOW_HZ
    shape[band] = 1.0 / np.sqrt(freqs[band])
    noise = np.fft.irfft(spectrum * shape, n)
    power = float(np.mean(noise**2))
    return noise / math.sqrt(power) if power > 0 else noise


def opus_compression_level(kbps: float) -> float:
    """libsndfile's compression level for an Opus target bitrate (mono): libsndfile 1.2.2
    sets ``int((1 - level) * 250000 + 6000)`` bit/s; the half bit/s keeps the truncation
    from landing one below the target."""
    low, high = OPUS_KBPS_RANGE
    if not low <= kbps <= high:
        raise ValueError(f"opus_kbps must lie in [{low:g}, {high:g}] (libsndfile), got {kbps}")
    return float(min(1.0, max(0.0, 1.0 - (kbps * 1000.0 - 6000.0 + 0.5) / 250000.0)))


_CODEC_FORMATS = {"ulaw": ("WAV", "ULAW"), "alaw": ("WAV", "ALAW"),
                  "gsm": ("WAV", "GSM610"), "opus": ("OGG", "OPUS")}


def codec_rate(codec: str, sample_rate: int) -> int:
    """The rate `codec` runs at when the signal arrives at `sample_rate`."""
    if codec == "opus":
        if sample_rate in OPUS_RATES:
            return sample_rate
        return next((r for r in OPUS_RATES if r >= sample_rate), OPUS_RATES[-1])
    return NARROWBAND_RATE


def codec_encode(waveform: np.ndarray, sample_rate: int, codec: str,
                 opus_kbps: float = 12.0) -> bytes:
    """The encoded file (in memory) of `waveform`, which must already be at a rate the codec
    takes (`codec_rate`). Values are clipped to [-1, 1] first."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    if codec_rate(codec, sample_rate) != sample_rate:
        raise ValueError(f"{codec} does not run at {sample_rate} Hz")
    fmt, subtype = _CODEC_FORMATS[codec]
    extra = {"compression_level": opus_compression_level(opus_kbps)} if codec == "opus" else {}
    buffer = io.BytesIO()
    data = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)
    sf.write(buffer, data, sample_rate, format=fmt, subtype=subtype, **extra)
    return buffer.getvalue()


def codec_decode(data: bytes) -> np.ndarray:
    """What codec_encode wrote, decoded at its own rate."""
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
    return decoded


def codec_roundtrip(waveform: np.ndarray, sample_rate: int, codec: str,
                    opus_kbps: float = 12.0) -> tuple[np.ndarray, int]:
    """Encode and decode through the real codec; returns (decoded, rate) where rate is the
    codec's rate (`codec_rate`) and the decoded length matches the input's at that rate."""
    rate = codec_rate(codec, sample_rate)
    x = _resample(np.asarray(waveform, dtype=np.float64), sample_rate, rate)
    y = codec_decode(codec_encode(x, rate, codec, opus_kbps)).astype(np.float64)
    return _fit_length(y, len(x)), rate


# --- room impulse responses ----------------------------------------------------------


def _room_geometry(rng: np.random.Generator) -> tuple[list[float], list[float], list[float]]:
    dims = [float(rng.uniform(3.0, 9.0)), float(rng.uniform(2.5, 7.0)),
            float(rng.uniform(2.4, 3.6))]
    margin = 0.5
    for _ in range(1000):
        source = [float(rng.uniform(margin, d - margin)) for d in dims]
        mic = [float(rng.uniform(margin, d - margin)) for d in dims]
        distance = math.dist(source, mic)
        if 0.5 <= distance <= 3.0:
            break
    return dims, source, mic


@functools.lru_cache(maxsize=512)
def _cached_rir(rt60_s: float, sample_rate: int, room: int) -> tuple[np.ndarray, int]:
    import pyroomacoustics as pra  # slow to import (about 1 s); only reverb needs it

    rng = np.random.default_rng([room, 20240917])
    dims, source, mic = _room_geometry(rng)
    c = float(pra.constants.get("c"))
    while True:
        try:
            absorption, max_order = pra.inverse_sabine(rt60_s, dims)
            break
        except ValueError:  # too large a room for so short an RT60: shrink it
            scale = 0.8
            dims, source, mic = ([d * scale for d in dims], [p * scale for p in source],
                                 [p * scale for p in mic])
    # images up to order K hold every path shorter than (K + 1) * min_r (pyroomacoustics'
    # own bound, inverse of inverse_sabine's max_order)
    min_r = min(a * b / math.hypot(a, b) for a, b in ((dims[0], dims[1]), (dims[0], dims[2]),
                                                     (dims[1], dims[2])))
    order = max(1, min(max_order, math.ceil(c * EARLY_S / min_r - 1)))
    pra_room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption),
                           max_order=order)
    pra_room.add_source(source)
    pra_room.add_microphone(mic)
    pra_room.compute_rir()
    early = np.asarray(pra_room.rir[0][0], dtype=np.float64)
    lead = (int(pra.constants.get("frac_delay_length")) - 1) // 2  # index of time 0

    complete_s = min((order + 1) * min_r / c, EARLY_S)
    joint = lead + int(round(complete_s * sample_rate))
    length = lead + int(math.ceil(1.2 * rt60_s * sample_rate)) + 1
    # the direct path's sample, from the geometry (the largest sample can be a reflection
    # that happens to fall on a whole sample while the direct path is split over two)
    direct = lead + int(round(math.dist(source, mic) / c * sample_rate))
    window = max(1, int(round(MATCH_WINDOW_S * sample_rate)))
    fade = max(1, int(round(CROSSFADE_S * sample_rate)))
    if joint - window - fade <= direct or joint >= length:
        h = _fit_length(early, length)  # the image sources reach the tail: no joint needed
    else:
        t = (np.arange(length) - lead) / sample_rate
        tail = rng.standard_normal(length) * 10.0 ** (-3.0 * t / rt60_s)  # -60 dB at RT60
        match = slice(joint - fade - window, joint - fade)
        early_energy = float(np.sum(_fit_length(early, length)[match] ** 2))
        tail_energy = float(np.sum(tail[match] ** 2))
        tail *= math.sqrt(early_energy / tail_energy) if tail_energy > 0 else 0.0
        ramp = np.clip((np.arange(length) - (joint - fade)) / fade, 0.0, 1.0)
        h = _fit_length(early, length) * (1.0 - ramp) + tail * ramp
    # pyroomacoustics high-passes the RIR at 10 Hz forward and backward, which smears a
    # little low-frequency energy to before the direct sound; keep the response causal
    # (the direct path's own fractional-delay filter, `lead` samples each side, stays)
    h[: max(0, direct - lead)] = 0.0
    end_fade = min(len(h), int(round(0.01 * sample_rate)))
    h[len(h) - end_fade:] *= np.linspace(1.0, 0.0, end_fade)
    h /= math.sqrt(float(np.sum(h**2)))
    h = h.astype(np.float32)
    h.setflags(write=False)
    return h, direct


def _rt60_key(rt60_s: float) -> float:
    return round(max(RT60_STEP_S, round(rt60_s / RT60_STEP_S) * RT60_STEP_S), 6)


def room_impulse_response(rt60_s: float, sample_rate: int, room: int = 0) -> np.ndarray:
    """The (read-only, cached) unit-energy RIR of room number `room` for `rt60_s` rounded to
    20 ms; index 0 is the moment of emission (the direct path follows after its delay)."""
    return _cached_rir(_rt60_key(rt60_s), int(sample_rate), int(room))[0]


def reverberate(waveform: np.ndarray, sample_rate: int, rt60_s: float,
                room: int = 0) -> np.ndarray:
    """Convolve with the room's RIR, its direct path at lag 0; same length as the input."""
    h, direct = _cached_rir(_rt60_key(rt60_s), int(sample_rate), int(room))
    x = np.asarray(waveform, dtype=np.float64)
    wet = signal.oaconvolve(x, h.astype(np.float64))
    return _fit_length(wet[direct:], len(x))


# --- babble ---------------------------------------------------------------------------


def make_babble(waveforms: list[np.ndarray], sample_rate: int, rng: np.random.Generator,
                seconds: float = 10.0, talkers: int = 5) -> np.ndarray:
    """Babble: the sum of `talkers` randomly chosen utterances (without repeats when there
    are enough), each scaled to unit active-speech power and looped from a random offset
    to fill `seconds`. Returned at -20 dBFS active level (peak at most 0.99), float32."""
    if not waveforms:
        raise ValueError("make_babble needs at least one waveform")
    if talkers < 1 or seconds <= 0:
        raise ValueError("make_babble needs talkers >= 1 and seconds > 0")
    total = int(round(seconds * sample_rate))
    replace = len(waveforms) < talkers
    chosen = rng.choice(len(waveforms), size=talkers, replace=replace)
    mix = np.zeros(total)
    used = 0
    for index in chosen:
        w = np.asarray(waveforms[int(index)], dtype=np.float64).ravel()
        power = active_power(w, sample_rate)
        if w.size == 0 or power <= 0:
            continue
        offset = int(rng.integers(len(w)))
        mix += np.take(w, (offset + np.arange(total)) % len(w)) / math.sqrt(power)
        used += 1
    if used == 0:
        raise ValueError("make_babble: every chosen waveform is silent")
    mix *= 0.1 / math.sqrt(active_power(mix, sample_rate))
    peak = float(np.max(np.abs(mix)))
    if peak > 0.99:
        mix *= 0.99 / peak
    return mix.astype(np.float32)


# --- the channel ----------------------------------------------------------------------


@dataclass(frozen=True)
class PhoneLine:
    """One simulated phone line, from the talker's room to the codec, every field fixed.
    None / 0 / False means the stage is off."""

    gain_db: float = 0.0  # real gain on the waveform (after reverb and noise)
    highpass_hz: float | None = None  # e.g. 300
    lowpass_hz: float | None = None  # e.g. 3400; skipped at or above 0.95 x Nyquist
    narrowband: bool = False  # resample to 8 kHz and back (soxr)
    codec: str | None = None  # one of CODECS
    opus_kbps: float = 12.0  # Opus target bitrate, [6, 256] kbit/s (VBR)
    noise: str | None = None  # "white" | "pink" | "babble"
    snr_db: float = 20.0  # noise SNR against the active-speech power (`active_power`)
    rt60_s: float | None = None  # reverberation time of the room

    def __post_init__(self) -> None:
        if self.codec is not None and self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; known: {', '.join(CODECS)}")
        if self.noise is not None and self.noise not in NOISES:
            raise ValueError(f"unknown noise {self.noise!r}; known: {', '.join(NOISES)}")
        low, high = OPUS_KBPS_RANGE
        if not low <= self.opus_kbps <= high:
            raise ValueError(f"opus_kbps must lie in [{low:g}, {high:g}], got {self.opus_kbps}")
        if self.highpass_hz is not None and self.highpass_hz <= 0:
            raise ValueError(f"highpass_hz must be positive (or None), got {self.highpass_hz}")
        if self.lowpass_hz is not None and self.lowpass_hz <= 0:
            raise ValueError(f"lowpass_hz must be positive (or None), got {self.lowpass_hz}")
        if (self.highpass_hz is not None and self.lowpass_hz is not None
                and self.highpass_hz >= self.lowpass_hz):
            raise ValueError(f"highpass_hz ({self.highpass_hz}) must lie below lowpass_hz "
                             f"({self.lowpass_hz})")
        if self.rt60_s is not None and self.rt60_s <= 0:
            raise ValueError(f"rt60_s must be positive (or None), got {self.rt60_s}")

    def apply(self, waveform: np.ndarray, sample_rate: int, rng: np.random.Generator,
              babble: np.ndarray | None = None) -> np.ndarray:
        """The waveform after this channel: float32, same length, clipped to [-1, 1].

        Order: reverb -> noise -> gain -> high-pass / low-pass -> 8 kHz -> codec -> back to
        `sample_rate` -> clip. Room and background noise belong to the talker's side; the
        handset and line (level, band-pass, 8 kHz, codec) come after. `rng` picks the room
        and the noise (and the babble offset); `babble` (other talkers at `sample_rate`,
        see `make_babble`) is needed when noise == "babble"."""
        x = np.asarray(waveform)
        if x.ndim != 1:
            raise ValueError(f"PhoneLine.apply takes a mono 1-D waveform, got shape {x.shape}")
        n = len(x)
        if n == 0:
            return x.astype(np.float32)
        if self.noise == "babble" and babble is None:
            raise ValueError("noise='babble' needs a babble waveform: pass babble= (other "
                             "talkers at the same sample rate, e.g. from make_babble())")
        y = x.astype(np.float64)
        if self.rt60_s:
            y = reverberate(y, sample_rate, self.rt60_s, room=int(rng.integers(ROOMS)))
        if self.noise is not None:
            y = y + self._noise(y, sample_rate, rng, babble)
        if self.gain_db:
            y = y * 10.0 ** (self.gain_db / 20.0)
        nyquist = sample_rate / 2.0
        if self.highpass_hz is not None:
            if self.highpass_hz >= 0.95 * nyquist:
                raise ValueError(f"highpass_hz {self.highpass_hz} is too close to the Nyquist "
                                 f"frequency at {sample_rate} Hz")
            y = _filter(y, self.highpass_hz, "highpass", sample_rate)
        if self.lowpass_hz is not None and self.lowpass_hz < 0.95 * nyquist:
            y = _filter(y, self.lowpass_hz, "lowpass", sample_rate)
        rate = sample_rate
        if self.narrowband and sample_rate > NARROWBAND_RATE:
            y = _resample(y, sample_rate, NARROWBAND_RATE)
            rate = NARROWBAND_RATE
        if self.codec is not None:
            y, rate = codec_roundtrip(np.clip(y, -1.0, 1.0), rate, self.codec, self.opus_kbps)
        y = _fit_length(_resample(y, rate, sample_rate), n)
        return np.clip(y, -1.0, 1.0).astype(np.float32)

    def _noise(self, speech: np.ndarray, sample_rate: int, rng: np.random.Generator,
               babble: np.ndarray | None) -> np.ndarray:
        n = len(speech)
        if self.noise == "white":
            noise = rng.standard_normal(n)
        elif self.noise == "pink":
            noise = pink_noise(n, sample_rate, rng)
        else:
            source = np.asarray(babble, dtype=np.float64).ravel()
            if source.size == 0:
                raise ValueError("babble waveform is empty")
            offset = int(rng.integers(len(source)))
            noise = np.take(source, (offset + np.arange(n)) % len(source))
        noise_power = float(np.mean(noise**2))
        if noise_power <= 0:
            raise ValueError(f"{self.noise} noise is silent; cannot set an SNR")
        target = active_power(speech, sample_rate) / 10.0 ** (self.snr_db / 10.0)
        return noise * math.sqrt(target / noise_power)

    def describe(self) -> dict[str, Any]:
        """The fields as a plain JSON-able dict."""
        return {key: (value.item() if isinstance(value, np.generic) else value)
                for key, value in dataclasses.asdict(self).items()}


def _filter(x: np.ndarray, cutoff: float, kind: str, sample_rate: int) -> np.ndarray:
    sos = signal.butter(FILTER_ORDER, cutoff, btype=kind, fs=sample_rate, output="sos")
    padlen = min(len(x) - 1, 3 * (2 * len(sos) + 1))
    if padlen < 1:
        return x
    return signal.sosfiltfilt(sos, x, padlen=padlen)


# --- random channels for training -----------------------------------------------------


@dataclass(frozen=True)
class ChannelConfig:
    """Ranges for drawing a random PhoneLine per training example (see the module docstring).
    Ranges are (low, high), drawn uniformly; p_* are probabilities of a stage being on."""

    gain_db: tuple[float, float] = (-20.0, 20.0)
    p_bandlimit: float = 0.8
    highpass_hz: tuple[float, float] = (0.0, 400.0)  # a draw below 50 Hz means no high-pass
    lowpass_hz: tuple[float, float] = (3200.0, 8000.0)  # >= 0.95 x Nyquist means no low-pass
    p_narrowband: float = 0.5
    p_codec: float = 0.6  # then uniformly one of CODECS
    opus_kbps: tuple[float, float] = (6.0, 16.0)  # libsndfile can set 6 to 256
    p_noise: float = 0.6
    p_babble: float = 0.4  # share of noisy examples whose noise is babble (when available)
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_reverb: float = 0.3
    rt60_s: tuple[float, float] = (0.2, 0.8)

    HIGHPASS_OFF_HZ = 50.0  # class constants, not fields
    LOWPASS_OFF_NYQUIST = 0.95

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_"):
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name} must lie in [0, 1], got {value}")
            elif len(value) != 2 or value[0] > value[1]:
                raise ValueError(f"{f.name} must be a (low, high) pair, got {value}")
        low, high = OPUS_KBPS_RANGE
        if not low <= self.opus_kbps[0] <= self.opus_kbps[1] <= high:
            raise ValueError(f"opus_kbps must lie in [{low:g}, {high:g}], got {self.opus_kbps}")
        if self.rt60_s[0] <= 0:
            raise ValueError(f"rt60_s must be positive, got {self.rt60_s}")

    def draw(self, rng: np.random.Generator, babble_available: bool = True,
             sample_rate: int = 16000) -> PhoneLine:
        """A random PhoneLine; `sample_rate` only decides when a low-pass is "none"."""
        gain = float(rng.uniform(*self.gain_db))
        highpass = lowpass = None
        if rng.random() < self.p_bandlimit:
            hp = float(rng.uniform(*self.highpass_hz))
            lp = float(rng.uniform(*self.lowpass_hz))
            highpass = hp if hp >= self.HIGHPASS_OFF_HZ else None
            lowpass = lp if lp < self.LOWPASS_OFF_NYQUIST * sample_rate / 2 else None
        narrowband = bool(rng.random() < self.p_narrowband)
        codec, opus_kbps = None, PhoneLine.opus_kbps
        if rng.random() < self.p_codec:
            codec = CODECS[int(rng.integers(len(CODECS)))]
            if codec == "opus":
                opus_kbps = float(rng.uniform(*self.opus_kbps))
        noise, snr = None, PhoneLine.snr_db
        if rng.random() < self.p_noise:
            if babble_available and rng.random() < self.p_babble:
                noise = "babble"
            else:
                noise = ("white", "pink")[int(rng.integers(2))]
            snr = float(rng.uniform(*self.snr_db))
        rt60 = float(rng.uniform(*self.rt60_s)) if rng.random() < self.p_reverb else None
        return PhoneLine(gain_db=gain, highpass_hz=highpass, lowpass_hz=lowpass,
                       narrowband=narrowband, codec=codec, opus_kbps=opus_kbps, noise=noise,
                       snr_db=snr, rt60_s=rt60)

    def out_of_range(self, channel: PhoneLine) -> list[str]:
        """The fields of `channel` that `draw` could never produce (empty: a seen channel)."""

        def outside(value: float, bounds: tuple[float, float]) -> bool:
            return not bounds[0] <= value <= bounds[1]

        out = []
        if outside(channel.gain_db, self.gain_db):
            out.append("gain_db")
        if channel.highpass_hz is not None and (
                self.p_bandlimit == 0 or channel.highpass_hz < self.HIGHPASS_OFF_HZ
                or outside(channel.highpass_hz, self.highpass_hz)):
            out.append("highpass_hz")
        if channel.lowpass_hz is not None and (
                self.p_bandlimit == 0 or outside(channel.lowpass_hz, self.lowpass_hz)):
            out.append("lowpass_hz")
        if channel.narrowband and self.p_narrowband == 0:
            out.append("narrowband")
        if channel.codec is not None and self.p_codec == 0:
            out.append("codec")
        if channel.codec == "opus" and outside(channel.opus_kbps, self.opus_kbps):
            out.append("opus_kbps")
        if channel.noise is not None:
            if self.p_noise == 0 or (channel.noise == "babble" and self.p_babble == 0):
                out.append("noise")
            if outside(channel.snr_db, self.snr_db):
                out.append("snr_db")
        if channel.rt60_s is not None and (self.p_reverb == 0
                                           or outside(channel.rt60_s, self.rt60_s)):
            out.append("rt60_s")
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelConfig:
        """From a plain dict (e.g. parsed JSON): unknown keys are an error, lists -> tuples."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown ChannelConfig keys {unknown}; known: {', '.join(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def key(self) -> str:
        """Stable JSON text of every field, for cache keys."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


# --- named evaluation conditions ------------------------------------------------------

CONDITIONS: dict[str, PhoneLine] = {
    "clean": PhoneLine(),
    "telephone": PhoneLine(highpass_hz=300.0, lowpass_hz=3400.0, narrowband=True, codec="ulaw"),
    "ulaw": PhoneLine(codec="ulaw"),
    "alaw": PhoneLine(codec="alaw"),
    "gsm": PhoneLine(codec="gsm"),
    "opus": PhoneLine(narrowband=True, codec="opus", opus_kbps=OPUS_KBPS_RANGE[0]),
    "noise_snr20": PhoneLine(noise="pink", snr_db=20.0),
    "noise_snr10": PhoneLine(noise="pink", snr_db=10.0),
    "noise_snr5": PhoneLine(noise="pink", snr_db=5.0),
    "babble_snr10": PhoneLine(noise="babble", snr_db=10.0),
    "reverb": PhoneLine(rt60_s=0.6),
    "gain_plus20": PhoneLine(gain_db=20.0),
    "gain_minus20": PhoneLine(gain_db=-20.0),
    # outside every range ChannelConfig() draws from
    "unseen_narrow": PhoneLine(highpass_hz=500.0, lowpass_hz=2600.0, narrowband=True,
                             codec="gsm"),
    "unseen_noise_snr0": PhoneLine(noise="pink", snr_db=0.0),
    "unseen_reverb": PhoneLine(rt60_s=1.4),
}


def condition_line(name: str) -> PhoneLine:
    """The line of a named evaluation condition (CONDITIONS)."""
    try:
        return CONDITIONS[name]
    except KeyError:
        raise ValueError(f"unknown channel condition {name!r}; known: "
                         f"{', '.join(CONDITIONS)}") from None
