"""training/features.py: the one log-mel, checked against librosa, and the clip helpers."""

import math
from dataclasses import asdict, replace

import librosa
import numpy as np
import pytest
import torch

from callmood.training.audio import load_mono
from callmood.training.features import (
    MelConfig,
    Normalization,
    fit_frames,
    log_mel,
    mel_filterbank,
    model_input,
)

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
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
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


def test_silence_is_the_pad_value():
    c = CONFIGS["tiny"]
    out = log_mel(np.zeros(4000, dtype=np.float32), c)
    assert torch.allclose(out, torch.full_like(out, c.pad_value))
    assert c.pad_value == pytest.approx(math.log(c.log_floor))


def test_batched_input_equals_one_by_one():
    c = CONFIGS["tiny"]
    batch = torch.from_numpy(
        np.random.default_rng(2).uniform(-0.5, 0.5, (2, 3, 8000)).astype(np.float32))
    out = log_mel(batch, c)
    assert out.shape == (2, 3, c.n_mels, 1 + 8000 // c.hop_length)
    torch.testing.assert_close(out[1, 2], log_mel(batch[1, 2], c))


def test_fit_frames_crops_at_centre_and_offset():
    mel = torch.arange(2 * 10, dtype=torch.float32).reshape(2, 10)
    centre = fit_frames(mel, 4, pad_value=-9.0)
    torch.testing.assert_close(centre, mel[:, 3:7])
    torch.testing.assert_close(fit_frames(mel, 4, -9.0, offset=0), mel[:, :4])
    torch.testing.assert_close(fit_frames(mel, 4, -9.0, offset=6), mel[:, 6:])
    # offsets outside the signal are clamped, never give a short clip
    torch.testing.assert_close(fit_frames(mel, 4, -9.0, offset=50), mel[:, 6:])
    torch.testing.assert_close(fit_frames(mel, 4, -9.0, offset=-3), mel[:, :4])
    assert fit_frames(mel, 10, -9.0) is mel


def test_fit_frames_pads_the_end_with_pad_value():
    mel = torch.ones(3, 2, 5)
    out = fit_frames(mel, 8, pad_value=-13.8)
    assert out.shape == (3, 2, 8)
    torch.testing.assert_close(out[..., :5], mel)
    assert torch.all(out[..., 5:] == -13.8)


def test_mel_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="win_length"):
        MelConfig(n_fft=256, win_length=400)
    with pytest.raises(ValueError, match="f_max"):
        MelConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="positive"):
        MelConfig(input_frames=0)
    with pytest.raises(ValueError, match="unknown mel settings"):
        MelConfig.from_dict({"n_mels": 64, "window": "hamming"})


def test_mel_config_key_and_round_trip():
    c = CONFIGS["short-window"]
    assert MelConfig.from_dict(asdict(c)) == c
    assert c.key() == MelConfig.from_dict(
        {"n_fft": 512, "win_length": 320, "hop_length": 128, "n_mels": 40, "f_min": 0.0,
         "f_max": 7600.0}).key()
    assert c.key() != CONFIGS["default"].key()


def test_normalization_fit_and_apply():
    rng = np.random.default_rng(3)
    mels = [rng.normal(-5, 2, (8, n)).astype(np.float32) for n in (10, 30, 7)]
    norm = Normalization.fit(mels, MelConfig(equalize_level=False))
    flat = np.concatenate([m.ravel() for m in mels]).astype(np.float64)
    assert norm.mean == pytest.approx(flat.mean())
    assert norm.std == pytest.approx(flat.std())
    x = torch.tensor([[norm.mean + 2 * norm.std]])
    assert norm.apply(x).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="no data"):
        Normalization.fit([], MelConfig())


def test_model_input_shape_and_checks():
    c = replace(CONFIGS["tiny"], equalize_level=False)
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
