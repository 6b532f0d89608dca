"""training/train.py and cache.py: a tiny real run learns, bad files are skipped and counted."""

import importlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import StopTraining, stop_after
from processes import kill_once_workers_run, still_alive_after
from safetensors.torch import load_file, save_file

from callmood.model.folder import load_model_folder
from callmood.model.predict import Inference
from callmood.signal import segment
from callmood.signal.features import band_levels
from callmood.training.augment import AugmentConfig
from callmood.training.auxiliary import (
    CorpusAdversary,
    affect_table,
    load_affect_heads,
    reversal_strength,
)
from callmood.training.cache import (
    CACHE_LIMIT_ENV,
    Features,
    _cache_file,
    babble_bank,
    clean,
    condition_variant,
    extract,
    training_channels,
)
from callmood.training.channel import ChannelConfig
from callmood.training.checkpoint import STATE, CheckpointError, checkpoint_dir, read_run
from callmood.training.corpora import ravdess
from callmood.training.corpora.base import Utterance
from callmood.training.corpora.registry import load_corpus
from callmood.training.evaluate import classification_metrics
from callmood.training.splits import Split
from callmood.training.train import (
    TrainConfig,
    channel_mix,
    class_loss,
    corpus_classes,
    cpu_has_native_bf16,
    epoch_order,
    example_speaker_profiles,
    lr_factor,
    make_batch,
    train,
    update_average,
    validation_variants,
    warn_slow_bf16,
    weights_of,
)

# A micro model with no augmentation or regularisation: the point is to see it learn.
OVERFIT = dict(init="random:micro", epochs=40, batch_size=16, lr=1e-3, warmup_epochs=1,
               balance="none", dropout=0.0, label_smoothing=0.0, workers=1, device="cpu",
               augment=AugmentConfig.off())


def accuracy(model_dir, utterances) -> float:
    model = load_model_folder(model_dir)
    features = extract(utterances, model.mel)
    probs = Inference.of(model).utterances(features.mels["clean"]).probs
    targets = np.array([model.labels.index(u.label) for u in features.utterances])
    return float((probs.argmax(1) == targets).mean())


def test_prosody_rows_train_through_the_recipe_into_a_folder_that_scores(ravdess_subset,
                                                                         tiny_mel, tmp_path):
    root = ravdess_subset([1, 2], ["happy", "sad", "angry", "fearful"], per_emotion=4)
    utterances, _ = ravdess.scan(root)
    mel = replace(tiny_mel, prosody_rows=16)
    config = TrainConfig(init="random:micro", mel=mel, epochs=2, batch_size=8, workers=1,
                         device="cpu", augment=AugmentConfig(specaug_freq=8, specaug_time=16))
    train(Split(utterances[::2], utterances[1::2], [], "halves", True), config,
          tmp_path / "m", label_map={})
    model = load_model_folder(tmp_path / "m")
    assert model.mel.prosody_rows == 16 and model.model.config.image_size == [80, 160]
    features = extract(utterances[:3], model.mel)
    assert features.mels["clean"][0].shape[0] == 80
    probs = Inference.of(model).utterances(features.mels["clean"]).probs
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_the_best_epoch_is_chosen_on_a_fixed_channel_mix(ravdess_subset, tiny_mel,
                                                          tmp_path):
    with pytest.raises(ValueError, match="kept for testing robustness"):
        TrainConfig(val_channels=["unseen_narrow"])
    with pytest.raises(ValueError, match="unknown channel condition"):
        TrainConfig(val_channels=["moon"])
    root = ravdess_subset([1, 2], ["happy", "sad", "angry", "fearful"], per_emotion=4)
    utterances, _ = ravdess.scan(root)
    split = Split(utterances[::2], utterances[1::2], [], "halves", True)
    config = TrainConfig(init="random:micro", mel=tiny_mel, epochs=2, batch_size=8, workers=1,
                         device="cpu", val_channels=["clean", "telephone", "noise_snr10"])
    assert config.val_channels == ("clean", "telephone", "noise_snr10")
    variants = validation_variants(split.val, config)
    names = [variants[name].name for name in config.val_channels]
    data = extract(split.val, tiny_mel, list(variants.values()))
    mix = channel_mix(data, names)
    picked = [next(n for n in names if torch.equal(m, data.mels[n][i]))
              for i, m in enumerate(mix)]
    assert set(picked) == set(names)  # each utterance through one, every condition used
    backwards = Features(data.utterances[::-1], {k: v[::-1] for k, v in data.mels.items()})
    assert all(torch.equal(a, b) for a, b in zip(channel_mix(backwards, names)[::-1], mix,
                                                  strict=True))  # by path, not by order

    result = train(split, config, tmp_path / "m", label_map={})
    model = load_model_folder(tmp_path / "m")
    probs = Inference.of(model).utterances(mix, speakers=data.speakers()).probs
    targets = np.array([model.labels.index(u.label) for u in data.utterances])
    chosen = classification_metrics(targets, probs.argmax(1), model.labels)["macro_f1"]
    assert chosen == pytest.approx(result.best_val_macro_f1)  # the mix, not clean speech


