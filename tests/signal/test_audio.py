"""callmood/signal/audio.py: decoding every format we meet, and the promised AudioError kinds."""

import numpy as np
import pytest
import soundfile as sf
from conftest import make_tone

from callmood.signal.audio import (
    SILENCE_PEAK,
    AudioError,
    load_mono,
    probe,
    read_channels,
    resample,
)

# subtype -> largest decoding error expected for a 0.5-amplitude tone
FORMATS = {
    ("WAV", "PCM_16"): 1e-4,
    ("WAV", "PCM_24"): 1e-6,
    ("WAV", "PCM_32"): 1e-8,
    ("WAV", "FLOAT"): 0.0,
    ("WAV", "ULAW"): 0.02,  # G.711: 8-bit logarithmic
    ("WAV", "ALAW"): 0.02,
    ("FLAC", "PCM_16"): 1e-4,
    ("FLAC", "PCM_24"): 1e-6,
}


@pytest.mark.parametrize(("fmt", "subtype"), FORMATS)
def test_decodes_formats(write_wav, fmt, subtype):
    suffix = ".flac" if fmt == "FLAC" else ".wav"
    path = write_wav(f"tone-{subtype}{suffix}", seconds=0.25, subtype=subtype, format=fmt)
    info = probe(path)
    assert (info.format, info.subtype, info.channels) == (fmt, subtype, 1)
    assert info.sample_rate == 16000 and info.frames == 4000
    assert info.duration_s == pytest.approx(0.25)
    channels, rate = read_channels(path)
    assert channels.dtype == np.float32 and channels.shape == (1, 4000) and rate == 16000
    expected = make_tone(0.25, 16000)[:, 0]
    assert np.abs(channels[0] - expected).max() <= FORMATS[(fmt, subtype)] + 1e-9
    np.testing.assert_allclose(load_mono(path, 16000), channels[0])


def test_stereo_is_mixed_to_mono(write_wav):
    path = write_wav("stereo.wav", seconds=0.25, channels=2, subtype="FLOAT")
    channels, rate = read_channels(path)
    assert channels.shape == (2, 4000)
    tone = make_tone(0.25, 16000, channels=2)
    np.testing.assert_allclose(load_mono(path, 16000), tone.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("subtype", ["PCM_16", "ULAW"])
def test_8khz_is_resampled_to_model_rate(write_wav, subtype):
    path = write_wav(f"phone-{subtype}.wav", seconds=1.0, sample_rate=8000, subtype=subtype,
                     freq=440.0)
    assert probe(path).sample_rate == 8000
    mono = load_mono(path, 16000)
    assert mono.dtype == np.float32
    assert abs(len(mono) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(mono[2000:14000] * np.hanning(12000)))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 440.0) < 3
    assert np.abs(mono).max() == pytest.approx(0.5, abs=0.03)


def test_resample_keeps_axes():
    x = np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32)
    out = resample(x, 8000, 16000)
    assert out.shape == (2, 16000) and out.dtype == np.float32
    assert resample(x, 8000, 8000) is x


def test_missing_file(tmp_path):
    with pytest.raises(AudioError) as err:
        load_mono(tmp_path / "nope.wav", 16000)
    assert err.value.kind == "missing"
    assert "nope.wav" in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as err:
        load_mono(path, 16000)
    assert err.value.kind == "empty"
    assert err.value.path == str(path) and "0 bytes" in str(err.value)


def test_header_without_samples(write_wav):
    path = write_wav("header-only.wav", data=np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError) as err:
        load_mono(path, 16000)
    assert err.value.kind == "empty"


def test_non_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is a text file, not a recording\n" * 20)
    with pytest.raises(AudioError) as err:
        load_mono(path, 16000)
    assert err.value.kind == "unreadable"
    assert "notes.wav" in str(err.value)


def test_truncated_flac_is_corrupt(write_wav, tmp_path):
    good = write_wav("good.flac", seconds=1.0)
    data = good.read_bytes()
    bad = tmp_path / "truncated.flac"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as err:
        load_mono(bad, 16000)
    assert err.value.kind == "corrupt"


def test_truncated_wav(write_wav, tmp_path):
    good = write_wav("good.wav", seconds=1.0)
    data = good.read_bytes()
    bad = tmp_path / "cut-short.wav"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as err:
        load_mono(bad, 16000)
    assert err.value.kind == "truncated"
    assert "cut-short.wav" in str(err.value)
    assert len(load_mono(good, 16000)) == 16000  # a complete file passes the check


def test_nan_samples_are_corrupt(write_wav):
    data = make_tone(0.1, 16000)
    data[10] = np.nan
    path = write_wav("nan.wav", data=data, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        load_mono(path, 16000)
    assert err.value.kind == "corrupt"


@pytest.mark.parametrize("amplitude", [0.0, SILENCE_PEAK / 3])
def test_silent_audio(write_wav, amplitude):
    path = write_wav("quiet.wav", amplitude=amplitude, subtype="FLOAT")
    with pytest.raises(AudioError) as err:
        load_mono(path, 16000)
    assert err.value.kind == "silent"


def test_quiet_but_audible_audio_is_kept(write_wav):
    path = write_wav("soft.wav", amplitude=SILENCE_PEAK * 10, subtype="FLOAT")
    assert np.abs(load_mono(path, 16000)).max() > SILENCE_PEAK


def test_too_long(write_wav):
    path = write_wav("long.wav", seconds=2.0)
    with pytest.raises(AudioError) as err:
        read_channels(path, max_seconds=1.0)
    assert err.value.kind == "too_long"
    channels, _ = read_channels(path, max_seconds=3.0)
    assert channels.shape == (1, 32000)


def test_audio_error_is_a_value_error():
    err = AudioError("/x/y.wav", "silent", "audio is silent")
    assert isinstance(err, ValueError)
    assert str(err) == "/x/y.wav: audio is silent"


def test_reads_real_corpus_file(shared_dir):
    path = shared_dir / "data/ravdess/Actor_02/03-01-04-02-01-01-02.flac"
    info = probe(path)
    assert (info.format, info.sample_rate, info.channels) == ("FLAC", 16000, 1)
    mono = load_mono(path, 16000)
    assert len(mono) == info.frames and 2.5 < info.duration_s < 6
    assert sf.info(str(path)).frames == info.frames
