"""training/channel.py: the simulated call channel, measured on real signals and real codecs
(libsndfile's G.711, GSM 06.10 and Opus, pyroomacoustics rooms); nothing is mocked."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
from conftest import shared_path
from scipy import signal

from callmood.training.channel import (
    CODECS,
    CONDITIONS,
    ChannelConfig,
    PhoneLine,
    codec_encode,
    condition_line,
    make_babble,
    opus_compression_level,
    room_impulse_response,
)

SR = 16000


# --- signals --------------------------------------------------------------------------


def tone(freq: float, seconds: float = 1.0, amplitude: float = 0.25,
         sample_rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speech_like(seconds: float = 1.0, sample_rate: int = SR, seed: int = 0) -> np.ndarray:
    """A voiced-speech stand-in: a 120-220 Hz harmonic series with falling partials, a
    syllable-rate envelope and a little breath noise (for tests that need no real speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 170 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20) if k * 220 < sample_rate / 2)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    x = voiced * envelope + 0.05 * rng.standard_normal(len(t))
    return (0.4 * x / np.max(np.abs(x))).astype(np.float32)


def level_db(y: np.ndarray, x: np.ndarray) -> float:
    """Level of y relative to x in dB, over the middle half (no filter edge effects)."""
    middle = slice(len(x) // 4, 3 * len(x) // 4)
    ry = np.sqrt(np.mean(y[middle].astype(np.float64) ** 2))
    rx = np.sqrt(np.mean(x[middle].astype(np.float64) ** 2))
    return float(20 * np.log10(max(ry, 1e-12) / rx))


def snr_db(y: np.ndarray, reference: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((y.astype(np.float64) - ref) ** 2)))


def lag(y: np.ndarray, x: np.ndarray) -> int:
    """The lag (samples, positive: y later) maximising the cross-correlation."""
    c = signal.correlate(y.astype(np.float64), x.astype(np.float64), mode="full",
                         method="fft")
    return int(np.argmax(c)) - (len(x) - 1)


def speech_active_power(x: np.ndarray, sample_rate: int = SR) -> float:
    """The documented definition, written out again: mean power of the 20 ms frames within
    30 dB of the 95th-percentile frame power."""
    frame = sample_rate // 50
    frames = x[: len(x) // frame * frame].astype(np.float64).reshape(-1, frame)
    power = np.mean(frames**2, axis=1)
    keep = power >= np.percentile(power, 95) / 1000
    return float(np.mean(power[keep]))


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    """Eight real RAVDESS utterances (16 kHz), each scaled to a 0.5 peak."""
    folder = shared_path() / "data" / "ravdess" / "Actor_01"
    files = sorted(folder.glob("*.flac"))[:8]
    if not files:
        pytest.skip(f"no RAVDESS speech under {folder}")
    out = []
    for path in files:
        x, rate = sf.read(path, dtype="float32")
        assert rate == SR and x.ndim == 1
        out.append((0.5 * x / np.max(np.abs(x))).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def utterance(speech) -> np.ndarray:
    return speech[0]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- band limits ----------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "passed", "stopped", "stop_db"), [
    (PhoneLine(highpass_hz=300.0), [1000.0, 3000.0], [100.0], -15.0),
    (PhoneLine(lowpass_hz=3400.0), [300.0, 1000.0], [5000.0, 7000.0], -15.0),
    (PhoneLine(narrowband=True), [300.0, 1000.0, 3400.0], [4300.0, 5000.0, 7000.0], -30.0),
], ids=["highpass300", "lowpass3400", "narrowband"])
def test_band_edges(channel, passed, stopped, stop_db):
    for freq in passed:
        x = tone(freq)
        y = channel.apply(x, SR, rng())
        assert level_db(y, x) > -1.0, freq
        assert lag(y, x) == 0
    for freq in stopped:
        x = tone(freq)
        assert level_db(channel.apply(x, SR, rng()), x) < stop_db, freq


