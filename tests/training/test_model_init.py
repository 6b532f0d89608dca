"""training/model.py: random presets, the timm checkpoint path and the Hugging Face path.

The timm conversion is checked against a plain-torch DeiT forward written here from the
timm state dict, at DeiT's native 14 x 14 patch grid, where the conversion must be exact.
"""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import (
    ASTConfig,
    ASTForAudioClassification,
    BertConfig,
    BertModel,
    DeiTConfig,
    DeiTModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from callmood.signal.features import MelConfig
from callmood.training.model import (
    PRESETS,
    InitError,
    adapt_position_embeddings,
    build_model,
    timm_to_hf,
)

LABELS = ["neutral", "happy", "sad"]
NATIVE = MelConfig(n_mels=224, input_frames=224)  # DeiT's own 224 x 224 input: 14 x 14 patches


@pytest.fixture(scope="module")
def deit_dir(shared_dir):
    return shared_dir / "weights" / "deit-tiny-in1k"


@pytest.fixture(scope="module")
def deit_weights(deit_dir):
    return load_file(str(deit_dir / "model.safetensors"))


def reference_deit(w: dict, x: torch.Tensor, depth: int = 12, heads: int = 3,
                   eps: float = 1e-6) -> torch.Tensor:
    """timm's VisionTransformer forward_features, from the raw state dict: (B, 1 + N, D)."""
    x = F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w["cls_token"].expand(len(x), -1, -1), x], dim=1) + w["pos_embed"]
    batch, tokens, dim = x.shape
    head_dim = dim // heads
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        qkv = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        attention = ((q @ k.transpose(-2, -1)) * head_dim ** -0.5).softmax(dim=-1)
        h = (attention @ v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + F.linear(h, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        h = F.layer_norm(x, (dim,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        h = F.linear(F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])),
                     w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
        x = x + h
    return F.layer_norm(x, (dim,), w["norm.weight"], w["norm.bias"], eps)


# --- random presets ---------------------------------------------------------------------

def test_random_micro_model(tiny_mel):
    model = build_model(tiny_mel, LABELS, "random:micro")
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size) == PRESETS["micro"]
    assert config.num_channels == 1 and tuple(config.image_size) == (64, 160)
    assert config.id2label == {0: "neutral", 1: "happy", 2: "sad"}
    assert config.label2id == {"neutral": 0, "happy": 1, "sad": 2}
    out = model(pixel_values=torch.randn(2, 1, 64, 160)).logits
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_default_init_is_random_tiny(tiny_mel):
    config = build_model(tiny_mel, LABELS).config
    assert (config.hidden_size, config.num_hidden_layers) == PRESETS["tiny"][:2]


def test_bad_random_init(tiny_mel):
    with pytest.raises(InitError, match="unknown preset 'huge'"):
        build_model(tiny_mel, LABELS, "random:huge")
    with pytest.raises(ValueError, match="multiples of the patch size"):
        build_model(MelConfig(n_mels=60, input_frames=160), LABELS, "random:micro")


# --- timm checkpoint (the shared DeiT-Tiny) --------------------------------------------

def test_timm_conversion_matches_reference_forward(deit_dir, deit_weights):
    model = build_model(NATIVE, LABELS, str(deit_dir)).eval()
    x = torch.randn(2, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.vit(pixel_values=x).last_hidden_state
        # a 1-channel input x through summed RGB kernels equals x repeated to 3 channels
        reference = reference_deit(deit_weights, x.repeat(1, 3, 1, 1))
    assert ours.shape == reference.shape == (2, 197, 192)
    torch.testing.assert_close(ours[:, 0], reference[:, 0], rtol=1e-4, atol=5e-4)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=5e-4)


def test_timm_every_encoder_key_loads(deit_dir, deit_weights):
    model = build_model(NATIVE, LABELS, str(deit_dir))
    converted = timm_to_hf(deit_weights, 12, (14, 14))
    state = model.state_dict()
    encoder_keys = {k for k in state if not k.startswith("classifier.")}
    assert encoder_keys == set(converted)
    for key in encoder_keys:
        torch.testing.assert_close(state[key], converted[key], rtol=0, atol=0, msg=key)
    # and the values are the checkpoint's, not a fresh initialisation
    torch.testing.assert_close(state["vit.layers.11.mlp.fc2.weight"],
                               deit_weights["blocks.11.mlp.fc2.weight"], rtol=0, atol=0)
    q = state["vit.layers.3.attention.q_proj.weight"]
    torch.testing.assert_close(q, deit_weights["blocks.3.attn.qkv.weight"][:192], rtol=0, atol=0)


def test_timm_weights_on_a_spectrogram_grid(deit_dir, deit_weights, tiny_mel):
    model = build_model(tiny_mel, LABELS, str(deit_dir))
    state = model.state_dict()
    pos = state["vit.embeddings.position_embeddings"]
    assert pos.shape == (1, 1 + 4 * 10, 192)
    torch.testing.assert_close(pos[:, 0], deit_weights["pos_embed"][:, 0], rtol=0, atol=0)
    kernel = state["vit.embeddings.patch_embeddings.projection.weight"]
    torch.testing.assert_close(kernel, deit_weights["patch_embed.proj.weight"].sum(1, keepdim=True))
    out = model(pixel_values=torch.randn(1, 1, 64, 160)).logits
    assert out.shape == (1, 3)


def test_distillation_token_is_averaged_into_cls(deit_weights):
    weights = dict(deit_weights)
    weights["dist_token"] = torch.randn(1, 1, 192)
    extra = torch.randn(1, 1, 192)
    pos = deit_weights["pos_embed"]
    weights["pos_embed"] = torch.cat([pos[:, :1], extra, pos[:, 1:]], dim=1)
    out = timm_to_hf(weights, 12, (14, 14))
    torch.testing.assert_close(out["vit.embeddings.cls_token"],
                               (deit_weights["cls_token"] + weights["dist_token"]) / 2)
    torch.testing.assert_close(out["vit.embeddings.position_embeddings"][:, 0],
                               (pos[:, 0] + extra[:, 0]) / 2)
    torch.testing.assert_close(out["vit.embeddings.position_embeddings"][:, 1:], pos[:, 1:],
                               rtol=1e-5, atol=1e-5)


def test_position_embeddings_interpolate_to_any_grid():
    pos = torch.randn(1, 1 + 9, 8)
    out = adapt_position_embeddings(pos, 1, (2, 5))
    assert out.shape == (1, 11, 8)
    same = adapt_position_embeddings(pos, 1, (3, 3))
    torch.testing.assert_close(same, pos, rtol=1e-5, atol=1e-5)
    with pytest.raises(InitError, match="not a square grid"):
        adapt_position_embeddings(torch.randn(1, 1 + 6, 8), 1, (2, 5))


# --- Hugging Face save_pretrained folders ------------------------------------------------

def tiny_vit_config(**extra) -> dict:
    return dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, patch_size=16, **extra)


