"""Training-time augmentation.

Two kinds, by where they act:

* the call channel (training/channel.py: gain, band limits, 8 kHz, codecs, noise, babble,
  reverberation) acts on the waveform, because none of it is exact in the log-mel domain
  and a gain there is removed by the level-relative input anyway. Each training file gets
  `channel_variants` channels drawn once; their log-mels are cached beside the clean ones
  (training/cache.py), and each time an example is drawn it is, with probability
  `channel_p`, one of them instead of the clean audio;
* on an example's cached log-mel before its clip is cut: a random margin of silence
  (`speech_margin`). A corpus records every take with silence around it, and its length
  and room tell corpora and even emotions apart; a call's turn comes with whatever its
  pauses hold (benchmarks/line_trace.py: the silence carries up to 30 points of UA on
  ASED, and v4's neutral depends on where an utterance's edges fall). So each example is
  cut to its speech with a margin drawn anew each time it is drawn, from a little into
  the speech to all of its silence;
* on log-mel batches: vocal tract length perturbation (VTLP, Jaitly & Hinton, 2013)
  scales each example's frequencies by a factor near 1, as a shorter or longer vocal
  tract moves the formants, so that a few hundred training speakers stand for more (it
  also moves a channel variant's band edges by the same factor); SpecAugment (Park et al.,
  2019) frequency and time masks; and mixup (Zhang et al., 2018), applied by the training
  loop on inputs and targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from callmood.signal.features import (
    MelConfig,
    hz_to_mel_band,
    is_finite_number,
    mel_band_edges_hz,
)
from callmood.signal.segment import take_bounds
from callmood.training.channel import ChannelConfig

# VTLP's warp is linear up to this share of the top frequency and then bends so that the
# top maps onto itself (Jaitly & Hinton's 4.8 of 8 kHz)
WARP_BEND = 0.6
# speech_margin's margins start this far inside the speech (a turn cut a little late)
MARGIN_INTO_SPEECH_S = 0.1


@dataclass(frozen=True)
class AugmentConfig:
    specaug_freq: int = 24  # widest frequency mask in mel bins; 0 turns masks off
    specaug_time: int = 48  # widest time mask in frames
    specaug_masks: int = 2  # masks of each kind per example
    mixup_alpha: float = 0.2  # 0 turns mixup off
    channel_p: float = 0.0  # probability that an example is one of its channel variants
    channel_variants: int = 4  # channels drawn (and cached) per training file
    channel: ChannelConfig = field(default_factory=ChannelConfig)  # the ranges drawn from
    # VTLP: each example's frequencies scaled by a factor drawn uniformly from
    # [1 - frequency_warp, 1 + frequency_warp]; 0 turns it off
    frequency_warp: float = 0.0
    # each example cut to its speech with a margin drawn uniformly from
    # [-MARGIN_INTO_SPEECH_S, speech_margin] seconds at each end; 0 turns it off
    speech_margin: float = 0.0

    def __post_init__(self):
        if isinstance(self.channel, dict):  # from a JSON file of settings
            object.__setattr__(self, "channel", ChannelConfig.from_dict(self.channel))
        if not 0 <= self.channel_p <= 1:
            raise ValueError(f"channel_p must be in [0, 1], got {self.channel_p}")
        if self.channel_p > 0 and self.channel_variants < 1:
            raise ValueError("channel_p > 0 needs at least one channel variant")
        if not (is_finite_number(self.frequency_warp) and 0 <= self.frequency_warp < 0.5):
            raise ValueError(f"frequency_warp must be a number in [0, 0.5), got "
                             f"{self.frequency_warp!r}")
        if not (is_finite_number(self.speech_margin) and 0 <= self.speech_margin <= 10):
            raise ValueError(f"speech_margin must be a number of seconds in [0, 10], got "
                             f"{self.speech_margin!r}")

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(specaug_freq=0, specaug_time=0, mixup_alpha=0.0, channel_p=0.0)


def spec_augment(mels: torch.Tensor, config: AugmentConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """SpecAugment masks on (B, n_mels, frames) log-mels (a new tensor); masks hold the
    clip's mean, which the level-relative input treats like any other value."""
    x = mels.clone()
    batch, n_mels, frames = x.shape
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