def test_band_edges_on_white_noise():
    """The same limits as a transfer function estimated from white noise (H = Pxy / Pxx)."""
    x = (0.1 * rng(1).standard_normal(4 * SR)).astype(np.float32)
    y = PhoneLine(highpass_hz=300.0, lowpass_hz=3400.0).apply(x, SR, rng())
    freqs, pxx = signal.welch(x, SR, nperseg=2048)
    _, pxy = signal.csd(x, y, SR, nperseg=2048)
    gain = 20 * np.log10(np.abs(pxy / pxx))

    def at(f):
        return gain[np.argmin(np.abs(freqs - f))]

    assert at(100) < -15 and at(5000) < -15
    assert abs(at(1000)) < 1.0
    assert at(300) == pytest.approx(-6.0, abs=0.5)  # forward-backward: -3 dB twice


# --- codecs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "low", "high"), [
    ("ulaw", 30.0, 42.0), ("alaw", 30.0, 42.0), ("gsm", 6.0, 20.0)])
def test_codec_round_trip_snr(utterance, codec, low, high):
    """G.711 and GSM 06.10 run at 8 kHz, so the reference is the 8 kHz round trip alone."""
    x = utterance
    narrow = PhoneLine(narrowband=True).apply(x, SR, rng())
    y = PhoneLine(codec=codec).apply(x, SR, rng())
    assert y.dtype == np.float32 and len(y) == len(x)
    assert not np.allclose(y, narrow, atol=1e-4)
    assert low <= snr_db(y, narrow) <= high
    assert lag(y, x) == 0


def test_ulaw_output_lies_on_the_256_codewords(utterance):
    x8 = signal.resample_poly(utterance, 1, 2).astype(np.float32)
    y = PhoneLine(codec="ulaw").apply(x8, 8000, rng())
    levels, _ = sf.read(io.BytesIO(bytes(range(256))), dtype="float32", format="RAW",
                        subtype="ULAW", samplerate=8000, channels=1)
    assert len(levels) == 256 and len(np.unique(levels)) == 255  # +0 and -0 are two codewords
    assert np.isin(y, levels).all()
    assert len(np.unique(y)) > 100  # speech uses many of them
    # a second pass changes nothing: the values are already codewords
    np.testing.assert_array_equal(PhoneLine(codec="ulaw").apply(y, 8000, rng()), y)
    # and A-law's levels are another set
    assert not np.isin(PhoneLine(codec="alaw").apply(x8, 8000, rng()), levels).all()


@pytest.mark.parametrize(("kbps", "narrowband"), [(6.0, True), (12.0, False), (16.0, True)])
def test_opus_is_aligned_and_same_length(utterance, kbps, narrowband):
    x = utterance
    y = PhoneLine(codec="opus", opus_kbps=kbps, narrowband=narrowband).apply(x, SR, rng())
    assert y.dtype == np.float32 and len(y) == len(x)
    assert abs(lag(y, x)) <= 1
    assert snr_db(y, x) < 25  # really coded


