"""Training-time augmentation.

Two kinds, by where they act:

* the call channel (training/channel.py: gain, band limits, 8 kHz, codecs, noise, babble,
  reverberation) acts on the waveform, because none of it is exact in the log-mel domain
  and a gain there is removed by the level-relative input anyway. Each training file gets
  `channel_variants` channels drawn once; their log-mels are cached beside the clean ones
  (training/cache.py), and each time an example is drawn it is, with probability
  `channel_p`, one of them instead of the clean audio;
* SpecAugment (Park et al., 2019) frequency and time masks act on log-mel batches, and
  mixup (Zhang et al., 2018) is applied by the training loop on inputs and targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from callmood.training.channel import ChannelConfig


@dataclass(frozen=True)
class AugmentConfig:
    specaug_freq: int = 24  # widest frequency mask in mel bins; 0 turns masks off
    specaug_time: int = 48  # widest time mask in frames
    specaug_masks: int = 2  # masks of each kind per example
    mixup_alpha: float = 0.2  # 0 turns mixup off
    channel_p: float = 0.0  # probability that an example is one of its channel variants
    channel_variants: int = 4  # channels drawn (and cached) per training file
    channel: ChannelConfig = field(default_factory=ChannelConfig)  # the ranges drawn from

    def __post_init__(self):
        if isinstance(self.channel, dict):  # from a JSON file of settings
            object.__setattr__(self, "channel", ChannelConfig.from_dict(self.channel))
        if not 0 <= self.channel_p <= 1:
            raise ValueError(f"channel_p must be in [0, 1], got {self.channel_p}")
        if self.channel_p > 0 and self.channel_variants < 1:
            raise ValueError("channel_p > 0 needs at least one channel variant")

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
