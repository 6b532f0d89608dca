"""Heads trained beside the classifier on the ViT's [CLS] embedding, and dropped from the
model folder: they shape what the encoder learns, not what it outputs.

**Corpus adversary**: make the embedding useless for telling the corpora apart, so that
what the model learns about emotion is not a corpus's recording room, microphone or
script. A small corpus classifier reads the embedding through a gradient reversal layer
(Ganin and Lempitsky, 2015): it learns to name the corpus, while the reversed gradient pushes the
encoder to hide it. Domain-adversarial training has been reported to help cross-corpus
speech emotion recognition (Abdelwahab and Busso, 2018). The classifier exists only
during training.

**Affect heads**: valence (negative, neutral, positive) and arousal (low, high) of each
example's emotion, a multi-task signal shared by every corpus whatever its label set
(corpora label emotions differently, but agree that angry is negative and aroused);
learning dimensional attributes beside the categories has been reported to help
categorical speech emotion recognition (e.g. Xia and Liu, 2017).
"""

from __future__ import annotations

import math

import torch

from callmood.valence import DEFAULT_VALENCE

# arousal of each label (1: high); disgust sits between; labels not listed count as low
AROUSAL = {"angry": 1.0, "happy": 1.0, "fearful": 1.0, "surprised": 1.0, "disgust": 0.5}


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


def affect_table(labels: list[str]) -> torch.Tensor:
    """(C, 5): each class's soft valence (negative, neutral, positive) and arousal (low,
    high) targets, so that a batch's (B, C) soft labels, mixed up or not, give its affect
    targets as labels @ table."""
    rows = []
    for label in labels:
        valence = DEFAULT_VALENCE.get(label, 0)
        arousal = AROUSAL.get(label, 0.0)
        rows.append([float(valence < 0), float(valence == 0), float(valence > 0),
                     1.0 - arousal, arousal])
    return torch.tensor(rows)


class AffectHeads(torch.nn.Module):
    """(B, hidden) embeddings -> (B, 5) logits: valence (3) then arousal (2)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.valence = torch.nn.Linear(hidden, 3)
        self.arousal = torch.nn.Linear(hidden, 2)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.valence(embedding), self.arousal(embedding)], dim=-1)
