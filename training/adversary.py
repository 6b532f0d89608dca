"""Corpus-adversarial training: make the ViT's [CLS] embedding useless for telling the
corpora apart, so that what it learns about emotion is not a corpus's recording room,
microphone or script.

A small corpus classifier reads the embedding through a gradient reversal layer (Ganin and
Lempitsky, 2015): it learns to name the corpus, while the reversed gradient pushes the
encoder to hide it. Domain-adversarial training has been reported to help cross-corpus
speech emotion recognition (Abdelwahab and Busso, 2018). The classifier exists only
during training; the model folder does not contain it.
"""

from __future__ import annotations

import math

import torch


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def reversal_strength(progress: float) -> float:
    """Ganin and Lempitsky's schedule over training progress 0..1: 0 at the start, when the
    embedding means nothing yet, rising smoothly towards 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * min(max(progress, 0.0), 1.0))) - 1.0


class CorpusAdversary(torch.nn.Module):
    """Corpus logits of (B, hidden) embeddings, with the gradient into them reversed."""

    def __init__(self, hidden: int, corpora: int):
        super().__init__()
        self.head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                                        torch.nn.Linear(hidden, corpora))

    def forward(self, embedding: torch.Tensor, strength: float) -> torch.Tensor:
        return self.head(_ReverseGradient.apply(embedding, strength))
