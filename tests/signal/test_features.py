"""callmood/signal/features.py: the one log-mel, checked against librosa, and the clip helpers."""

import math
from dataclasses import asdict, replace
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch

from callmood.signal import features
from callmood.signal.audio import load_mono
from callmood.signal.features import (
    PERIODICITY_WINDOW_S,
    PITCH_RANGE_HZ,
    PROFILE_PRIOR,
    MelConfig,
    Normalization,
    audio_features,
    band_levels,
    fit_frames,
    level_relative,
    log_mel,
    mel_filterbank,
    model_input,
    periodicity,
    prior_profile,
    row_lags,
    speaker_profiles,
    speech_band_mean,
    utterance_clips,
    window_starts,
)
from callmood.training.channel import condition_line

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "default": MelConfig(),
    "tiny": MelConfig(n_mels=64, input_frames=160),
    "short-window": MelConfig(n_fft=512, win_length=320, hop_length=128, n_mels=40,
                              f_min=0.0, f_max=7600.0),
    "8k": MelConfig(sample_rate=8000, n_fft=256, win_length=200, hop_length=80, n_mels=32,
                    f_max=4000.0),
}


def librosa_log_mel(y: np.ndarray, c: MelConfig) -> np.ndarray:
    power = librosa.feature.melspectrogram(
        y=y, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
        window="hann", center=True, pad_mode="constant", power=2.0, n_mels=c.n_mels,
        fmin=c.f_min, fmax=c.f_max, htk=False, norm="slaney")
    return np.log(power + c.log_floor)