def test_opus_bitrate_follows_the_target(speech):
    """libsndfile maps compression level q to int((1 - q) * 250000 + 6000) bit/s; on
    continuous speech (pauses cut) the file's rate lands on the target plus Ogg framing."""
    for kbps in (6, 7, 12, 16, 24, 256):  # libsndfile's own arithmetic hits the target
        assert int((1.0 - opus_compression_level(kbps)) * 250000.0 + 6000.0) == kbps * 1000
    with pytest.raises(ValueError, match="opus_kbps"):
        opus_compression_level(5.0)
    frame = SR // 50
    parts = []
    for x in speech:
        frames = x[: len(x) // frame * frame].reshape(-1, frame)
        power = np.mean(frames**2, axis=1)
        parts.append(frames[power > power.max() / 1000].ravel())
    continuous = np.concatenate(parts)
    x8 = signal.resample_poly(continuous, 1, 2).astype(np.float32)
    seconds = len(x8) / 8000
    assert seconds > 8
    header = len(codec_encode(x8[:0], 8000, "opus", 6.0))
    measured = {}
    for kbps in (6.0, 12.0, 16.0):
        measured[kbps] = (len(codec_encode(x8, 8000, "opus", kbps)) - header) * 8 / seconds / 1000
        assert abs(measured[kbps] - kbps) <= 0.1 * kbps + 0.6, measured
    assert measured[6.0] < measured[12.0] < measured[16.0]


def test_codec_at_odd_rates_keeps_length():
    x = speech_like(0.37, sample_rate=22050)
    for codec in CODECS:
        y = PhoneLine(codec=codec).apply(x, 22050, rng())
        assert len(y) == len(x) and y.dtype == np.float32
        assert abs(lag(y, x)) <= 1


# --- noise ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["white", "pink"])
def test_noise_snr_against_active_speech(utterance, kind):
    x = utterance
    y = PhoneLine(noise=kind, snr_db=10.0).apply(x, SR, rng())
    noise = y.astype(np.float64) - x
    measured = 10 * np.log10(speech_active_power(x) / np.mean(noise**2))
    assert measured == pytest.approx(10.0, abs=0.5)
    # the pauses would have made an overall-power SNR lower: active power is what counts
    overall = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2))
    assert overall < measured - 1.0


def test_pink_noise_falls_3db_per_octave():
    x = np.zeros(4 * SR, dtype=np.float32)
    x[::400] = 0.5  # a click train sets the level; the noise dominates between clicks
    y = PhoneLine(noise="pink", snr_db=0.0).apply(x, SR, rng()) - x
    freqs, psd = signal.welch(y, SR, nperseg=4096)

    def band(lo, hi):
        return np.mean(psd[(freqs >= lo) & (freqs < hi)])

    assert 10 * np.log10(band(200, 400) / band(2000, 4000)) == pytest.approx(10.0, abs=1.5)


def test_babble_needs_a_waveform(utterance, speech):
    channel = condition_line("babble_snr10")
    with pytest.raises(ValueError, match="babble"):
        channel.apply(utterance, SR, rng())
    babble = make_babble(speech[1:], SR, rng(3), seconds=5.0, talkers=4)
    assert babble.dtype == np.float32 and len(babble) == 5 * SR
    assert np.max(np.abs(babble)) <= 0.99
    np.testing.assert_array_equal(babble, make_babble(speech[1:], SR, rng(3), 5.0, 4))
    y = channel.apply(utterance, SR, rng(), babble=babble)
    noise = y.astype(np.float64) - utterance
    assert 10 * np.log10(speech_active_power(utterance) / np.mean(noise**2)) == pytest.approx(
        10.0, abs=0.5)
    # a babble shorter than the clip is looped
    short = PhoneLine(noise="babble", snr_db=10.0).apply(utterance, SR, rng(), babble[:SR])
    assert len(short) == len(utterance) and np.isfinite(short).all()


# --- reverb ---------------------------------------------------------------------------


def schroeder_rt60(h: np.ndarray, sample_rate: int, low_db: float = -5.0,
                   high_db: float = -35.0) -> float:
    """T30: Schroeder backward integration, line fitted from -5 to -35 dB, extrapolated."""
    energy = np.cumsum(h[::-1].astype(np.float64) ** 2)[::-1]
    edc = 10 * np.log10(energy / energy[0] + 1e-300)
    start, stop = np.argmax(edc <= low_db), np.argmax(edc <= high_db)
    assert stop > start + 10
    t = np.arange(len(edc)) / sample_rate
    slope = np.polyfit(t[start:stop], edc[start:stop], 1)[0]
    return float(-60.0 / slope)


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_rir_has_the_asked_rt60(rt60):
    for room in range(4):
        h = room_impulse_response(rt60, SR, room)
        assert np.sum(h.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-4)
        assert schroeder_rt60(h, SR) == pytest.approx(rt60, rel=0.3)
        assert schroeder_rt60(h, SR, -5.0, -25.0) == pytest.approx(rt60, rel=0.3)  # T20