def speech_frames(mel: torch.Tensor, mel_config: MelConfig) -> tuple[int, int]:
    """[first, end) of the speech frames of a take's (rows, T) log-mel (natural log of
    power; its first n_mels rows), by the rule that cuts the call benchmark's takes
    (segment.take_bounds)."""
    power_db = torch.logsumexp(mel[:mel_config.n_mels], dim=0).numpy() * (10 / np.log(10))
    return take_bounds(power_db, mel_config.sample_rate / mel_config.hop_length)


def cut_at_margin(clean: torch.Tensor, example: torch.Tensor, config: AugmentConfig,
                  mel: MelConfig, generator: torch.Generator) -> torch.Tensor:
    """`example` (the clean log-mel or one of its channel variants, same frames) cut to the
    clean audio's speech with a margin drawn at each end from [-MARGIN_INTO_SPEECH_S,
    speech_margin] seconds, kept within the file; a cut that would leave under half the
    speech keeps the speech whole."""
    length = example.shape[-1]
    first, end = (min(frame, length - 1) for frame in speech_frames(clean, mel))
    end = max(end, first + 1)
    per_second = mel.sample_rate / mel.hop_length
    low, high = -MARGIN_INTO_SPEECH_S * per_second, config.speech_margin * per_second
    left, right = (low + (high - low) * torch.rand(2, generator=generator)).round().long()
    start = max(0, first - int(left))
    stop = min(length, end + int(right))
    if stop - start < (end - first) / 2:
        start, stop = first, end
    return example[..., start:stop]


def warp_factors(count: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """`count` VTLP factors drawn uniformly from [1 - frequency_warp, 1 + frequency_warp]."""
    spread = config.frequency_warp
    return 1.0 + spread * (2.0 * torch.rand(count, generator=generator) - 1.0)


def warp_frequencies(mels: torch.Tensor, factors: torch.Tensor, mel: MelConfig) -> torch.Tensor:
    """(B, rows, frames) log-mels with example b's frequencies scaled by factors[b] (a new
    tensor): what lay at f moves to factors[b] * f, up to WARP_BEND of the top frequency,
    above which the warp bends so that the top stays put. Rows below the log-mel's
    n_mels (prosody) are left as they are.

    Each band reads the frequency that the warp moves to its peak, interpolated linearly
    (in log power) between the two nearest bands and held at the edge bands beyond them.
    """
    top = mel.f_max
    peaks = mel_band_edges_hz(mel.n_mels, mel.f_min, top)[None, 1:-1]
    factor = factors.detach().cpu().double().numpy()[:, None]
    bend = WARP_BEND * top * np.minimum(factor, 1.0) / factor  # where the warp bends
    bent = factor * bend  # ... and where that frequency goes
    # the warp inverted: f = peak / factor below the bend, a straight line to the top above
    sources = np.where(peaks <= bent, peaks / factor,
                       top - (top - peaks) * (top - bend) / (top - bent))
    position = torch.from_numpy(hz_to_mel_band(sources, mel.n_mels, mel.f_min, top))
    below = position.floor().clamp(0, max(mel.n_mels - 2, 0))
    weight = (position - below).to(mels.device, mels.dtype)[:, :, None]
    bands = mels[:, :mel.n_mels]
    take = below.long().to(mels.device)[:, :, None].expand(-1, -1, bands.shape[-1])
    above = (take + 1).clamp(max=mel.n_mels - 1)
    warped = bands.gather(1, take) * (1 - weight) + bands.gather(1, above) * weight
    return torch.cat([warped, mels[:, mel.n_mels:]], dim=1)
