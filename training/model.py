"""The spectrogram ViT: Hugging Face ViTForImageClassification over 1-channel log-mels.

Three ways to initialise it (`--init`):

* ``random:<preset>`` (or nothing): random weights, size from PRESETS;
* a timm-format ViT checkpoint folder (``model.safetensors`` with timm key names and a
  ``config.json`` naming the timm architecture, like ../shared/weights/deit-tiny-in1k);
* a Hugging Face Hub id or a local ``save_pretrained`` folder of a ViT, DeiT or AST model
  (loaded with ``from_pretrained(..., use_safetensors=True)``).

Pretrained image weights are adapted to spectrograms as in the Audio Spectrogram
Transformer (Gong et al., 2021): the RGB patch kernel is summed into one channel and the
position embeddings are interpolated to the spectrogram's patch grid.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import ViTConfig, ViTForImageClassification

from callmood.signal.features import WAVEFORM, MelConfig
from callmood.training.wav2vec2 import build_wav2vec2

PRESETS = {
    # name: (hidden, layers, heads, mlp)
    "micro": (64, 2, 2, 128),  # tests and smoke runs
    "tiny": (192, 12, 3, 768),  # DeiT-Tiny's shape
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
}


class InitError(ValueError):
    """An --init value that cannot be used."""


def vit_config(mel: MelConfig, labels: list[str], hidden: int, layers: int, heads: int,
               mlp: int, patch: int = 16, dropout: float = 0.0,
               layer_norm_eps: float = 1e-6) -> ViTConfig:
    if mel.rows % patch or mel.input_frames % patch:
        raise ValueError(f"n_mels + prosody_rows ({mel.rows}) and input_frames "
                         f"({mel.input_frames}) must be multiples of the patch size {patch}")
    return ViTConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=mlp, image_size=(mel.rows, mel.input_frames), patch_size=patch,
        num_channels=1, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        layer_norm_eps=layer_norm_eps, qkv_bias=True,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
    )


def patch_grid(config: ViTConfig) -> tuple[int, int]:
    height, width = config.image_size
    return height // config.patch_size, width // config.patch_size


def adapt_position_embeddings(pos: torch.Tensor, n_prefix: int,
                              grid: tuple[int, int]) -> torch.Tensor:
    """(1, n_prefix + H*W, D) embeddings of a square grid -> one [CLS] + the new grid.

    Several prefix tokens (DeiT/AST keep a distillation token) are averaged into one.
    """
    prefix, patches = pos[:, :n_prefix], pos[:, n_prefix:]
    side = int(round(patches.shape[1] ** 0.5))
    if side * side != patches.shape[1]:
        raise InitError(f"position embeddings of {patches.shape[1]} patches are not a square "
                        "grid")
    dim = patches.shape[-1]
    square = patches.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(square, size=grid, mode="bicubic",
                                              align_corners=False)
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim)
    return torch.cat([prefix.mean(dim=1, keepdim=True), resized], dim=1)


def one_channel_kernel(weight: torch.Tensor) -> torch.Tensor:
    """(D, C, p, p) patch kernel -> (D, 1, p, p); RGB kernels are summed (AST recipe)."""
    return weight.sum(dim=1, keepdim=True)


def build_model(mel: MelConfig, labels: list[str], init: str | None = None,
                dropout: float = 0.0) -> torch.nn.Module:
    """A ViTForImageClassification for `mel`-sized inputs with a fresh classifier head, or
    for the waveform frontend a Wav2Vec2ForSequenceClassification (training/wav2vec2.py)."""
    init = init or "random:tiny"
    if mel.frontend == WAVEFORM:
        return build_wav2vec2(mel, labels, init, dropout)
    if init.startswith("random:"):
        preset = init.split(":", 1)[1]
        if preset not in PRESETS:
            raise InitError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        config = vit_config(mel, labels, *PRESETS[preset], dropout=dropout)
        return ViTForImageClassification(config)
    path = Path(init).expanduser()
    if not path.exists() and init.startswith((".", "/", "~")):
        raise InitError(f"--init {init}: folder not found")
    if path.is_dir() and _is_timm_folder(path):
        return _from_timm(path, mel, labels, dropout)
    return _from_hugging_face(init, mel, labels, dropout)


@contextmanager
def classifier_inputs(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """The embeddings the model's classifier reads (the ViT's [CLS] token, wav2vec2's pooled
    frames) while in the block, a tensor per forward pass, in order."""
    seen: list[torch.Tensor] = []
    hook = model.classifier.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    try:
        yield seen
    finally:
        hook.remove()


def logits_and_embedding(model: torch.nn.Module,
                         x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits for model_input `x` and the embedding its classifier read, for
    the auxiliary heads: one forward pass through the model's own code, whichever
    backbone it is."""
    with classifier_inputs(model) as seen:
        logits = model(**{model.main_input_name: x}).logits
    return logits, seen[0]


def _load_encoder_weights(model: ViTForImageClassification, encoder: dict) -> None:
    """Load every encoder tensor; only the new classifier head may stay untouched."""
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise InitError(f"pretrained weights do not fit the ViT: missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]}")


