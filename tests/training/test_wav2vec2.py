"""The raw-audio comparison (training/wav2vec2.py): a wav2vec2 trains with the ViT's recipe
on the framed waveform, starts from a local save_pretrained folder, and its model folder
loads as safely and scores wherever a ViT's does."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from batch_fixtures import LABELS, SAMPLE_CALLS, TINY_MEL, make_model_folder

from callmood.batch.worker import score_file
from callmood.model.folder import ModelFolderError, load_model_folder
from callmood.model.predict import predict_files
from callmood.signal.audio import load_mono
from callmood.signal.features import (
    CLIP_OVERLAP,
    WAVEFORM,
    Normalization,
    audio_features,
    model_input,
)
from callmood.signal.segment import VadConfig
from callmood.training.augment import AugmentConfig
from callmood.training.corpora import ravdess
from callmood.training.model import build_model, logits_and_embedding
from callmood.training.splits import Split
from callmood.training.train import TrainConfig, train
from callmood.training.wav2vec2 import Wav2Vec2InitError

WAVE_MEL = replace(TINY_MEL, frontend=WAVEFORM)


def test_the_backbone_sets_the_frontend_and_refuses_mel_band_settings():
    assert TrainConfig(backbone="wav2vec2").mel.frontend == WAVEFORM
    assert TrainConfig().with_overrides({"backbone": "wav2vec2"}).mel.frontend == WAVEFORM
    assert TrainConfig(backbone="vit", mel=WAVE_MEL).mel.frontend == "log-mel"
    with pytest.raises(ValueError, match="a waveform frontend has none"):
        TrainConfig(backbone="wav2vec2").with_overrides({"mel.speaker_mean": True})
    with pytest.raises(ValueError, match="backbone must be one of"):
        TrainConfig(backbone="hubert")


def test_a_fixed_batch_is_learnt_through_the_model_input(ravdess_subset):
    """The micro wav2vec2 fits 8 real clips through model_input and logits_and_embedding
    (the training loop's path), so the framed samples reach it in order."""
    root = ravdess_subset([1], ["happy", "sad", "angry", "fearful"], per_emotion=2)
    utterances, _ = ravdess.scan(root)
    clips = torch.stack([audio_features(load_mono(u.path, WAVE_MEL.sample_rate), WAVE_MEL)
                         [..., :WAVE_MEL.input_frames] for u in utterances])
    labels = sorted({u.label for u in utterances})
    targets = torch.tensor([labels.index(u.label) for u in utterances])
    torch.manual_seed(0)
    model = build_model(WAVE_MEL, labels, "random:micro").train()
    x = model_input(clips, WAVE_MEL, Normalization())
    assert x.shape == (8, WAVE_MEL.clip_samples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        logits, embedding = logits_and_embedding(model, x)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert embedding.shape == (8, model.classifier.in_features)
    assert losses[-1] < 0.3 * losses[0], losses


def test_trained_with_the_recipe_its_folder_scores_files_and_calls(ravdess_subset, tmp_path):
    root = ravdess_subset([1, 2], ["happy", "sad", "angry", "fearful"], per_emotion=4)
    utterances, _ = ravdess.scan(root)
    config = TrainConfig(backbone="wav2vec2", init="random:micro", mel=TINY_MEL, epochs=2,
                         batch_size=8, workers=1, device="cpu", affect_heads=0.5,
                         augment=AugmentConfig(specaug_time=16, mixup_alpha=0.2))
    result = train(Split(utterances[::2], utterances[1::2], [], "halves", True), config,
                   tmp_path / "w2v", label_map={})
    assert len(result.history) == 2 and np.isfinite(result.history[-1]["affect_loss"])
    folder = tmp_path / "w2v"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "wav2vec2"
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["mel"]["frontend"] == WAVEFORM
    model = load_model_folder(folder)
    assert type(model.model).__name__ == "Wav2Vec2ForSequenceClassification"

    (scored,) = predict_files(model, [utterances[0].path])
    assert scored["clips"] == 3 and sum(scored["probabilities"].values()) == pytest.approx(1)
    nightly = score_file(str(SAMPLE_CALLS / "audio" / "call-0001.wav"), str(folder),
                         VadConfig(), CLIP_OVERLAP, 3600, 16)
    assert nightly.error is None and len(nightly.windows) > 10
    np.testing.assert_allclose(nightly.probs.sum(axis=1), 1.0, atol=1e-4)


def test_it_starts_from_a_local_save_pretrained_folder(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    source = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16))
    source.save_pretrained(tmp_path / "pretrained")
    model = build_model(WAVE_MEL, LABELS, str(tmp_path / "pretrained"))
    assert model.config.id2label == dict(enumerate(LABELS))
    mine = model.wav2vec2.state_dict()
    for key, tensor in source.state_dict().items():
        assert torch.equal(mine[key], tensor), key
    convs = model.wav2vec2.feature_extractor.parameters()
    assert not any(p.requires_grad for p in convs)  # frozen, as in wav2vec2's fine-tuning
    assert model.classifier.weight.requires_grad

    pickled = tmp_path / "pickled"  # what an older save_pretrained wrote: refused unread
    pickled.mkdir()
    shutil.copy(tmp_path / "pretrained" / "config.json", pickled)
    torch.save(source.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(Wav2Vec2InitError, match="cannot load"):
        build_model(WAVE_MEL, LABELS, str(tmp_path / "pickled"))
    vit = build_model(TINY_MEL, LABELS, "random:micro")
    vit.save_pretrained(tmp_path / "vit")
    with pytest.raises(Wav2Vec2InitError, match="is a 'vit' model"):
        build_model(WAVE_MEL, LABELS, str(tmp_path / "vit"))
    with pytest.raises(Wav2Vec2InitError, match="unknown wav2vec2 preset"):
        build_model(WAVE_MEL, LABELS, "random:huge")


@pytest.fixture(scope="module")
def wav2vec2_folder(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("w2v"), mel=WAVE_MEL)


def edit_json(path, change):
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


@pytest.mark.parametrize(("file", "change", "message"), [
    ("preprocessor_config.json", lambda p: p["mel"].pop("frontend"),
     "frontend 'log-mel', but a wav2vec2 model reads the waveform frontend"),
    ("config.json", lambda c: c.update(conv_dim=[32] * 9, conv_kernel=[3] * 9,
                                       num_feat_extract_layers=9,
                                       conv_stride=[2] * 9),
     "convolutions 9 in config.json, 7 in the weights"),
    ("config.json", lambda c: c.update(num_conv_pos_embeddings=64),
     "does not describe the weights"),
    ("config.json", lambda c: c.update(num_hidden_layers=100_000),
     "layers 100000 in config.json, 2 in the weights"),
    ("config.json", lambda c: c.update(conv_stride=[1] * 7, num_attention_heads=32),
     "its convolutions make 25581 frames of a 1.60-s clip; callmood loads 1 to 1024"),
])
def test_inconsistent_wav2vec2_folders_are_refused(tmp_path, wav2vec2_folder, file, change,
                                                    message):
    folder = tmp_path / "m"
    shutil.copytree(wav2vec2_folder, folder)
    edit_json(folder / file, change)
    with pytest.raises(ModelFolderError, match=message):
        load_model_folder(folder)