def test_rir_is_cached():
    """Each (RT60 step, rate, room) is computed once (how long that takes is
    benchmarks' business, not a test's)."""
    h = room_impulse_response(1.4, SR, room=977)  # a room no other test asks for
    assert room_impulse_response(1.4, SR, room=977) is h
    assert room_impulse_response(1.41, SR, room=977) is h  # RT60 rounded to 20 ms
    assert not h.flags.writeable


def test_reverb_tail_decays():
    x = np.zeros(SR, dtype=np.float32)
    burst = slice(SR // 10, SR // 10 + SR // 5)  # 0.1 - 0.3 s
    x[burst] = 0.3 * rng(5).standard_normal(SR // 5)
    y = PhoneLine(rt60_s=0.6).apply(x, SR, rng()).astype(np.float64)
    assert len(y) == len(x)
    assert np.mean(y[: SR // 10 - 80] ** 2) < 1e-9  # the direct path sits at lag 0
    windows = [np.mean(y[s:s + SR // 20] ** 2) for s in range(burst.stop, SR, SR // 20)]
    assert windows[0] > 1e-3 * np.mean(y[burst] ** 2)  # a tail after the burst ends ...
    assert all(b < a for a, b in zip(windows, windows[1:], strict=False))  # ... that decays
    # about 60 dB per RT60: 0.6 s from the end of the burst is far down
    assert windows[-1] < 1e-3 * windows[0]


# --- gain -----------------------------------------------------------------------------


def test_gain_plus_6db_doubles_the_amplitude():
    x = tone(440.0, amplitude=0.2)
    y = PhoneLine(gain_db=6.0).apply(x, SR, rng())
    ratio = np.max(np.abs(y)) / np.max(np.abs(x))
    assert ratio == pytest.approx(2.0, rel=0.005)
    np.testing.assert_allclose(y, x * 10 ** (6 / 20), rtol=1e-5, atol=1e-7)
    loud = PhoneLine(gain_db=20.0).apply(x, SR, rng())
    assert np.max(np.abs(loud)) == 1.0  # clipped at full scale


# --- drawing --------------------------------------------------------------------------


def test_draw_stays_in_range_covers_every_stage_and_is_deterministic():
    config = ChannelConfig()
    generator = rng(11)
    channels = [config.draw(generator) for _ in range(200)]
    again_generator = rng(11)
    assert channels == [config.draw(again_generator) for _ in range(200)]
    for c in channels:
        assert config.out_of_range(c) == []
        assert -20.0 <= c.gain_db <= 20.0
        assert c.highpass_hz is None or 50.0 <= c.highpass_hz <= 400.0
        assert c.lowpass_hz is None or 3200.0 <= c.lowpass_hz < 7600.0
        assert c.codec is None or c.codec in CODECS
        assert c.codec != "opus" or 6.0 <= c.opus_kbps <= 16.0
        assert c.noise is None or 5.0 <= c.snr_db <= 30.0
        assert c.rt60_s is None or 0.2 <= c.rt60_s <= 0.8
        json.dumps(c.describe())
    seen = {
        "highpass": any(c.highpass_hz for c in channels),
        "no highpass": any(c.highpass_hz is None for c in channels),
        "lowpass": any(c.lowpass_hz for c in channels),
        "narrowband": any(c.narrowband for c in channels),
        "wideband": any(not c.narrowband for c in channels),
        "no codec": any(c.codec is None for c in channels),
        "reverb": any(c.rt60_s for c in channels),
        "no noise": any(c.noise is None for c in channels),
        **{codec: any(c.codec == codec for c in channels) for codec in CODECS},
        **{kind: any(c.noise == kind for c in channels) for kind in ("white", "pink", "babble")},
    }
    assert all(seen.values()), seen
    other = [config.draw(rng(12)) for _ in range(5)]
    assert other != channels[:5]
    no_babble = [config.draw(generator, babble_available=False) for _ in range(100)]
    assert not any(c.noise == "babble" for c in no_babble)


def test_drawn_channel_is_a_pure_function_of_the_seed(utterance, speech):
    babble = make_babble(speech[1:], SR, rng(0), seconds=3.0)
    channel = PhoneLine(gain_db=-3.0, highpass_hz=120.0, lowpass_hz=3600.0, narrowband=True,
                      codec="opus", opus_kbps=9.0, noise="babble", snr_db=12.0, rt60_s=0.35)
    a = channel.apply(utterance, SR, rng(7), babble)
    b = channel.apply(utterance, SR, rng(7), babble)
    c = channel.apply(utterance, SR, rng(8), babble)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and len(a) == len(utterance) and np.max(np.abs(a)) <= 1.0


# --- conditions -----------------------------------------------------------------------


def test_every_condition_applies_and_keeps_the_length():
    x = speech_like(1.0)
    babble = make_babble([speech_like(0.8, seed=s) for s in range(3)], SR, rng(2), 2.0, 3)
    for name, channel in CONDITIONS.items():
        y = channel.apply(x, SR, rng(), babble=babble)
        assert y.dtype == np.float32 and y.shape == x.shape, name
        assert np.isfinite(y).all() and np.max(np.abs(y)) <= 1.0, name
        json.dumps(channel.describe())
        assert condition_line(name) is channel
    assert np.array_equal(CONDITIONS["clean"].apply(x, SR, rng()), x)


def test_unseen_conditions_lie_outside_the_training_ranges():
    config = ChannelConfig()
    for name, channel in CONDITIONS.items():
        outside = config.out_of_range(channel)
        if name.startswith("unseen_"):
            assert outside, name
        else:
            assert outside == [], (name, outside)
    assert config.out_of_range(condition_line("unseen_narrow")) == ["highpass_hz", "lowpass_hz"]
    assert config.out_of_range(condition_line("unseen_noise_snr0")) == ["snr_db"]
    assert config.out_of_range(condition_line("unseen_reverb")) == ["rt60_s"]
    # checked by hand as well, against the raw ranges
    assert condition_line("unseen_narrow").highpass_hz > config.highpass_hz[1]
    assert condition_line("unseen_narrow").lowpass_hz < config.lowpass_hz[0]
    assert condition_line("unseen_noise_snr0").snr_db < config.snr_db[0]
    assert condition_line("unseen_reverb").rt60_s > config.rt60_s[1]


def test_unknown_condition_names_the_known_ones():
    with pytest.raises(ValueError, match="telephone"):
        condition_line("landline")


# --- configuration --------------------------------------------------------------------


def test_config_from_dict_and_key():
    config = ChannelConfig.from_dict({"snr_db": [0, 20], "p_reverb": 0.5})
    assert config.snr_db == (0, 20) and config.p_reverb == 0.5
    assert ChannelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.key() == ChannelConfig.from_dict({"p_reverb": 0.5, "snr_db": (0, 20)}).key()
    assert config.key() != ChannelConfig().key()
    with pytest.raises(ValueError, match="snr"):
        ChannelConfig.from_dict({"snr": [0, 20]})
    with pytest.raises(ValueError):
        ChannelConfig(p_noise=1.5)
    with pytest.raises(ValueError):
        ChannelConfig(snr_db=(30.0, 5.0))


def test_channel_rejects_bad_fields():
    with pytest.raises(ValueError, match="codec"):
        PhoneLine(codec="mp3")
    with pytest.raises(ValueError, match="noise"):
        PhoneLine(noise="brown")
    with pytest.raises(ValueError, match="opus_kbps"):
        PhoneLine(codec="opus", opus_kbps=4.0)
    with pytest.raises(ValueError):
        PhoneLine(highpass_hz=3000.0, lowpass_hz=2000.0)
    with pytest.raises(ValueError, match="mono"):
        PhoneLine().apply(np.zeros((10, 2), dtype=np.float32), SR, rng())