def _is_timm_folder(path: Path) -> bool:
    config = path / "config.json"
    if not (path / "model.safetensors").is_file() or not config.is_file():
        return False
    return "architecture" in json.loads(config.read_text())


def _from_timm(path: Path, mel: MelConfig, labels: list[str],
               dropout: float) -> ViTForImageClassification:
    meta = json.loads((path / "config.json").read_text())
    args = meta.get("model_args", {})
    try:
        hidden, layers, heads = args["embed_dim"], args["depth"], args["num_heads"]
    except KeyError as err:
        raise InitError(f"{path}/config.json lacks model_args.{err.args[0]}") from None
    weights = load_file(str(path / "model.safetensors"))
    mlp = weights["blocks.0.mlp.fc1.weight"].shape[0]
    patch = args.get("patch_size", 16)
    config = vit_config(mel, labels, hidden, layers, heads, mlp, patch=patch, dropout=dropout)
    model = ViTForImageClassification(config)
    _load_encoder_weights(model, timm_to_hf(weights, layers, patch_grid(config)))
    return model


def timm_to_hf(weights: dict[str, torch.Tensor], layers: int,
               grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Rename a timm ViT/DeiT state dict to transformers 5 ViT keys, adapted to `grid`."""
    n_prefix = 1 + int("dist_token" in weights)
    cls = weights["cls_token"]
    if "dist_token" in weights:
        cls = (cls + weights["dist_token"]) / 2
    out = {
        "vit.embeddings.cls_token": cls,
        "vit.embeddings.position_embeddings":
            adapt_position_embeddings(weights["pos_embed"], n_prefix, grid),
        "vit.embeddings.patch_embeddings.projection.weight":
            one_channel_kernel(weights["patch_embed.proj.weight"]),
        "vit.embeddings.patch_embeddings.projection.bias": weights["patch_embed.proj.bias"],
        "vit.layernorm.weight": weights["norm.weight"],
        "vit.layernorm.bias": weights["norm.bias"],
    }
    for i in range(layers):
        src, dst = f"blocks.{i}.", f"vit.layers.{i}."
        for part in ("weight", "bias"):
            q, k, v = weights[f"{src}attn.qkv.{part}"].chunk(3, dim=0)
            out[f"{dst}attention.q_proj.{part}"] = q
            out[f"{dst}attention.k_proj.{part}"] = k
            out[f"{dst}attention.v_proj.{part}"] = v
            out[f"{dst}attention.o_proj.{part}"] = weights[f"{src}attn.proj.{part}"]
            out[f"{dst}layernorm_before.{part}"] = weights[f"{src}norm1.{part}"]
            out[f"{dst}layernorm_after.{part}"] = weights[f"{src}norm2.{part}"]
            out[f"{dst}mlp.fc1.{part}"] = weights[f"{src}mlp.fc1.{part}"]
            out[f"{dst}mlp.fc2.{part}"] = weights[f"{src}mlp.fc2.{part}"]
    return {k: v.contiguous() for k, v in out.items()}


# Prefixes under which transformers keeps the encoder of ViT-like models.
_HF_ENCODER_PREFIXES = ("vit.", "deit.", "audio_spectrogram_transformer.", "")


def _from_hugging_face(name_or_path: str, mel: MelConfig, labels: list[str],
                       dropout: float) -> ViTForImageClassification:
    """A Hub id or save_pretrained folder of a ViT, DeiT or AST (safetensors only)."""
    from transformers import AutoConfig, AutoModel

    try:
        source_config = AutoConfig.from_pretrained(name_or_path)
        source = AutoModel.from_pretrained(name_or_path, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise InitError(f"cannot load --init {name_or_path!r}: {err}") from None
    if source_config.model_type not in ("vit", "deit", "audio-spectrogram-transformer"):
        raise InitError(f"--init {name_or_path!r} is a {source_config.model_type!r} model; "
                        "callmood can start from ViT, DeiT or AST weights")
    state = source.state_dict()
    prefix = next(p for p in _HF_ENCODER_PREFIXES if f"{p}embeddings.cls_token" in state)
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    config = vit_config(mel, labels, source_config.hidden_size,
                        source_config.num_hidden_layers, source_config.num_attention_heads,
                        source_config.intermediate_size, patch=source_config.patch_size,
                        dropout=dropout, layer_norm_eps=source_config.layer_norm_eps)
    model = ViTForImageClassification(config)
    cls = state.pop("embeddings.cls_token")
    n_prefix = 1
    if "embeddings.distillation_token" in state:
        cls = (cls + state.pop("embeddings.distillation_token")) / 2
        n_prefix = 2
    encoder = {
        "vit.embeddings.cls_token": cls,
        "vit.embeddings.position_embeddings": adapt_position_embeddings(
            state.pop("embeddings.position_embeddings"), n_prefix, patch_grid(config)),
        "vit.embeddings.patch_embeddings.projection.weight": one_channel_kernel(
            state.pop("embeddings.patch_embeddings.projection.weight")),
    }
    encoder.update({f"vit.{k}": v for k, v in state.items()
                    if k.startswith(("embeddings.", "layers.", "layernorm."))})
    _load_encoder_weights(model, encoder)
    return model
