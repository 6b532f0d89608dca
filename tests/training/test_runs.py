"""training/runs.py and the split loading it uses: what `callmood train` starts, records
and resumes, without the command line."""

import json
import os

import pytest
from conftest import StopTraining, stop_after

from callmood.training.augment import AugmentConfig
from callmood.training.checkpoint import CheckpointError
from callmood.training.runs import RunSettings, train_run
from callmood.training.splits import SplitError, fold_names, load_split
from callmood.training.train import TrainConfig, config_from_params, train


def split_args(corpus, **changes):
    return {"corpora": [f"ravdess={corpus}"], "fold": None, "n_folds": None,
            "test_speakers": "03", "random_test": None, "label_preset": "corpus",
            "label_overrides": [], "shared": "../shared", "seed": 0, **changes}


def test_load_split_reads_corpora_maps_labels_and_holds_out_the_speakers(ravdess_subset):
    corpus = ravdess_subset([3, 4, 5], ["angry", "sad"], per_emotion=2)
    split, mapping = load_split(**split_args(corpus, label_overrides=["sad=drop"]))
    assert mapping == {"sad": None}
    assert {u.speaker for u in split.test} == {"ravdess:03"}
    assert {u.label for u in split.train + split.val + split.test} == {"angry"}
    by_folds, _ = load_split(**split_args(corpus, test_speakers=None, fold="2", n_folds=3))
    assert "3-fold" in by_folds.description and "fold 2" in by_folds.description


def test_load_split_refuses_what_names_no_split(ravdess_subset):
    corpus = ravdess_subset([3, 4, 5], ["angry", "sad"], per_emotion=2)
    with pytest.raises(SplitError, match="no corpus"):
        load_split(**split_args(corpus, corpora=[]))
    with pytest.raises(SplitError, match="expected a fold number"):
        load_split(**split_args(corpus, test_speakers=None, fold="all"))


def test_fold_names_are_the_protocol_folds_or_n(shared_dir):
    protocol = json.loads((shared_dir / "protocols/ravdess_speaker_folds.json").read_text())
    assert fold_names(shared_dir) == [str(k) for k in
                                      range(1, len(protocol["test_actors_by_fold"]) + 1)]
    assert fold_names(shared_dir, 3) == ["1", "2", "3"]
    with pytest.raises(SplitError, match="protocol not found"):
        fold_names(shared_dir / "absent")


def test_params_file_then_overrides_that_are_set(tmp_path):
    params = tmp_path / "best_params.json"
    params.write_text(json.dumps({"lr": 1e-3, "epochs": 7, "augment": {"mixup_alpha": 0.1}}))
    config = config_from_params(params, {"epochs": 3, "batch_size": None,
                                         "augment.channel_p": 0.0})
    assert (config.lr, config.epochs, config.batch_size) == (1e-3, 3, TrainConfig().batch_size)
    assert config.augment.mixup_alpha == 0.1 and config.augment.channel_p == 0.0
    assert config_from_params(None, {"seed": None}) == TrainConfig()
    with pytest.raises(ValueError, match="unknown training settings"):
        config_from_params(None, {"learning_rate": 1})


def test_new_run_settings_have_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = RunSettings.new(split_args("data/rav", shared="shared", corpora=["ravdess=d",
                                                                                "tess"]),
                               TrainConfig(), "cache")
    assert settings.split["corpora"] == [f"ravdess={tmp_path / 'd'}", "tess"]
    assert settings.split["shared"] == str(tmp_path / "shared")
    assert settings.cache_dir == str(tmp_path / "cache")
    assert RunSettings.new(split_args("x"), TrainConfig()).cache_dir is None


def test_a_stopped_run_resumes_from_its_own_settings(ravdess_subset, tiny_mel, tmp_path,
                                                     monkeypatch):
    """The settings kept in a stopped run's checkpoint are read back, and training goes
    on from the last finished epoch, from another working directory."""
    corpus = ravdess_subset([3, 4, 5], ["angry", "sad"], per_emotion=2)
    config = TrainConfig(init="random:micro", epochs=3, batch_size=4, workers=1,
                         device="cpu", mel=tiny_mel, augment=AugmentConfig.off())
    settings = RunSettings.new(split_args(corpus), config, tmp_path / "cache")
    split, mapping = load_split(**settings.split)
    out = tmp_path / "run"

    with pytest.raises(StopTraining):
        train(split, config, out, label_map=mapping, cache_dir=settings.cache_dir,
              on_epoch=stop_after(1), invocation=settings.invocation())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = RunSettings.of_run(os.path.relpath(out))
    assert resumed == settings
    seen = []
    split, result = train_run(resumed, out, resume=True, on_split=seen.append)
    assert seen == [split] and {u.speaker for u in split.test} == {"ravdess:03"}
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.model_dir == out and (out / "model.safetensors").is_file()
    with pytest.raises(CheckpointError, match="the run finished"):
        RunSettings.of_run(out)