def test_a_student_learns_its_teachers_reading_instead_of_the_labels(ravdess_subset,
                                                                     tiny_mel, tmp_path):
    """With teacher_weight 1 the labels do not count: taught by a teacher that hears
    "sad" in everything, the student does too."""
    from batch_fixtures import make_model_folder

    from callmood.training.train import load_teacher, teacher_targets

    root = ravdess_subset([1, 2], ["happy", "sad", "angry", "fearful"], per_emotion=4)
    utterances, _ = ravdess.scan(root)
    sad = make_model_folder(tmp_path / "sad", mel=tiny_mel)  # labels in another order
    weights = load_file(str(sad / "model.safetensors"))
    weights["classifier.weight"].zero_()
    weights["classifier.bias"].copy_(-10 + 20 * (torch.arange(7) == 2))  # "sad"
    save_file(weights, str(sad / "model.safetensors"))
    labels = ["happy", "sad", "angry", "fearful"]
    teacher = load_teacher(str(sad), labels)
    taught = teacher_targets([teacher, teacher], utterances, labels, None, 1)
    assert taught.shape == (32, 4) and (taught[:, 1] > 0.99).all()
    with pytest.raises(ValueError, match="lacks the labels"):
        load_teacher(str(sad), labels + ["calm"])
    with pytest.raises(ValueError, match="teacher_weight must be a number"):
        TrainConfig(teachers=[str(sad)], teacher_weight="0.5")
    with pytest.raises(ValueError, match="teacher_weight needs teachers"):
        TrainConfig(teacher_weight=0.8)
    assert TrainConfig(teachers=str(sad)).teachers == (str(sad.resolve()),)  # not letters

    config = TrainConfig(mel=tiny_mel, teachers=[str(sad)], teacher_weight=1.0,
                         **{**OVERFIT, "epochs": 6})
    result = train(Split(utterances, [], [], "all", True), config, tmp_path / "m",
                   label_map={})
    model = load_model_folder(result.model_dir)
    features = extract(utterances, model.mel)
    probs = Inference.of(model).utterances(features.mels["clean"]).probs
    assert (probs.argmax(1) == model.labels.index("sad")).mean() > 0.9
    assert model.card.training["teachers"] == [{"folder": str(sad.resolve()),
                                                "version": teacher.version}]


def test_tiny_model_learns_a_real_subset(ravdess_subset, tiny_mel, tmp_path):
    # 2 actors x 4 emotions x 8 takes = 64 real utterances; chance is 25 %
    root = ravdess_subset([1, 2], ["happy", "sad", "angry", "fearful"], per_emotion=8)
    utterances, skipped = ravdess.scan(root)
    assert len(utterances) == 64 and not skipped
    config = TrainConfig(mel=tiny_mel, **OVERFIT)
    result = train(Split(utterances, [], [], "all training", True), config, tmp_path / "m",
                   label_map={})
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3])
    train_accuracy = accuracy(result.model_dir, utterances)
    assert train_accuracy >= 0.5, f"train accuracy {train_accuracy:.2f} (chance 0.25)"

    card = json.loads((tmp_path / "m" / "callmood.json").read_text())
    assert card["labels"] == ["happy", "sad", "angry", "fearful"]
    assert card["training"]["config"]["init"] == "random:micro"
    assert card["training"]["config"]["mel"]["input_frames"] == 160
    assert card["training"]["epochs_run"] == 40 and len(card["training"]["history"]) == 40
    assert card["training"]["skipped_unreadable_files"] == 0
    assert {"torch", "transformers", "callmood", "python"} <= set(card["training"]["versions"])


