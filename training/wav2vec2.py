"""The raw-audio comparison: Hugging Face Wav2Vec2ForSequenceClassification over the waveform.

The spectrogram ViT reads a log-mel image; wav2vec2 (Baevski et al., 2020) reads the
samples through a stack of 1-d convolutions (20-ms frames) and a transformer, and pools the
frames for the classifier. callmood trains it with the ViT's recipe (the same examples,
channel variants, time masks, mixup, loss and early stopping); its features are the
WAVEFORM frontend's framed samples (callmood/signal/features.py), standardised per clip.

Two ways to initialise it (`--init` with `--backbone wav2vec2`):

* ``random:<preset>``: random weights, size from PRESETS. ``tiny`` has DeiT-Tiny's
  transformer (192 wide, 12 layers, 3 heads) behind a convolution stack 128 channels wide
  (wav2vec2-base's is 512), so that both backbones are compared at one encoder size and
  it trains on two CPU cores;
* a Hugging Face Hub id or a local ``save_pretrained`` folder of a wav2vec2 model (e.g.
  facebook/wav2vec2-base), loaded with ``from_pretrained(..., use_safetensors=True)`` and a
  new classifier; its convolution stack is frozen, as in wav2vec2's own fine-tuning.
"""

from __future__ import annotations

from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

from callmood.signal.features import MelConfig

PRESETS = {
    # name: (hidden, layers, heads, mlp, convolution channels)
    "micro": (32, 2, 2, 64, 32),  # tests and smoke runs
    "tiny": (192, 12, 3, 768, 128),
    "base": (768, 12, 12, 3072, 512),  # wav2vec2-base's shape
}
# 7 convolutions, strides 5 x 2^6: one frame per 320 samples (20 ms at 16 kHz)
_KERNELS, _STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)


class Wav2Vec2InitError(ValueError):
    """An --init value that cannot start a wav2vec2."""


def _recipe(dropout: float) -> dict:
    """The ViT recipe's regularisation: its dropout in every place wav2vec2 has one (its
    defaults are 0.1), no layer drop and none of wav2vec2's own time masks, which the
    ViT does not have either (the recipe's time masks act on both backbones' input)."""
    return {"hidden_dropout": dropout, "attention_dropout": dropout,
            "activation_dropout": dropout, "final_dropout": dropout, "layerdrop": 0.0,
            "apply_spec_augment": False}


def _labels(labels: list[str]) -> dict:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {name: i for i, name in enumerate(labels)}}


def build_wav2vec2(mel: MelConfig, labels: list[str], init: str,
                   dropout: float = 0.0) -> Wav2Vec2ForSequenceClassification:
    """A Wav2Vec2ForSequenceClassification for `mel.sample_rate` audio with a fresh
    classifier head."""
    if mel.sample_rate != 16000:
        raise Wav2Vec2InitError(f"wav2vec2 reads 16 kHz audio, the mel settings say "
                                f"{mel.sample_rate} Hz")
    if init.startswith("random:"):
        preset = init.split(":", 1)[1]
        if preset not in PRESETS:
            raise Wav2Vec2InitError(f"unknown wav2vec2 preset {preset!r}; choose from "
                                    f"{sorted(PRESETS)}")
        hidden, layers, heads, mlp, conv = PRESETS[preset]
        config = Wav2Vec2Config(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=mlp, conv_dim=(conv,) * len(_KERNELS), conv_kernel=_KERNELS,
            conv_stride=_STRIDES, classifier_proj_size=hidden,
            num_conv_pos_embeddings=16 if preset == "micro" else 128,
            **_recipe(dropout), **_labels(labels))
        return Wav2Vec2ForSequenceClassification(config)
    from transformers import AutoConfig

    try:
        source = AutoConfig.from_pretrained(init)
    except (OSError, ValueError) as err:
        raise Wav2Vec2InitError(f"cannot load --init {init!r}: {err}") from None
    if source.model_type != "wav2vec2":
        raise Wav2Vec2InitError(f"--init {init!r} is a {source.model_type!r} model; "
                                "--backbone wav2vec2 starts from wav2vec2 weights")
    try:
        model = Wav2Vec2ForSequenceClassification.from_pretrained(
            init, use_safetensors=True, ignore_mismatched_sizes=True, **_recipe(dropout),
            **_labels(labels))
    except (OSError, ValueError) as err:
        raise Wav2Vec2InitError(f"cannot load --init {init!r}: {err}") from None
    model.freeze_feature_encoder()
    return model