def check_encoder_copied(model, source_state: dict, prefix: str, n_prefix_tokens: int,
                         grid=(4, 10)):
    state = model.state_dict()
    emb = "vit.embeddings."
    copied = 0
    for key, value in source_state.items():
        rest = key[len(prefix):] if key.startswith(prefix) else ""
        if rest.startswith(("layers.", "layernorm.")):
            torch.testing.assert_close(state["vit." + rest], value, rtol=0, atol=0, msg=key)
            copied += 1
    assert copied == 2 * 16 + 2  # two blocks of 16 tensors, the final LayerNorm
    kernel = source_state[prefix + "embeddings.patch_embeddings.projection.weight"]
    torch.testing.assert_close(state[emb + "patch_embeddings.projection.weight"],
                               kernel.sum(1, keepdim=True))
    torch.testing.assert_close(state[emb + "patch_embeddings.projection.bias"],
                               source_state[prefix + "embeddings.patch_embeddings.projection.bias"])
    pos = source_state[prefix + "embeddings.position_embeddings"]
    torch.testing.assert_close(state[emb + "position_embeddings"],
                               adapt_position_embeddings(pos, n_prefix_tokens, grid))


@pytest.mark.parametrize("head", [False, True])
def test_init_from_vit_folder(tmp_path, tiny_mel, head):
    config = ViTConfig(image_size=32, num_channels=3, **tiny_vit_config())
    torch.manual_seed(1)
    source = ViTForImageClassification(config) if head else ViTModel(config)
    source.save_pretrained(tmp_path / "vit")
    assert (tmp_path / "vit" / "model.safetensors").is_file()
    model = build_model(tiny_mel, LABELS, str(tmp_path / "vit"))
    assert model.config.num_channels == 1 and model.config.num_labels == 3
    prefix = "vit." if head else ""
    state = source.state_dict()
    check_encoder_copied(model, state, prefix, 1)
    torch.testing.assert_close(model.state_dict()["vit.embeddings.cls_token"],
                               state[prefix + "embeddings.cls_token"])


def test_init_from_ast_folder(tmp_path, tiny_mel):
    config = ASTConfig(num_mel_bins=48, max_length=48, frequency_stride=16, time_stride=16,
                       num_labels=5, **tiny_vit_config())
    torch.manual_seed(2)
    source = ASTForAudioClassification(config)
    source.save_pretrained(tmp_path / "ast")
    model = build_model(tiny_mel, LABELS, str(tmp_path / "ast"))
    prefix = "audio_spectrogram_transformer."
    state = source.state_dict()
    check_encoder_copied(model, state, prefix, 2)  # [CLS] and distillation token
    torch.testing.assert_close(model.state_dict()["vit.embeddings.cls_token"],
                               (state[prefix + "embeddings.cls_token"]
                                + state[prefix + "embeddings.distillation_token"]) / 2)
    assert model.config.layer_norm_eps == config.layer_norm_eps
    assert model(pixel_values=torch.randn(1, 1, 64, 160)).logits.shape == (1, 3)


def test_init_from_deit_folder(tmp_path, tiny_mel):
    torch.manual_seed(3)
    source = DeiTModel(DeiTConfig(image_size=32, **tiny_vit_config()))
    source.save_pretrained(tmp_path / "deit")
    model = build_model(tiny_mel, LABELS, str(tmp_path / "deit"))
    check_encoder_copied(model, source.state_dict(), "", 2)


def test_hf_folder_with_only_a_pickle_is_refused(tmp_path, tiny_mel):
    source = ViTModel(ViTConfig(image_size=32, **tiny_vit_config()))
    folder = tmp_path / "pickled"
    source.config.save_pretrained(folder)
    torch.save(source.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(InitError, match="model.safetensors"):
        build_model(tiny_mel, LABELS, str(folder))


def test_non_vit_model_is_refused(tmp_path, tiny_mel):
    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(
        tmp_path / "bert")
    with pytest.raises(InitError, match="is a 'bert' model"):
        build_model(tiny_mel, LABELS, str(tmp_path / "bert"))


def test_missing_local_folder_is_an_init_error(tmp_path, tiny_mel):
    with pytest.raises(InitError, match="folder not found"):
        build_model(tiny_mel, LABELS, str(tmp_path / "no" / "such" / "folder"))

