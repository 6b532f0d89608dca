"""Training-time augmentation.

Everything but the telephone channel works on log-mel batches, so cached features are
reused across epochs, folds and trials:

* gain: a level change is an additive constant in the log-mel domain (exact);
* noise: white noise at a random SNR, added in the power domain with the filter bank's
  response to white noise;
* SpecAugment (Park et al., 2019): frequency and time masks;
* mixup (Zhang et al., 2018) is applied by the training loop on inputs and targets.

The telephone channel (8 kHz band limit and a G.711 mu-law round trip, the path most call
recordings took) needs the waveform, so the feature cache stores a telephone variant of
each utterance and the loop picks it with probability `telephone_p`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from callmood.training.audio import resample
from callmood.training.features import MelConfig, mel_filterbank

TELEPHONE_RATE = 8000


@dataclass(frozen=True)
class AugmentConfig:
    specaug_freq: int = 24  # widest frequency mask in mel bins; 0 turns masks off
    specaug_time: int = 48  # widest time mask in frames
    specaug_masks: int = 2  # masks of each kind per example
    mixup_alpha: float = 0.2  # 0 turns mixup off
    gain_db: float = 6.0  # random gain in [-gain_db, +gain_db]
    noise_p: float = 0.3  # probability of added white noise
    noise_snr_db: tuple[float, float] = (10.0, 30.0)
    telephone_p: float = 0.0  # probability of the telephone-channel variant

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(specaug_freq=0, specaug_time=0, mixup_alpha=0.0, gain_db=0.0, noise_p=0.0,
                   telephone_p=0.0)


def telephone_channel(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """8 kHz band limit plus a real G.711 mu-law encode/decode (libsndfile), back at sample_rate."""
    narrow = resample(waveform.astype(np.float32), sample_rate, TELEPHONE_RATE)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(narrow, -1.0, 1.0), TELEPHONE_RATE, format="WAV", subtype="ULAW")
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    return resample(decoded, TELEPHONE_RATE, sample_rate)


def augment_batch(mels: torch.Tensor, config: AugmentConfig, mel: MelConfig,
                  generator: torch.Generator) -> torch.Tensor:
    """Gain, noise and SpecAugment on (B, n_mels, frames) log-mels (a new tensor)."""
    x = mels.clone()
    batch, n_mels, frames = x.shape
    if config.gain_db > 0:
        db = (torch.rand(batch, 1, 1, generator=generator) * 2 - 1) * config.gain_db
        x += db / 10 * math.log(10)
    if config.noise_p > 0:
        chosen = torch.rand(batch, generator=generator) < config.noise_p
        if chosen.any():
            low, high = config.noise_snr_db
            snr = low + torch.rand(batch, generator=generator) * (high - low)
            signal_power = torch.exp(x).mean(dim=(1, 2))
            # white noise of unit power spreads evenly over the FFT bins; the filter bank's
            # row sums give its mel-domain shape
            shape = mel_filterbank(mel.sample_rate, mel.n_fft, mel.n_mels, mel.f_min,
                                   mel.f_max).sum(dim=1)
            shape = shape / shape.mean()
            level = signal_power / 10 ** (snr / 10)
            noisy = torch.log(torch.exp(x) + level[:, None, None] * shape[None, :, None])
            x = torch.where(chosen[:, None, None], noisy, x)
    fill = x.mean(dim=(1, 2), keepdim=True)
    for width, axis, size in ((config.specaug_freq, 1, n_mels),
                              (config.specaug_time, 2, frames)):
        if width <= 0:
            continue
        for _ in range(config.specaug_masks):
            w = torch.randint(0, width + 1, (batch,), generator=generator)
            start = (torch.rand(batch, generator=generator) * (size - w)).long()
            index = torch.arange(size)[None, :]
            mask = (index >= start[:, None]) & (index < (start + w)[:, None])
            mask = mask[:, :, None] if axis == 1 else mask[:, None, :]
            x = torch.where(mask, fill, x)
    return x
