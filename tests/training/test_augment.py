"""Vocal tract length perturbation and the random speech margin (training/augment.py) on
real log-mels."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from callmood.signal.audio import load_mono
from callmood.signal.features import MelConfig, hz_to_mel_band, log_mel, mel_band_edges_hz
from callmood.training.augment import (
    MARGIN_INTO_SPEECH_S,
    AugmentConfig,
    cut_at_margin,
    speech_frames,
    warp_factors,
    warp_frequencies,
)
from callmood.training.train import TrainConfig, make_batch

MEL = MelConfig()


def tone_log_mel(hz: float) -> torch.Tensor:
    t = np.arange(MEL.sample_rate) / MEL.sample_rate
    return log_mel(np.sin(2 * np.pi * hz * t).astype(np.float32), MEL)


def peak_band(mels: torch.Tensor) -> int:
    return int(mels.mean(dim=-1).argmax())


@pytest.mark.parametrize("hz", [600.0, 1000.0, 2500.0])
@pytest.mark.parametrize("factor", [0.88, 1.12])
def test_a_tone_moves_to_its_frequency_times_the_factor(hz, factor):
    tone = tone_log_mel(hz)[None]
    warped = warp_frequencies(tone, torch.tensor([factor]), MEL)
    expected = hz_to_mel_band(np.array([hz * factor]), MEL.n_mels, MEL.f_min, MEL.f_max)[0]
    assert abs(peak_band(warped[0]) - expected) <= 1.0
    assert abs(peak_band(tone[0]) - peak_band(warped[0])) >= 2  # it did move


def test_a_factor_of_one_changes_nothing_and_the_top_stays_put():
    ramp = torch.arange(MEL.n_mels, dtype=torch.float32)[None, :, None].repeat(3, 1, 5)
    same, up, down = warp_frequencies(ramp, torch.tensor([1.0, 1.2, 0.8]), MEL)
    torch.testing.assert_close(same, ramp[0])
    for warped in (up, down):  # each band reads a band index: monotone, ends at the top
        rows = warped[:, 0]
        assert torch.all(rows[1:] >= rows[:-1])
        assert rows[-1] == pytest.approx(MEL.n_mels - 1, abs=0.5)


@pytest.mark.parametrize("factor", [0.8, 0.93, 1.07, 1.2])
def test_each_band_reads_the_frequency_the_warp_moves_to_its_peak(factor):
    """Jaitly & Hinton's warp, written out here: f -> factor * f up to the bend at
    0.6 * f_max * min(factor, 1) / factor, then the straight line to (f_max, f_max)."""
    top = MEL.f_max
    bend = 0.6 * top * min(factor, 1.0) / factor

    def warp(f):
        return np.where(f <= bend, factor * f,
                        top - (top - factor * bend) / (top - bend) * (top - f))

    peaks = mel_band_edges_hz(MEL.n_mels, MEL.f_min, top)[1:-1]
    ramp = torch.arange(MEL.n_mels, dtype=torch.float32)[None, :, None]
    read = warp_frequencies(ramp, torch.tensor([factor]), MEL)[0, :, 0].numpy()
    # the fractional band each peak reads, as a frequency (bands are near-linear between
    # peaks), moved by the warp, lands on that peak: below and above the bend
    heard = np.interp(read, np.arange(MEL.n_mels), peaks)
    inside = (heard > peaks[0]) & (heard < peaks[-1])  # not held at an edge band
    assert inside.sum() > 100 and (peaks[inside] > 6000).any()
    assert np.allclose(warp(heard[inside]), peaks[inside], rtol=0.02)


def test_prosody_rows_stay_and_a_profile_warps_like_its_clip():
    mel = MelConfig(prosody_rows=4)
    clip = torch.randn(2, mel.n_mels + 4, 30)
    factors = torch.tensor([0.9, 1.1])
    warped = warp_frequencies(clip, factors, mel)
    torch.testing.assert_close(warped[:, mel.n_mels:], clip[:, mel.n_mels:])
    profile = clip[:, :mel.n_mels, :1]
    torch.testing.assert_close(warp_frequencies(profile, factors, mel), warped[:, :mel.n_mels, :1])


def test_a_batch_warps_each_clip_and_its_speaker_alike():
    """A clip that is its speaker's profile at every frame stays so once warped (and masked
    relative to it), so the model's input after the profile is subtracted is flat."""
    n_mels = MEL.n_mels
    config = TrainConfig(mel=MEL, augment=AugmentConfig(frequency_warp=0.15))
    levels = [torch.linspace(-5, 5, n_mels)[:, None], torch.linspace(3, -2, n_mels)[:, None]
              ** 2]
    mels = {"clean": [level.repeat(1, MEL.input_frames) for level in levels]}
    profiles = {"clean": torch.stack(levels)}
    batch, speakers = make_batch(mels, [0, 1], config, torch.Generator().manual_seed(0),
                                 profiles)
    torch.testing.assert_close(batch, speakers.expand_as(batch))
    assert not torch.allclose(speakers, profiles["clean"])  # they were warped
    factors = warp_factors(1000, config.augment, torch.Generator().manual_seed(1))
    assert 0.85 <= factors.min() < 0.87 and 1.13 < factors.max() <= 1.15


@pytest.mark.parametrize("spread", [-0.1, 0.5, "0.1", float("nan")])
def test_a_warp_out_of_range_is_refused(spread):
    with pytest.raises(ValueError, match="frequency_warp must be a number in"):
        AugmentConfig(frequency_warp=spread)