@pytest.fixture
def manifest_with_bad_files(ravdess_subset, write_wav, tmp_path):
    """A CSV manifest: 8 real RAVDESS files of 2 actors plus 6 unusable files."""
    root = ravdess_subset([3, 4], ["angry", "sad"], per_emotion=2)
    rows = [(u.path, u.label, u.speaker.split(":")[1]) for u in ravdess.scan(root)[0]]
    empty = tmp_path / "bad" / "empty.wav"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    text = tmp_path / "bad" / "notes.wav"
    text.write_text("minutes of the meeting, not audio\n" * 30)
    silent = write_wav("bad/silent.wav", amplitude=0.0)
    flac = write_wav("bad/whole.flac", seconds=1.0).read_bytes()
    truncated = tmp_path / "bad" / "truncated.flac"
    truncated.write_bytes(flac[: len(flac) // 2])
    wav = write_wav("bad/whole.wav", seconds=1.0).read_bytes()
    cut_short = tmp_path / "bad" / "cut-short.wav"
    cut_short.write_bytes(wav[: len(wav) // 2])
    missing = tmp_path / "bad" / "never-written.wav"
    rows += [(str(p), "angry", "03")
             for p in (empty, text, silent, truncated, cut_short, missing)]
    manifest = tmp_path / "corpus.csv"
    manifest.write_text("path,label,speaker\n" + "".join(f"{p},{lab},{s}\n" for p, lab, s in rows))
    return manifest


def test_unusable_files_are_skipped_and_counted(manifest_with_bad_files, tiny_mel, tmp_path,
                                                caplog):
    utterances = load_corpus("mixed", manifest_with_bad_files)
    assert len(utterances) == 14
    features = extract(utterances, tiny_mel)
    assert len(features.utterances) == 8
    assert sorted(err.kind for err in features.failures) == [
        "corrupt", "empty", "missing", "silent", "truncated", "unreadable"]
    train_part = [u for u in utterances if u.speaker == "mixed:03"]
    test_part = [u for u in utterances if u.speaker == "mixed:04"]
    # actor 03: sad, sad, angry, angry, then the bad files; validate on one of each emotion
    split = Split([train_part[0], train_part[2]] + train_part[4:],
                  [train_part[1], train_part[3]], test_part, "manual", True)
    config = TrainConfig(mel=tiny_mel, **{**OVERFIT, "epochs": 2})
    with caplog.at_level(logging.WARNING):
        result = train(split, config, tmp_path / "m", label_map={})
    assert "skipped 6 unusable audio files" in caplog.text
    card = load_model_folder(result.model_dir).card
    assert card.training["skipped_unreadable_files"] == 6
    assert card.training["split"]["test_speakers"] == ["mixed:04"]
    assert set(result.test_metrics) >= {"ua", "wa", "macro_f1", "weighted_f1", "confusion"}
    assert result.test_metrics["n"] == 4
    assert card.metrics["test"]["n"] == 4 and card.metrics["test"]["split"] == "manual"
    # temperature scaling fitted on the validation speakers' clips, stored in the card
    assert card.temperature > 0 and card.calibration["fitted_on"].startswith("validation")
    assert 0 <= card.calibration["val_ece_after"] <= card.calibration["val_ece_before"] + 1e-9


def test_bf16_on_a_cpu_without_it_in_hardware_is_warned_of(tmp_path, caplog):
    """Emulated bf16 trains many times slower than fp32: the flags of /proc/cpuinfo say
    whether the CPU has it (AVX512-BF16 or AMX); unreadable flags say nothing."""
    zen3, sapphire = tmp_path / "zen3", tmp_path / "sapphire"
    zen3.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n\nprocessor\t: 1\n")
    sapphire.write_text("flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_has_native_bf16(zen3) is False and cpu_has_native_bf16(sapphire) is True
    graviton = tmp_path / "graviton"  # ARM lists Features, not flags: nothing to say
    graviton.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16\n")
    assert cpu_has_native_bf16(tmp_path / "none") is None and cpu_has_native_bf16(graviton) is None
    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING, logger="callmood.training.train"):
        warn_slow_bf16("bf16", cpu, zen3)
        assert "--precision auto or fp32" in caplog.text
        caplog.clear()
        for precision, device, cpuinfo in [("bf16", cpu, sapphire), ("auto", cpu, zen3),
                                           ("fp32", cpu, zen3), ("bf16", cpu, graviton),
                                           ("bf16", torch.device("cuda"), zen3)]:
            warn_slow_bf16(precision, device, cpuinfo)
        assert caplog.text == ""


@pytest.mark.parametrize(("settings", "optimizer", "plateau", "bf16"), [
    ({"augment": AugmentConfig(channel_p=0.5, channel_variants=2), "balance": "sampler",
      "schedule": "cosine", "optimizer": "adamw"}, "adamw", False, False),
    ({"augment": AugmentConfig(mixup_alpha=0.0, frequency_warp=0.1, speech_margin=0.3),
      "balance": "loss",
      "schedule": "plateau", "optimizer": "sgd"}, "sgd", True, False),
    ({"precision": "bf16", "dropout": 0.1}, "adamw", False, True),  # bf16 autocast, CPU
])
def test_training_options_run(ravdess_subset, tiny_mel, tmp_path, monkeypatch, settings,
                              optimizer, plateau, bf16):
    """Each option takes effect: the optimiser and the plateau scheduler are those the
    checkpoint holds, the learning rates those of the schedule, the training forward pass
    runs in bfloat16 only when asked."""
    root = ravdess_subset([3, 4], ["angry", "sad"], per_emotion=2)
    utterances = ravdess.scan(root)[0]
    split = Split([u for u in utterances if u.speaker == "ravdess:03"],
                  [u for u in utterances if u.speaker == "ravdess:04"], [], "manual", True)
    config = TrainConfig(mel=tiny_mel, **{**OVERFIT, "epochs": 3, "batch_size": 2, **settings})
    train_module = importlib.import_module("callmood.training.train")
    build_model = train_module.build_model
    dtypes = set()  # of the linear layers' outputs while training

    def watched_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.register_forward_hook(
                    lambda module, _, out: dtypes.add(out.dtype) if module.training else None)
        return model

    monkeypatch.setattr(train_module, "build_model", watched_model)
    seen, states = [], []

    def on_epoch(epoch, f1):
        seen.append((epoch, f1))
        states.append(json.loads((checkpoint_dir(tmp_path / "m") / STATE).read_text()))

    result = train(split, config, tmp_path / "m", label_map={"calm": "neutral"},
                   on_epoch=on_epoch)
    assert [epoch for epoch, _ in seen] == [1, 2, 3]
    assert all(0.0 <= f1 <= 1.0 for _, f1 in seen)
    assert result.best_val_macro_f1 == max(f1 for _, f1 in seen)
    assert result.best_epoch == next(e for e, f1 in seen if f1 == result.best_val_macro_f1)
    loaded = load_model_folder(result.model_dir)
    assert loaded.card.label_map == {"calm": "neutral"}
    assert all(np.isfinite(h["train_loss"]) for h in result.history)

    group = states[-1]["optimizer"]["param_groups"][0]
    if optimizer == "sgd":  # SGD with Nesterov momentum
        assert (group.get("momentum"), group.get("nesterov")) == (0.9, True)
        assert "betas" not in group
    else:
        assert "betas" in group and "momentum" not in group
    lrs = [h["lr"] for h in result.history]
    if plateau:  # after the warm-up the learning rate stays, unless the plateau halves it
        assert all(state["plateau"] is not None for state in states)
        assert all(lr in (config.lr, config.lr / 2) for lr in lrs), lrs
    else:  # cosine: down to 15 % of it by the last step of 6
        assert all(state["plateau"] is None for state in states)
        assert lrs == sorted(lrs, reverse=True) and lrs[-1] < config.lr / 5, lrs
    assert dtypes == ({torch.bfloat16} if bf16 else {torch.float32})


def test_the_weights_moving_average_is_validated_and_kept(ravdess_subset, tiny_mel,
                                                          tmp_path):
    """update_average moves each float weight by the warmed-up rate and copies integer
    buffers; with ema_decay, the epoch's model that is validated and kept as the best is
    the average, not the last weights."""
    layer = torch.nn.BatchNorm1d(2)
    average = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        layer.weight.fill_(3.0)
        layer.num_batches_tracked.fill_(7)
    update_average(average, layer, 0.9, 0)  # rate min(0.9, 1/10): 10 % stays, 90 % moves
    assert torch.allclose(average["weight"], torch.full((2,), 0.1 * 1 + 0.9 * 3.0))
    assert average["num_batches_tracked"] == 7
    update_average(average, layer, 0.9, 1000)  # warmed up: the decay itself
    assert torch.allclose(average["weight"], torch.full((2,), 0.9 * 2.8 + 0.1 * 3.0))
    with weights_of(layer, average):  # what validation sees
        assert torch.equal(layer.weight, average["weight"])
    assert torch.equal(layer.weight, torch.full((2,), 3.0))  # its own weights again
    with weights_of(layer, None):
        assert torch.equal(layer.weight, torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="not the affect heads"):
        TrainConfig(ema_decay=0.9, affect_heads=0.5)

    utterances = ravdess.scan(ravdess_subset([3], ["angry", "sad"], per_emotion=2))[0]
    split = Split(utterances, [], [], "x", True)  # no validation: every epoch is the best
    config = TrainConfig(mel=tiny_mel, **{**OVERFIT, "epochs": 3, "batch_size": 2,
                                          "ema_decay": 0.9})
    with pytest.raises(StopTraining):
        train(split, config, tmp_path / "run", label_map={}, on_epoch=stop_after(2))
    tensors = load_file(str(tmp_path / "run" / "checkpoint" / "tensors.safetensors"))
    names = [k.removeprefix("best.") for k in tensors if k.startswith("best.")]
    assert names and all(torch.equal(tensors[f"best.{k}"], tensors[f"averaged.{k}"])
                         for k in names)
    assert not all(torch.equal(tensors[f"best.{k}"], tensors[f"model.{k}"]) for k in names)


@pytest.mark.parametrize("ema_decay", [0.0, 0.8])
def test_a_stopped_run_resumes_to_the_same_result(ravdess_subset, tiny_mel, tmp_path,
                                                  ema_decay):
    """Stopped after epoch 2 and resumed, a run ends exactly where an uninterrupted one
    does: same weights, same history (sampler, crops, SpecAugment, mixup and channel
    variants all draw from the restored random state; the weights' moving average is
    checkpointed: without validation speakers, the last epoch's average is the model)."""
    utterances = ravdess.scan(ravdess_subset([3, 4], ["angry", "sad"], per_emotion=2))[0]
    validation = [] if ema_decay else [u for u in utterances if u.speaker == "ravdess:04"]
    split = Split([u for u in utterances if u.speaker == "ravdess:03"], validation, [], "x",
                  True)
    config = TrainConfig(mel=tiny_mel, **{**OVERFIT, "epochs": 4, "batch_size": 2,
                                          "schedule": "plateau", "patience": 10,
                                          "augment": AugmentConfig(channel_p=0.5,
                                                                   channel_variants=2),
                                          "ema_decay": ema_decay})
    whole = train(split, config, tmp_path / "whole", label_map={})
    assert whole.best_epoch == 4 or not ema_decay

    with pytest.raises(StopTraining):
        train(split, config, tmp_path / "stopped", label_map={}, on_epoch=stop_after(2))
    assert (tmp_path / "stopped" / "checkpoint" / "tensors.safetensors").is_file()
    assert read_run(tmp_path / "stopped")["config"]["epochs"] == 4
    with pytest.raises(CheckpointError, match="other training settings"):
        train(split, replace(config, lr=0.5), tmp_path / "stopped", label_map={},
              resume=True)
    # made before settings that are off here existed: it still resumes
    state = tmp_path / "stopped" / "checkpoint" / STATE
    saved = json.loads(state.read_text())
    for key in ("backbone", "val_channels", "affect_heads", *([] if ema_decay else
                                                               ["ema_decay"])):
        del saved["run"]["config"][key]
    del saved["run"]["config"]["mel"]["prosody_rows"]
    state.write_text(json.dumps(saved))
    resumed = train(split, config, tmp_path / "stopped", label_map={}, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == whole.history
    a, b = (load_model_folder(r.model_dir).model.state_dict() for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "stopped" / "checkpoint").exists()  # removed once finished
    with pytest.raises(CheckpointError, match="the run finished"):
        read_run(tmp_path / "stopped")


def test_auxiliary_heads_train_resume_and_stay_out_of_the_models_weights(
        ravdess_subset, tiny_mel, tmp_path):
    """With the corpus adversary and the affect heads, a two-corpus run logs each head's
    loss every epoch, a run stopped after epoch 1 resumes to the same weights (the heads'
    are in the checkpoint), and the model's weights are exactly a plain model's tensors,
    the affect heads in a file of their own."""
    utterances = ravdess.scan(ravdess_subset([3, 4], ["angry", "sad"], per_emotion=2))[0]
    train_set = [u if i % 2 else replace(u, corpus="twin")  # a second corpus
                 for i, u in enumerate(u for u in utterances if u.speaker == "ravdess:03")]
    split = Split(train_set, [u for u in utterances if u.speaker == "ravdess:04"], [], "x",
                  True)
    config = TrainConfig(mel=tiny_mel, **{**OVERFIT, "epochs": 3, "batch_size": 4,
                                          "patience": 10, "corpus_adversary": 0.5,
                                          "affect_heads": 0.5})
    whole = train(split, config, tmp_path / "whole", label_map={})
    assert all(np.isfinite(h["corpus_loss"]) and h["affect_loss"] > 0 for h in whole.history)

    with pytest.raises(StopTraining):
        train(split, config, tmp_path / "stopped", label_map={}, on_epoch=stop_after(1))
    resumed = train(split, config, tmp_path / "stopped", label_map={}, resume=True)
    assert resumed.history == whole.history
    a, b = (load_model_folder(r.model_dir).model.state_dict() for r in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = train(split, replace(config, corpus_adversary=0.0, affect_heads=0.0, epochs=1),
                  tmp_path / "plain", label_map={})
    assert a.keys() == load_model_folder(plain.model_dir).model.state_dict().keys()
    assert not {"corpus_loss", "affect_loss"} & set(plain.history[0])
    # the best epoch's affect heads are kept beside the weights, the same after a resume
    heads = [load_affect_heads(r.model_dir).state_dict() for r in (whole, resumed)]
    assert heads[0].keys() == {"valence.weight", "valence.bias", "arousal.weight",
                               "arousal.bias"}
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    assert load_affect_heads(plain.model_dir) is None
    with pytest.raises(ValueError, match="at least two training corpora"):
        train(Split([u for u in utterances if u.speaker == "ravdess:03"], [], [], "x", True),
              config, tmp_path / "one", label_map={})


def test_affect_targets_follow_each_label_and_mix_with_it():
    table = affect_table(["neutral", "happy", "sad", "angry", "disgust"])
    #                       negative, neutral, positive, low, high arousal
    assert table.tolist() == [[0, 1, 0, 1, 0], [0, 0, 1, 0, 1], [1, 0, 0, 1, 0],
                              [1, 0, 0, 0, 1], [1, 0, 0, 0.5, 0.5]]
    mixed = torch.tensor([[0.7, 0.0, 0.0, 0.3, 0.0]]) @ table  # mixup of neutral and angry
    assert torch.allclose(mixed, torch.tensor([[0.3, 0.7, 0.0, 0.7, 0.3]]))


def test_the_adversary_reverses_and_scales_its_gradient():
    torch.manual_seed(0)
    adversary = CorpusAdversary(hidden=8, corpora=3)
    embedding = torch.randn(5, 8, requires_grad=True)
    for strength in (1.0, 0.25):
        embedding.grad = None
        adversary(embedding, strength).sum().backward()
        reversed_grad = embedding.grad.clone()
        embedding.grad = None
        adversary.head(embedding).sum().backward()  # the same path, not reversed
        assert torch.allclose(reversed_grad, -strength * embedding.grad)
    assert reversal_strength(0.0) == 0.0
    assert 0.99 < reversal_strength(1.0) < 1.0
    assert reversal_strength(0.1) < reversal_strength(0.5)


def test_epoch_hook_can_stop_training(ravdess_subset, tiny_mel, tmp_path):
    utterances = ravdess.scan(ravdess_subset([3, 4], ["angry", "sad"], per_emotion=2))[0]
    config = TrainConfig(mel=tiny_mel, **{**OVERFIT, "epochs": 5})
    with pytest.raises(StopTraining):
        train(Split(utterances, [], [], "x", True), config, tmp_path / "m", label_map={},
              checkpoint=False, on_epoch=stop_after(2))
    assert not (tmp_path / "m").exists()


def test_feature_cache(cache_dir, write_wav, tiny_mel):
    paths = [write_wav(f"c/{i}.wav", seconds=0.3, freq=200.0 * (i + 1)) for i in range(3)]
    utterances = [Utterance(str(p), "happy", f"x:{i}", "x") for i, p in enumerate(paths)]
    variants = (clean(), condition_variant("telephone"))
    first = extract(utterances, tiny_mel, variants=variants)
    files = sorted(cache_dir.rglob("*.npy"))
    assert len(files) == 6 and not list(cache_dir.rglob("*.tmp"))
    assert all(m.shape == (64, 1 + 4800 // 160) for m in first.mels["clean"])
    assert not torch.allclose(first.mels["clean"][0], first.mels["condition:telephone"][0])
    stamps = {f: f.stat().st_mtime_ns for f in files}
    second = extract(utterances, tiny_mel, variants=variants)
    assert {f: f.stat().st_mtime_ns for f in cache_dir.rglob("*.npy")} == stamps
    for a, b in zip(first.mels["clean"], second.mels["clean"], strict=True):
        assert torch.equal(a, b)
    # a changed file and changed settings never reuse stale features
    write_wav(paths[0], seconds=0.6)
    third = extract(utterances, tiny_mel)
    assert third.mels["clean"][0].shape[-1] == 1 + 9600 // 160
    extract(utterances[:1], type(tiny_mel)(n_mels=32, input_frames=160))
    assert len(list(cache_dir.rglob("*.npy"))) == 8
    with pytest.raises(ValueError, match="unknown"):
        condition_variant("moon_landing")


def test_a_model_that_trims_silence_reads_only_the_speech_of_a_take(cache_dir, write_wav,
                                                                    tiny_mel, monkeypatch):
    rng = np.random.default_rng(0)
    take = rng.normal(0, 10 ** (-60 / 20), 16000 * 3).astype(np.float32)  # 3 s of room
    t = np.arange(16000) / 16000
    take[16000:32000] += 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(8 * np.pi * t))
    utterance = Utterance(str(write_wav("t/take.wav", data=take, subtype="FLOAT")), "happy",
                          "x:1", "x")
    whole = extract([utterance], tiny_mel).mels["clean"][0]
    trimmed = extract([utterance], replace(tiny_mel, trim_silence=True)).mels["clean"][0]
    assert whole.shape[-1] == 1 + 48000 // 160
    assert abs(trimmed.shape[-1] - 100) <= 12  # the 1 s of speech, give or take the pad
    assert len({f.parent.parent for f in cache_dir.rglob("*.npy")}) == 2  # cached apart
    # trimmed log-mels are keyed by the detector that cut them too
    trimming = replace(tiny_mel, trim_silence=True)
    before = _cache_file(cache_dir, trimming, utterance.path, clean())
    monkeypatch.setattr(segment, "STEP_S", 0.05)
    assert _cache_file(cache_dir, trimming, utterance.path, clean()) != before
    assert _cache_file(cache_dir, tiny_mel, utterance.path, clean()) == \
        _cache_file(cache_dir, tiny_mel, utterance.path, clean())


def test_the_cache_is_pruned_least_recently_used_first(cache_dir, write_wav, tiny_mel,
                                                      monkeypatch):
    paths = [write_wav(f"p/{i}.wav", seconds=0.3, freq=300.0 * (i + 1)) for i in range(2)]
    utterances = [Utterance(str(p), "sad", f"x:{i}", "x") for i, p in enumerate(paths)]

    def folders() -> dict[str, Path]:
        return {f.name.split("-")[1] if "-" in f.name else f.name: f
                for f in cache_dir.glob("*/*") if f.parent.name != "not-the-cache"}

    extract(utterances, tiny_mel, variants=(condition_variant("ulaw"),))
    extract(utterances, tiny_mel, variants=(condition_variant("alaw"),))
    stranger = cache_dir / "not-the-cache" / "kept"  # a folder the cache did not make
    stranger.mkdir(parents=True)
    (stranger / "big.npy").write_bytes(bytes(10_000))
    hours = 3600.0
    os.utime(folders()["ulaw"], (time.time() - 3 * hours,) * 2)
    os.utime(folders()["alaw"], (time.time() - 2 * hours,) * 2)
    folder_bytes = sum(f.stat().st_size for f in folders()["ulaw"].iterdir())
    # room for two and a half folders: the third one pushes out the least recently used
    monkeypatch.setenv(CACHE_LIMIT_ENV, str(2.5 * folder_bytes / 1e9))
    extract(utterances, tiny_mel)
    assert set(folders()) == {"alaw", "clean"}
    # reading a folder marks it used; a folder used within the hour stays even over the limit
    monkeypatch.setenv(CACHE_LIMIT_ENV, "1e-9")
    again = extract(utterances, tiny_mel, variants=(condition_variant("alaw"),))
    assert len(again.mels["condition:alaw"]) == 2 and set(folders()) == {"alaw", "clean"}
    os.utime(folders()["clean"], (time.time() - 2 * hours,) * 2)
    extract(utterances, tiny_mel, variants=(condition_variant("alaw"),))
    assert set(folders()) == {"alaw"} and (stranger / "big.npy").is_file()
    # 0 keeps everything; a setting that is not a size is named in the error
    monkeypatch.setenv(CACHE_LIMIT_ENV, "0")
    extract(utterances, tiny_mel)
    assert set(folders()) == {"alaw", "clean"}
    monkeypatch.setenv(CACHE_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match="CALLMOOD_CACHE_GB='lots'"):
        extract(utterances, tiny_mel)


EXTRACT_SCRIPT = """
import sys
from callmood.training.cache import condition_variant, extract
from callmood.training.corpora.base import Utterance
from callmood.signal.features import MelConfig
utterances = [Utterance(p, "sad", f"x:{i}", "x") for i, p in enumerate(sys.argv[1:])]
extract(utterances, MelConfig(), (condition_variant("gsm"), condition_variant("reverb")), workers=2)
"""


def test_a_killed_feature_extraction_leaves_no_workers_behind(cache_dir, write_wav):
    """A training stopped with kill -9 during its feature extraction had left two workers
    computing features for minutes, slowing whatever ran next."""
    paths = [write_wav(f"k/{i}.wav", seconds=20.0, freq=150.0 + 10 * i) for i in range(48)]
    process = subprocess.Popen([sys.executable, "-c", EXTRACT_SCRIPT, *map(str, paths)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = kill_once_workers_run(process, 3)  # 2 loky workers and the resource tracker
    assert not still_alive_after(workers)
    assert len(list(cache_dir.rglob("*.npy"))) < 2 * len(paths)  # killed before the end


def test_training_channels_are_drawn_once_per_file_and_cached(cache_dir, ravdess_subset,
                                                              tiny_mel):
    utterances = ravdess.scan(ravdess_subset([3, 4], ["angry"], per_emotion=1))[0]
    bank = babble_bank(utterances, tiny_mel.sample_rate)
    assert bank is not None and all(len(s) == 1 for s in bank.speakers)
    # every speaker has babble tracks without their own voice
    assert {"ravdess:03", "ravdess:04"} == {next(iter(s)) for s in bank.speakers}
    variants = training_channels(ChannelConfig(), 3, seed=0, babble=bank)
    first = extract(utterances, tiny_mel, variants)
    assert set(first.mels) == {"channel0", "channel1", "channel2"}
    # each draw differs from the others, and the same draw comes back from the cache
    assert not torch.allclose(first.mels["channel0"][0], first.mels["channel1"][0])
    again = extract(utterances, tiny_mel, variants)
    assert torch.equal(again.mels["channel2"][1], first.mels["channel2"][1])
    # another seed is another draw, in its own cache folder
    other = extract(utterances, tiny_mel, training_channels(ChannelConfig(), 1, 1, bank))
    assert not torch.equal(other.mels["channel0"][0], first.mels["channel0"][0])


def test_make_batch_crops_to_the_clip(tiny_mel):
    config = TrainConfig(mel=tiny_mel, augment=AugmentConfig(channel_p=1.0))
    long, short = torch.randn(64, 400), torch.randn(64, 50)
    mels = {"clean": [long, short], "channel0": [long + 100, short + 100]}
    batch, speakers = make_batch(mels, [0, 1], config, torch.Generator().manual_seed(0))
    assert speakers is None
    assert batch.shape == (2, 64, 160)
    assert batch.mean() > 50  # every example came from its channel variant
    plain = TrainConfig(mel=tiny_mel, augment=AugmentConfig.off())
    batch, _ = make_batch(mels, [1], plain, torch.Generator().manual_seed(0))
    torch.testing.assert_close(batch[0, :, :50], short)
    torch.testing.assert_close(batch[0, :, 50:100], short)  # repeated, not padded


def test_train_config_overrides_are_checked():
    base = TrainConfig()
    changed = base.with_overrides({"lr": 1e-3, "augment.mixup_alpha": 0.0, "optimizer": "sgd"})
    assert (changed.lr, changed.augment.mixup_alpha, changed.optimizer) == (1e-3, 0.0, "sgd")
    assert base.lr == 2.5e-4 and base.augment.mixup_alpha == 0.2  # the base is untouched
    with pytest.raises(ValueError, match="unknown training settings"):
        base.with_overrides({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="unknown training settings"):
        base.with_overrides({"augment.reverb": 0.5})
    with pytest.raises(ValueError, match="optimizer must be one of"):
        base.with_overrides({"optimizer": "adam"})
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(epochs=0)
    for decay in (1.0, -0.1, "high"):
        with pytest.raises(ValueError, match="ema_decay must be a number in"):
            TrainConfig(ema_decay=decay)
    assert json.loads(json.dumps(base.to_dict()))["mel"]["n_mels"] == 128


def test_lr_schedule():
    assert lr_factor(0, 100, 10, cosine=True) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, cosine=True) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, cosine=True) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, cosine=True) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, cosine=True) == pytest.approx(0.0)
    assert lr_factor(80, 100, 10, cosine=False) == 1.0


def test_balanced_sampler_draws_classes_equally():
    targets = np.array([0] * 900 + [1] * 100)
    order = epoch_order(targets, "sampler", torch.Generator().manual_seed(0))
    assert len(order) == 1000
    share = np.mean(targets[order] == 1)
    assert 0.45 < share < 0.55
    plain = epoch_order(targets, "none", torch.Generator().manual_seed(0))
    assert sorted(plain) == list(range(1000))


def test_epoch_size_sets_the_examples_per_epoch_whatever_the_data_size():
    targets = np.array([0] * 30 + [1] * 10)
    for balance in ("sampler", "corpus", "none"):
        order = epoch_order(targets, balance, torch.Generator().manual_seed(0),
                            np.array(["x"] * 40), size=100)
        assert len(order) == 100
    # unbalanced: every example once per pass before any repeats
    plain = epoch_order(targets, "none", torch.Generator().manual_seed(0), size=100)
    assert sorted(plain[:40]) == list(range(40)) and sorted(plain[40:80]) == list(range(40))
    assert len(epoch_order(targets, "none", torch.Generator().manual_seed(0), size=7)) == 7


def test_corpus_balance_draws_corpora_then_their_classes_equally():
    # a big corpus of 2 classes and a small one of 3 (one of them rare)
    corpora = np.array(["big"] * 2000 + ["small"] * 120)
    targets = np.array([0] * 1000 + [1] * 1000 + [0] * 50 + [1] * 50 + [2] * 20)
    order = np.array(epoch_order(targets, "corpus", torch.Generator().manual_seed(0),
                                 corpora))
    assert 0.47 < np.mean(corpora[order] == "small") < 0.53
    small = order[corpora[order] == "small"]
    for k in (0, 1, 2):  # a third each within the small corpus
        assert 0.29 < np.mean(targets[small] == k) < 0.38


def test_the_loss_ignores_classes_a_corpus_does_not_have():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, requires_grad=True)
    targets = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3]), 5).float()
    weights = torch.tensor([1.0, 2.0, 1.0, 0.5, 1.0])
    # everything allowed: exactly torch's cross-entropy with weights and label smoothing
    expected = torch.nn.functional.cross_entropy(logits, targets, weight=weights,
                                                 label_smoothing=0.1)
    torch.testing.assert_close(class_loss(logits, targets, None, weights, 0.1), expected)
    # example 0 comes from a corpus without class 4: no gradient reaches its logit
    allowed = torch.ones(4, 5, dtype=torch.bool)
    allowed[0, 4] = False
    class_loss(logits, targets, allowed, None, 0.1).backward()
    assert logits.grad[0, 4] == 0 and logits.grad[1, 4] != 0
    assert torch.isfinite(logits.grad).all()


def test_corpus_classes_lists_what_each_corpus_has():
    from callmood.training.corpora.base import Utterance

    utterances = [Utterance("a", "angry", "x:1", "x"), Utterance("b", "sad", "y:1", "y"),
                  Utterance("c", "angry", "y:2", "y")]
    masks = corpus_classes(utterances, {"sad": 0, "angry": 1, "surprised": 2})
    assert masks["x"].tolist() == [False, True, False]
    assert masks["y"].tolist() == [True, True, False]


def test_params_file_values_become_configs():
    from callmood.signal.features import MelConfig
    from callmood.training.train import TrainConfig

    config = TrainConfig().with_overrides({"mel": {"n_mels": 64, "input_frames": 160},
                                           "augment": {"channel_p": 0.5,
                                                       "channel": {"p_reverb": 0.0}},
                                           "lr": 1e-3})
    assert config.mel == MelConfig(n_mels=64, input_frames=160)
    assert config.augment.channel_p == 0.5 and config.lr == 1e-3
    assert config.augment.channel.p_reverb == 0.0
    with pytest.raises(ValueError, match="unknown mel settings"):
        TrainConfig().with_overrides({"mel": {"n_mel": 64}})
    # a mel setting changes that setting only, the others stay those of the base
    speaker = config.with_overrides({"mel.speaker_mean": True})
    assert speaker.mel == MelConfig(n_mels=64, input_frames=160, speaker_mean=True)
    assert config.with_overrides({"mel": {"speaker_mean": True}}).mel == speaker.mel


def test_speaker_mean_examples_are_relative_to_their_speaker_and_line(ravdess_subset,
                                                                      tiny_mel, tmp_path):
    """Each training example's speaker profile is its speaker's over their clean takes,
    plus what its line did to its band levels: an example through a fixed colouring gets
    the clean profile plus that colouring (and a constant, the level it moved), as a call
    channel's profile would.
    A tiny run trains with it (each band moved at most 10 dB), keeps the setting and the
    training speakers' mean profile in the model folder, and evaluation scores each
    held-out utterance relative to its speaker's other takes."""
    rng = torch.Generator().manual_seed(0)
    clean_mels = [torch.randn(tiny_mel.n_mels, 50, generator=rng) for _ in range(4)]
    colour = torch.linspace(-1, 1, tiny_mel.n_mels)[:, None]
    people = [Utterance(f"{i}.wav", "sad", f"c:{i // 2}", "c") for i in range(4)]
    data = Features(people, {"clean": clean_mels, "channel0": [m + colour for m in clean_mels]})
    profiles = example_speaker_profiles(data)
    first = torch.stack([band_levels(m) for m in clean_mels[:2]]).mean(0)
    torch.testing.assert_close(profiles["clean"][1], first)
    # a batch takes each example's profile from the variant its crop came from
    config = TrainConfig(mel=tiny_mel, augment=AugmentConfig(channel_p=1.0, specaug_masks=0))
    crops, speakers = make_batch(data.mels, [1, 2], config, rng, profiles)
    for crop, speaker, i in zip(crops, speakers, [1, 2], strict=True):
        torch.testing.assert_close(speaker, profiles["channel0"][i])
        assert crop.mean() == pytest.approx((clean_mels[i] + colour)[:, :tiny_mel.input_frames]
                                            .mean().item(), abs=0.2)
    # a SpecAugment mask is flat once the speaker's profile is taken off
    masking = replace(config, augment=AugmentConfig(channel_p=1.0, specaug_freq=0,
                                                    specaug_time=30, specaug_masks=1))
    crops, speakers = make_batch(data.mels, [1, 2], masking, rng, profiles)
    relative = crops - speakers
    flat = (relative.std(dim=1) < 1e-5)  # (examples, frames): every band the same
    assert flat.any(dim=1).all() and not flat.all()
    line = profiles["channel0"][1] - first - colour  # the colouring, and the level it moved
    torch.testing.assert_close(line, torch.full_like(line, line.mean().item()))
    assert not torch.allclose(profiles["clean"][2], first)

    mel = replace(tiny_mel, speaker_mean=True, speaker_shift_db=10.0)
    root = ravdess_subset([3, 4, 5], ["angry", "sad"], per_emotion=2)
    utterances = ravdess.scan(root)[0]
    by = {s: [u for u in utterances if u.speaker == f"ravdess:0{s}"] for s in (3, 4, 5)}
    config = TrainConfig(mel=mel, **{**OVERFIT, "epochs": 2, "batch_size": 4,
                                     "augment": AugmentConfig(channel_p=0.5,
                                                              channel_variants=1)})
    result = train(Split(by[3], by[4], by[5], "manual", True), config, tmp_path / "m",
                   label_map={})
    model = load_model_folder(result.model_dir)
    assert model.mel == mel and len(model.norm.speaker_reference) == mel.n_mels
    test = extract(by[5], model.mel)
    inference = Inference.of(model)
    together = inference.utterances(test.mels["clean"], speakers=test.speakers()).probs
    alone = inference.utterances(test.mels["clean"]).probs
    assert not np.allclose(together, alone)  # the speaker's other takes count