@pytest.mark.parametrize("name", CONFIGS)
def test_filterbank_matches_librosa(name):
    c = CONFIGS[name]
    ours = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max).numpy()
    ref = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.f_min,
                              fmax=c.f_max, htk=False, norm="slaney")
    assert ours.shape == (c.n_mels, c.n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", CONFIGS)
def test_log_mel_matches_librosa_on_noise(name):
    c = CONFIGS[name]
    y = (0.1 * np.random.default_rng(1).standard_normal(12345)).astype(np.float32)
    ours = log_mel(y, c).numpy()
    ref = librosa_log_mel(y, c)
    assert ours.shape == ref.shape == (c.n_mels, 1 + len(y) // c.hop_length)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["default", "tiny"])
def test_log_mel_matches_librosa_on_real_speech(name, shared_dir):
    c = CONFIGS[name]
    y = load_mono(shared_dir / "data/ravdess/Actor_01/03-01-05-01-01-01-01.flac",
                  c.sample_rate)
    ours = log_mel(y, c).numpy()
    ref = librosa_log_mel(y, c)
    assert ours.shape == ref.shape == (c.n_mels, 1 + len(y) // c.hop_length)
    # float32 STFTs of two libraries differ by ~1e-4 relative on the quietest bins (e-8)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-3)
    # real speech spans a wide dynamic range, so the comparison is not trivially flat
    assert ref.max() - ref.min() > 10


@pytest.mark.parametrize("n", [1, 159, 160, 161, 16000, 25439, 25440, 25441])
def test_frame_count_is_one_plus_n_over_hop(n):
    c = CONFIGS["tiny"]
    y = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    assert log_mel(y, c).shape == (c.n_mels, 1 + n // c.hop_length)


def test_clip_samples_give_exactly_input_frames():
    for c in CONFIGS.values():
        y = np.zeros(c.clip_samples, dtype=np.float32)
        assert log_mel(y, c).shape[-1] == c.input_frames
        assert c.clip_seconds == pytest.approx(c.clip_samples / c.sample_rate)


def test_the_waveform_frontend_frames_the_samples_and_standardises_each_clip():
    c = replace(CONFIGS["tiny"], frontend="waveform")
    assert (c.rows, c.clip_samples) == (c.hop_length, c.input_frames * c.hop_length)
    y = np.random.default_rng(0).normal(0.1, 0.3, c.clip_samples + 5).astype(np.float32)
    frames = audio_features(y, c)  # the last frame holds 5 samples and zeros
    assert frames.shape == (c.hop_length, c.input_frames + 1)
    assert torch.equal(frames[:, 3], torch.from_numpy(y[3 * c.hop_length:4 * c.hop_length]))
    clip = fit_frames(frames, c.input_frames, 0)
    x = model_input(torch.stack([clip, 10 * clip]), c, Normalization())
    assert x.shape == (2, c.clip_samples)
    expected = (y[:c.clip_samples] - y[:c.clip_samples].mean()) / y[:c.clip_samples].std()
    np.testing.assert_allclose(x[0].numpy(), expected / 2, atol=1e-4)  # (x - 0) / (2 * 1)
    torch.testing.assert_close(x[0], x[1])  # the gain is gone
    with pytest.raises(ValueError, match="expected .* waveform features"):
        model_input(log_mel(y, CONFIGS["tiny"])[None, :, :c.input_frames], c, Normalization())


@pytest.mark.parametrize("f0", [90.0, 130.0, 250.0, 330.0])
def test_prosody_rows_hold_a_ridge_at_the_pitch_period_whatever_the_gain(f0):
    """90 and 130 Hz are the tones a pitch read from the log-mel got wrong."""
    c = replace(CONFIGS["default"], prosody_rows=32)
    rate = c.sample_rate
    t = np.arange(rate) / rate
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)).astype(np.float32)
    rows = periodicity(tone, c)
    assert rows.shape == (32, 1 + rate // c.hop_length)
    pitches = np.geomspace(*PITCH_RANGE_HZ, 32)
    nearest = int(np.abs(np.log(pitches / f0)).argmin())
    middle = rows[:, 20:-20]
    assert middle[nearest].min() > 0.9  # the ridge, on every frame
    # nothing above the pitch (no octave up): the ridge falls off within a third of an
    # octave (3 of 32 rows; the row above reads its flank)
    assert middle[nearest + 3:].max() < 0.4
    torch.testing.assert_close(periodicity(tone * 0.01, c), rows, atol=1e-4, rtol=0)
    noise = np.random.default_rng(0).normal(size=rate).astype(np.float32)
    assert periodicity(noise, c)[:, 20:-20].abs().mean() < 0.1  # the best of a row's lags
    assert periodicity(np.zeros(rate, np.float32), c).abs().max() == 0


@pytest.mark.parametrize("f0", [95.0, 110.0, 180.0, 240.0])
@pytest.mark.parametrize("line", ["clean", "telephone", "unseen_narrow"])
def test_a_voice_rich_in_harmonics_keeps_its_ridge_through_a_telephone_band(f0, line):
    """The peak at the period is as narrow as the strongest harmonic's cycle: read at one
    lag a row, a 95-110 Hz voice of 40 harmonics gave 0.3 on its row, and below 0 once a
    300-3400 Hz band removed its fundamental. Each row's best lag finds it."""
    c = replace(CONFIGS["default"], prosody_rows=16)
    rate = c.sample_rate
    t = np.arange(rate) / rate
    voice = sum(np.sin(2 * np.pi * f0 * k * t + 0.3 * k * k) / np.sqrt(k)
                for k in range(1, int(4000 / f0)))
    voice = (0.8 * voice / np.abs(voice).max()).astype(np.float32)
    heard = condition_line(line).apply(voice, rate, np.random.default_rng(0))
    rows = periodicity(heard, c)[:, 20:-20]
    nearest = int(np.abs(np.log(np.geomspace(*PITCH_RANGE_HZ, 16) / f0)).argmin())
    assert rows[nearest].median() > 0.85
    assert rows[nearest + 2:].max() < 0.5  # still nothing above the pitch


@pytest.mark.parametrize("count", [1, 2, 16, 64])
def test_each_lag_of_the_pitch_range_belongs_to_one_row(count):
    lags = row_lags(replace(CONFIGS["default"], prosody_rows=count))
    assert lags.shape[0] == count
    rows = [sorted(set(row.tolist())) for row in lags]
    assert all(rows)
    assert all(a[0] > b[-1] for a, b in zip(rows, rows[1:], strict=False))  # longest first
    covered = sorted(lag for row in rows for lag in row)
    assert covered == list(range(covered[0], covered[-1] + 1))  # no gap, no lag twice
    assert covered[0] >= 1 and covered[-1] < PERIODICITY_WINDOW_S * 16000  # in the frame
    periods = CONFIGS["default"].sample_rate / np.geomspace(*PITCH_RANGE_HZ, count)
    assert all(row[0] <= round(p) <= row[-1] for row, p in zip(rows, periods, strict=True))


def test_prosody_rows_stay_within_one_at_onsets_quiet_takes_and_calls(monkeypatch):
    """Next to digital silence an onset's lags overlap almost none of the frame's energy:
    dividing rounding error by that energy gave values up to 30 on the dev calls."""
    c = replace(CONFIGS["default"], prosody_rows=16)
    rng = np.random.default_rng(1)
    onsets = np.zeros((50, 8000), np.float32)
    for row in onsets:
        start = int(rng.integers(1000, 7000))
        row[start:] = rng.normal(0, 0.5, 8000 - start) * np.sin(np.arange(8000 - start) / 7.0)
    assert periodicity(onsets, c).abs().max() <= 1.0
    call = load_mono(str(ROOT / "sample_calls" / "audio" / "call-0001.wav"), c.sample_rate)
    rows = periodicity(call, c)
    assert rows.abs().max() <= 1.0
    torch.testing.assert_close(periodicity(call * 1e-4, c), rows, atol=1e-3, rtol=0)
    monkeypatch.setattr(features, "_PERIODICITY_CHUNK", 5000)  # a few frames at a time
    torch.testing.assert_close(periodicity(call, c), rows)


@pytest.mark.parametrize("n", [400, 16_000, 48_639])
def test_prosody_rows_go_below_the_log_mel_frame_for_frame(n):
    c = replace(CONFIGS["tiny"], prosody_rows=16)
    y = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    features = audio_features(y, c)
    assert features.shape == (c.n_mels + 16, 1 + n // c.hop_length) and c.rows == c.n_mels + 16
    torch.testing.assert_close(features[:c.n_mels], log_mel(y, c))
    clips = fit_frames(features, c.input_frames, 0)[None]
    x = model_input(clips, c, Normalization(mean=-8.0, std=4.0))
    plain = model_input(clips[:, :c.n_mels], replace(c, prosody_rows=0),
                        Normalization(mean=-8.0, std=4.0))
    torch.testing.assert_close(x[:, :, :c.n_mels], plain)  # the log-mel rows as without
    torch.testing.assert_close(x[0, 0, c.n_mels:], clips[0, c.n_mels:])  # passed as they are


def test_silence_sits_at_the_absolute_floor():
    c = CONFIGS["tiny"]
    out = log_mel(np.zeros(4000, dtype=np.float32), c)
    assert torch.allclose(out, torch.full_like(out, math.log(c.log_floor)))


def test_batched_input_equals_one_by_one():
    c = CONFIGS["tiny"]
    batch = torch.from_numpy(
        np.random.default_rng(2).uniform(-0.5, 0.5, (2, 3, 8000)).astype(np.float32))
    out = log_mel(batch, c)
    assert out.shape == (2, 3, c.n_mels, 1 + 8000 // c.hop_length)
    torch.testing.assert_close(out[1, 2], log_mel(batch[1, 2], c))


def test_fit_frames_crops_at_centre_and_offset():
    mel = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10)
    centre = fit_frames(mel, 4)
    torch.testing.assert_close(centre, mel[:, 3:7])
    torch.testing.assert_close(fit_frames(mel, 4, offset=0), mel[:, :4])
    torch.testing.assert_close(fit_frames(mel, 4, offset=6), mel[:, 6:])
    # offsets outside the signal are clamped, never give a short clip
    torch.testing.assert_close(fit_frames(mel, 4, offset=50), mel[:, 6:])
    torch.testing.assert_close(fit_frames(mel, 4, offset=-3), mel[:, :4])
    assert fit_frames(mel, 10) is mel


def test_a_short_clip_is_repeated_never_padded_with_a_constant():
    mel = torch.arange(3 * 2 * 5, dtype=torch.float32).reshape(3, 2, 5)
    out = fit_frames(mel, 12)
    assert out.shape == (3, 2, 12)
    torch.testing.assert_close(out[..., :5], mel)
    torch.testing.assert_close(out[..., 5:10], mel)
    torch.testing.assert_close(out[..., 10:], mel[..., :2])


@pytest.mark.parametrize(("length", "expected"), [
    (1, [0]), (100, [0]), (101, [0, 1]), (175, [0, 75]), (176, [0, 38, 76]), (400, None)])
def test_window_starts_cover_the_whole_length(length, expected):
    starts = window_starts(length, 100, 0.25)
    if expected is not None:
        assert starts == expected
    assert starts[0] == 0 and starts[-1] + min(100, length) == max(length, min(100, length))
    assert all(b - a <= 75 for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError, match="overlap"):
        window_starts(length, 100, 1.0)


def test_utterance_clips_cover_the_utterance():
    mel = torch.randn(4, 350)
    clips = utterance_clips(mel, 304)  # start, centre, end
    assert clips.shape == (3, 4, 304)
    torch.testing.assert_close(clips[0], mel[:, :304])
    torch.testing.assert_close(clips[1], mel[:, 23:327])
    torch.testing.assert_close(clips[2], mel[:, -304:])
    assert len(utterance_clips(mel[:, :305], 304)) == 2  # no clip twice
    assert len(utterance_clips(torch.randn(4, 1000), 304)) == 5  # the 25 % grid
    short = utterance_clips(mel[:, :100], 304)
    assert short.shape == (1, 4, 304)
    torch.testing.assert_close(short[0, :, 100:200], mel[:, :100])


def test_mel_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="win_length"):
        MelConfig(n_fft=256, win_length=400)
    with pytest.raises(ValueError, match="f_max"):
        MelConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="positive"):
        MelConfig(input_frames=0)
    with pytest.raises(ValueError, match="unknown mel settings"):
        MelConfig.from_dict({"n_mels": 64, "window": "hamming"})
    with pytest.raises(ValueError, match="frontend must be"):
        MelConfig(frontend="mfcc")
    with pytest.raises(ValueError, match="a waveform frontend has none"):
        MelConfig(frontend="waveform", spectral_mean=True)
    with pytest.raises(ValueError, match="prosody_rows must be an integer"):
        MelConfig(prosody_rows=65)
    with pytest.raises(ValueError, match="prosody_rows go below a log-mel"):
        MelConfig(prosody_rows=16, speaker_mean=True)


def test_mel_config_key_and_round_trip():
    c = CONFIGS["short-window"]
    assert MelConfig.from_dict(asdict(c)) == c
    assert c.key() == MelConfig.from_dict(
        {"n_fft": 512, "win_length": 320, "hop_length": 128, "n_mels": 40, "f_min": 0.0,
         "f_max": 7600.0}).key()
    assert c.key() != CONFIGS["default"].key()
    # the frontend setting left the log-mel cache's key as it was before it existed
    assert "frontend" not in c.key() and "prosody_rows" not in c.key()
    assert replace(c, frontend="waveform").key() != c.key()
    assert replace(c, prosody_rows=16).key() != c.key()
    assert "trim_silence" not in c.key() and replace(c, trim_silence=True).key() != c.key()
    with pytest.raises(ValueError, match="trim_silence must be true or false"):
        MelConfig(trim_silence=1)


def test_normalization_fit_and_apply():
    rng = np.random.default_rng(3)
    mels = [rng.normal(-5, 2, (8, n)).astype(np.float32) for n in (10, 30, 7)]
    norm = Normalization.fit(mels, MelConfig(equalize_level=False, level_floor_db=None))
    flat = np.concatenate([m.ravel() for m in mels]).astype(np.float64)
    assert norm.mean == pytest.approx(flat.mean())
    assert norm.std == pytest.approx(flat.std())
    x = torch.tensor([[norm.mean + 2 * norm.std]])
    assert norm.apply(x).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="no data"):
        Normalization.fit([], MelConfig())


def test_model_input_shape_and_checks():
    c = replace(CONFIGS["tiny"], equalize_level=False, level_floor_db=None)
    norm = Normalization(mean=-4.0, std=2.0)
    mels = torch.full((3, c.n_mels, c.input_frames), -4.0)
    x = model_input(mels, c, norm)
    assert x.shape == (3, 1, c.n_mels, c.input_frames)
    assert torch.all(x == 0)
    with pytest.raises(ValueError, match="expected"):
        model_input(torch.zeros(3, c.n_mels, c.input_frames + 1), c, norm)
    with pytest.raises(ValueError, match="expected"):
        model_input(torch.zeros(3, c.n_mels - 1, c.input_frames), c, norm)


def test_model_input_ignores_recording_level():
    """A 20 dB quieter recording of the same sound gives the same model input."""
    c = CONFIGS["tiny"]
    rng = np.random.default_rng(5)
    audio = torch.tensor(rng.normal(0, 0.3, c.clip_samples), dtype=torch.float32)
    audio[: c.clip_samples // 3] *= 0.3  # a softer stretch (well above the log floor)
    loud, quiet = log_mel(audio, c), log_mel(audio * 0.1, c)
    assert (loud - quiet).mean() > 4  # 20 dB is 4.6 in natural-log power
    norm = Normalization(mean=-2.0, std=3.0)
    same = model_input(torch.stack([loud, quiet]), c, norm)
    # equal up to the few cells near the log floor (edge frames, the lowest mel bands)
    assert (same[0] - same[1]).abs().mean() < 0.01
    fixed = replace(c, equalize_level=False)
    unequalised = model_input(torch.stack([loud, quiet]), fixed, norm)
    assert (unequalised[0] - unequalised[1]).abs().mean() > 0.5
    # the setting shapes the model input, not the cached features
    assert fixed.key() == c.key()


def test_normalization_is_fitted_on_level_equalised_features():
    c = CONFIGS["tiny"]
    mels = [torch.full((c.n_mels, 40), -3.0), torch.full((c.n_mels, 40), -9.0)]
    norm = Normalization.fit(mels, c)
    assert norm.std == pytest.approx(0.0, abs=1e-3)  # equal once their level is removed


GAINS_DB = (-30, -20, -10, 0, 10, 20, 30)
# a quiet neutral take (~ -45 dBFS speech) and a loud angry one of the same actor
TAKES = ("Actor_01/03-01-01-01-01-01-01.flac", "Actor_01/03-01-05-02-01-01-01.flac")


@pytest.mark.parametrize("take", TAKES)
def test_model_input_is_invariant_to_gain(take, shared_dir):
    """Real quiet and loud takes at -30..+30 dB (gains that would clip excluded) give the
    same model input to within 1e-3 (the input's std is about 0.5), including the quiet
    take at -30 dB, where most bins sat at the absolute floor before."""
    c = MelConfig()
    norm = Normalization(mean=-6.0, std=2.5)
    audio = load_mono(shared_dir / "data/ravdess" / take, c.sample_rate)
    clip = torch.from_numpy(audio[: c.clip_samples])
    reference = model_input(log_mel(clip, c)[None], c, norm)
    assert reference.std() > 0.2
    tested = 0
    for gain in GAINS_DB:
        scaled = clip * 10 ** (gain / 20)
        if scaled.abs().max() >= 1.0:
            continue  # would clip
        tested += 1
        moved = (model_input(log_mel(scaled, c)[None], c, norm) - reference).abs().max()
        assert moved < 1e-3, f"{gain} dB moves the input by {moved}"
    assert tested >= 4
    # the legacy absolute floor did move it: many more bins at the floor when quiet
    legacy = replace(c, log_floor=1e-6, level_floor_db=None)
    quiet = model_input(log_mel(clip * 10 ** (-30 / 20), legacy)[None], legacy, norm)
    loud = model_input(log_mel(clip, legacy)[None], legacy, norm)
    assert (quiet - loud).abs().max() > 0.5


def test_level_relative_floors_below_the_loud_frames():
    c = CONFIGS["tiny"]
    mels = torch.full((c.n_mels, 40), -200.0)
    mels[:, :10] = 0.0  # loud frames
    out = level_relative(mels, c)
    floor = -c.level_floor_db / 10 * math.log(10)
    assert out[:, 20:].max().item() == pytest.approx(floor - (out[:, 0].logsumexp(0).item()),
                                                     abs=1e-3)


def test_spectral_mean_removes_a_fixed_band_colouring(shared_dir):
    """A fixed per-band gain (a handset's colouring: an additive constant per band in the
    log-mel domain) moves the model input without spectral_mean; with it, a mild one
    moves nothing and a strong one, which shifts a few frames across the speech
    threshold, moves it 50x less. The setting shapes the model input only, and folders
    written before it read as False."""
    c = replace(MelConfig(), spectral_mean=True)
    plain, norm = MelConfig(), Normalization(mean=0.0, std=1.0)
    audio = load_mono(shared_dir / "data/ravdess" / TAKES[1], c.sample_rate)
    mels = log_mel(torch.from_numpy(audio[: c.clip_samples]), c)[None]
    for tilt_db, bound in ((2.0, 1e-5), (8.7, 0.01)):
        tilt = torch.linspace(-1, 0.5, c.n_mels)[:, None] * tilt_db / 10 * math.log(10)

        coloured, moved = mels + tilt, {}
        for name, config in (("plain", plain), ("spectral_mean", c)):
            moved[name] = (model_input(coloured, config, norm)
                           - model_input(mels, config, norm)).abs().mean().item()
        assert moved["plain"] > 0.08
        assert moved["spectral_mean"] < min(bound, moved["plain"] / 50), (tilt_db, moved)
    centred = model_input(mels, c, norm)
    assert centred.std() > 0.2
    assert c.key() == plain.key()
    assert MelConfig.from_dict({"n_mels": 128}).spectral_mean is False
    with pytest.raises(ValueError, match="spectral_mean"):
        MelConfig.from_dict({"spectral_mean": "yes"})


def levels_of(mels: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([band_levels(m) for m in mels])


def mean_levels(mels: list[torch.Tensor]) -> torch.Tensor:
    """A speaker's profile over these log-mels, averaged here independently."""
    return levels_of(mels).mean(0)


def test_speaker_mean_removes_a_speaker_lines_colouring_and_keeps_the_emotion(shared_dir):
    """One speaker's takes all through the same coloured line (a fixed per-band gain):
    with speaker_mean and their profile over the coloured takes, each take's input is
    what it was uncoloured, up to a constant per take and the few frames the colouring
    moves across the speech threshold (7x less than without). Unlike spectral_mean it keeps
    what separates the takes' spectra (a neutral and an angry take differ more)."""
    c = replace(MelConfig(), speaker_mean=True)
    plain, norm = MelConfig(), Normalization(mean=0.0, std=1.0)
    takes = [log_mel(torch.from_numpy(load_mono(shared_dir / "data/ravdess" / t,
                                                c.sample_rate)), c) for t in TAKES]
    clips = torch.stack([fit_frames(m, c.input_frames, 0) for m in takes])
    tilt = torch.linspace(-1, 0.5, c.n_mels)[:, None] * 2.0 / 10 * math.log(10)
    coloured = [m + tilt for m in takes]
    profile, coloured_profile = mean_levels(takes), mean_levels(coloured)
    grouped = speaker_profiles(levels_of(takes + coloured), ["a", "a", "b", "b"])
    for got, wanted in zip(grouped, [profile] * 2 + [coloured_profile] * 2, strict=True):
        torch.testing.assert_close(got, wanted)
    moved = {}
    per_clip = [p.expand(len(clips), -1, -1) for p in (profile, coloured_profile)]
    for name, config, before, after in (("plain", plain, None, None),
                                        ("speaker_mean", c, *per_clip)):
        diff = (model_input(clips + tilt, config, norm, after)
                - model_input(clips, config, norm, before))
        moved[name] = (diff - diff.mean(dim=(-1, -2), keepdim=True)).abs().mean().item()
    assert moved["plain"] > 0.05 and moved["speaker_mean"] < moved["plain"] / 5, moved

    def spread(config, speakers):  # how far apart the two takes' speech spectra are
        x = speech_band_mean(level_relative(clips, config, speakers))
        return (x[0] - x[1]).abs().mean().item()

    own = replace(MelConfig(), spectral_mean=True)
    assert spread(c, profile) > 3 * spread(own, None)
    with pytest.raises(ValueError, match="speaker profiles of shape"):
        model_input(clips, c, norm, profile)  # one profile for the batch: say it per clip
    # without a profile a clip is its own speaker: spectral_mean's input
    torch.testing.assert_close(model_input(clips, c, norm), model_input(clips, own, norm))
    assert c.key() == plain.key() and MelConfig.from_dict({}).speaker_mean is False


def test_speaker_shift_moves_each_band_at_most_the_limit_towards_the_reference():
    """With speaker_shift_db a speaker's profile is moved onto the training speakers'
    (the reference) by at most that many dB per band: a voice near the reference fully,
    a band a narrowband line left empty (60 dB below) only by the limit, so it is not
    lifted to the level of speech. Without a reference of the right size it is refused."""
    c = replace(MelConfig(n_mels=4, input_frames=16), speaker_mean=True, speaker_shift_db=10.0)
    reference = (-2.0, -3.0, -4.0, -5.0)
    norm = Normalization(speaker_reference=list(reference))
    assert norm.speaker_reference == reference  # a JSON list becomes a tuple
    db = math.log(10) / 10  # nepers per dB
    profile = torch.tensor([-2.0 + 3 * db, -3.0 - 5 * db, -4.0 - 60 * db, -5.0 + 60 * db])
    shift = norm.speaker_shift(profile[:, None], c)[:, 0]
    torch.testing.assert_close(shift, torch.tensor([3 * db, -5 * db, -10 * db, 10 * db]))
    assert torch.equal(Normalization().speaker_shift(profile, replace(c, speaker_shift_db=None)),
                       profile)
    with pytest.raises(ValueError, match="speaker_reference of 4 bands"):
        Normalization().speaker_shift(profile[:, None], c)
    with pytest.raises(ValueError, match="speaker_reference"):
        Normalization(speaker_reference=[0.0, float("nan")])
    for bad in ({"speaker_shift_db": 10.0},  # without speaker_mean it would never load
                {"speaker_mean": True, "speaker_shift_db": -1.0},
                {"speaker_mean": True, "spectral_mean": True}):
        with pytest.raises(ValueError, match="speaker_mean"):
            MelConfig(**bad)
    fitted = Normalization.fit([torch.randn(4, 30), torch.randn(4, 30)], c,
                               [profile[:, None], torch.zeros(4, 1)])
    torch.testing.assert_close(torch.tensor(fitted.speaker_reference), profile / 2)


def test_a_speaker_heard_briefly_is_mostly_the_average_speaker():
    """prior_profile: one clip of a speaker weighs 1 against PROFILE_PRIOR clips of the
    training speakers' mean; many clips outweigh it; without a reference the plain mean."""
    reference = (-4.0, -6.0)
    levels = torch.tensor([[-2.0], [-10.0]])
    one = prior_profile(levels, 1, reference)
    torch.testing.assert_close(one, (levels + PROFILE_PRIOR * torch.tensor(
        [[-4.0], [-6.0]])) / (1 + PROFILE_PRIOR))
    many = prior_profile(levels * 400, 400, reference)
    assert (many - levels).abs().max() < 0.05
    torch.testing.assert_close(prior_profile(levels * 3, 3, None), levels)
    mels = [torch.randn(2, 20), torch.randn(2, 20), torch.randn(2, 20)]
    drawn = speaker_profiles(levels_of(mels), ["a", "a", "b"], reference)
    torch.testing.assert_close(drawn[0], prior_profile(band_levels(mels[0]) + band_levels(
        mels[1]), 2, reference))
    torch.testing.assert_close(speaker_profiles(levels_of(mels), ["a", "a", "b"])[2],
                               mean_levels(mels[2:]))