def test_a_warp_is_refused_for_the_waveform_frontend():
    with pytest.raises(ValueError, match="frequency_warp acts on log-mel bands"):
        TrainConfig(backbone="wav2vec2", augment=AugmentConfig(frequency_warp=0.1))


def take(silence: int = 100, speech: int = 100) -> torch.Tensor:
    """A corpus's take as a log-mel: silence (quiet, -20 nats), speech, silence."""
    mel = torch.full((MEL.n_mels, 2 * silence + speech), -20.0)
    mel[:, silence:silence + speech] = torch.linspace(-2, 0, MEL.n_mels)[:, None]
    return mel


def test_a_takes_speech_is_its_runs_of_frames_within_35_db_of_the_loudest():
    mel = take()
    assert speech_frames(mel, MEL) == (100, 200)
    mel[:, 40:60] = mel[:, 150:151] - 3.9 * np.log(10)  # 39 dB under the speech: silence still
    mel[:, 260:270] = mel[:, 150:151] - 3.0 * np.log(10)  # 30 dB under for 0.1 s: a release
    assert speech_frames(mel, MEL) == (100, 270)
    prosody = torch.cat([mel, torch.full((4, mel.shape[1]), 50.0)])  # rows beyond n_mels
    assert speech_frames(prosody, MEL) == (100, 270)
    mel[:, 20:27] = mel[:, 150:151]  # a click of 70 ms before the take: not its start
    assert speech_frames(mel, MEL) == (100, 270)
    only_clicks = torch.full_like(mel, -20.0)
    only_clicks[:, [30, 90]] = 0.0
    assert speech_frames(only_clicks, MEL) == (30, 91)  # no run is speech: all loud frames


def test_a_real_takes_speech_is_where_the_call_generator_cuts_it(shared_dir):
    """The rule is the call benchmark generator's (segment.take_bounds): on a RAVDESS take,
    whose file holds about a second of silence around its speech, the log-mel's speech is
    the generator's cut of the waveform to within 30 ms."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from callbench.generate import speech_of

    path = shared_dir / "data/ravdess/Actor_01/03-01-01-01-01-01-01.flac"
    waveform = load_mono(str(path), MEL.sample_rate)
    first, end = speech_frames(log_mel(waveform, MEL), MEL)
    assert abs((end - first) - len(speech_of(str(path))) / 160) <= 3
    assert first / 100 > 0.5 and (end - first) / 100 < len(waveform) / MEL.sample_rate - 1


def test_a_cut_stays_within_a_shorter_variant_and_a_silent_take_is_kept_whole():
    generator = torch.Generator().manual_seed(0)
    config = AugmentConfig(speech_margin=0.6)
    short = take()[:, :100]  # ends where the clean take's speech starts
    assert all(cut_at_margin(take(), short, config, MEL, generator).shape[-1] > 0
               for _ in range(50))
    silent = torch.full((MEL.n_mels, 80), float("nan"))
    assert speech_frames(silent, MEL) == (0, 80)


def test_each_draw_cuts_the_take_at_new_margins_within_its_bounds():
    clean = take()
    # a channel variant (the clean take's speech decides where it is cut), its frames
    # numbered in its first row so that a cut tells where it starts
    noisy = clean + 0.5
    noisy[0] = torch.arange(noisy.shape[1])
    config = AugmentConfig(speech_margin=0.6)
    generator = torch.Generator().manual_seed(0)
    into = int(MARGIN_INTO_SPEECH_S * 100)
    starts, stops = [], []
    for _ in range(400):
        cut = cut_at_margin(clean, noisy, config, MEL, generator)
        start = int(cut[0, 0])
        assert torch.equal(cut, noisy[:, start:start + cut.shape[1]])
        starts.append(start)
        stops.append(start + cut.shape[1])
    assert min(starts) >= 100 - 60 and max(starts) <= 100 + into
    assert 200 - into <= min(stops) and max(stops) <= 200 + 60
    assert len(set(starts)) > 30 and len(set(stops)) > 30  # a margin drawn each time
    assert min(starts) < 50 and max(starts) > 100  # from most of the silence to inside


def test_a_batch_with_a_speech_margin_holds_less_recorded_silence():
    """A 3-s take of 1 s speech (shorter than the clip: repeated end to end) fills two
    thirds of its clip with silence; cut at a random margin of up to 0.3 s, at most
    3/8 of it, and how much changes from draw to draw."""
    mels = {"clean": [take()] * 64}
    def silence_share(augment):
        config = TrainConfig(mel=MEL, augment=augment)
        batch, _ = make_batch(mels, list(range(64)), config, torch.Generator().manual_seed(0))
        return (batch[:, 0] < -10).float().mean(dim=-1)
    plain = AugmentConfig(specaug_freq=0, specaug_time=0)
    assert torch.allclose(silence_share(plain), torch.tensor(2 / 3), atol=0.02)
    margin = silence_share(AugmentConfig(specaug_freq=0, specaug_time=0, speech_margin=0.3))
    assert margin.max() <= 0.6 / 1.6 + 0.02 and margin.std() > 0.03


@pytest.mark.parametrize("margin", [-0.1, 11, "0.5", float("nan")])
def test_a_speech_margin_out_of_range_is_refused(margin):
    with pytest.raises(ValueError, match="speech_margin must be a number of seconds"):
        AugmentConfig(speech_margin=margin)


def test_a_speech_margin_is_refused_for_the_waveform_frontend():
    with pytest.raises(ValueError, match="speech_margin finds the speech in log-mel bands"):
        TrainConfig(backbone="wav2vec2", augment=AugmentConfig(speech_margin=0.5))
