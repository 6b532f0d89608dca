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
categorical speech emotion recognition (e.g. Xia and Liu, 2017). The best epoch's affect
heads are kept beside the model folder's weights (`affect_heads.safetensors`, read by no
scorer), so that their valence can be compared with the classes' summed probabilities as a
negative-emotion readout (benchmarks/valence_readout.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from callmood.valence import DEFAULT_VALENCE

AFFECT_HEADS_FILE = "affect_heads.safetensors"

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


def save_affect_heads(model_dir: str | Path, state: dict[str, torch.Tensor]) -> None:
    """The affect heads' weights (AffectHeads.state_dict()) beside a model folder's; an
    empty state (a run resumed from a checkpoint older than the kept best heads) is not
    written."""
    if state:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                  str(Path(model_dir) / AFFECT_HEADS_FILE))


def load_affect_heads(model_dir: str | Path) -> AffectHeads | None:
    """The affect heads kept beside a model folder, or None if it has none."""
    path = Path(model_dir) / AFFECT_HEADS_FILE
    if not path.is_file():
        return None
    state = load_file(str(path))
    heads = AffectHeads(state["valence.weight"].shape[1])
    heads.load_state_dict(state)
    return heads.eval()
