"""callmood/model/folder.py: the model folder is safetensors + JSON and round-trips exactly."""

import json
import shutil
import warnings
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from conftest import REPO_DIR, TINY_LABELS

from callmood.model.folder import (
    IgnoredModelFiles,
    LoadedModel,
    ModelCard,
    ModelFolderError,
    default_model_dir,
    load_model_folder,
    save_model_folder,
    write_call_analytics,
)
from callmood.results.call_summary import CallAnalytics
from callmood.signal.features import Normalization, log_mel, model_input
from callmood.training.model import build_model
from callmood.valence import DEFAULT_VALENCE


def random_mels(mel, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return -6.0 + 3.0 * torch.randn(n, mel.n_mels, mel.input_frames, generator=g)


def test_folder_holds_only_safetensors_and_json(tiny_model_dir):
    names = sorted(p.name for p in tiny_model_dir.iterdir())
    assert names == ["callmood.json", "config.json", "model.safetensors",
                     "preprocessor_config.json"]
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "vit"
    assert config["id2label"] == {str(i): label for i, label in enumerate(TINY_LABELS)}
    pre = json.loads((tiny_model_dir / "preprocessor_config.json").read_text())
    assert pre["mel"]["n_mels"] == 64 and pre["mel"]["input_frames"] == 160
    assert pre["normalization"] == {"mean": -6.0, "std": 3.0}
    card = json.loads((tiny_model_dir / "callmood.json").read_text())
    assert card["labels"] == TINY_LABELS
    assert card["valence"] == {label: DEFAULT_VALENCE[label] for label in TINY_LABELS}


def test_round_trip_gives_identical_predictions(tmp_path, tiny_mel):
    torch.manual_seed(5)
    model = build_model(tiny_mel, TINY_LABELS, "random:micro").eval()
    norm = Normalization(mean=-5.5, std=2.5)
    card = ModelCard(name="rt", labels=list(TINY_LABELS), metrics={"val_macro_f1": 0.5},
                     training={"seed": 5})
    folder = save_model_folder(tmp_path / "m", model, tiny_mel, norm, card)
    loaded = load_model_folder(folder)
    assert loaded.mel == tiny_mel and loaded.norm == norm
    assert loaded.labels == TINY_LABELS and loaded.name == "rt"
    assert loaded.card.metrics == {"val_macro_f1": 0.5}
    mels = random_mels(tiny_mel)
    with torch.no_grad():
        expected = torch.softmax(model(pixel_values=model_input(mels, tiny_mel, norm)).logits,
                                 -1).numpy()
    probs = loaded.predict_mels(mels, batch_size=2)
    before = LoadedModel(model, tiny_mel, norm, card, "unsaved").predict_mels(mels, batch_size=2)
    np.testing.assert_array_equal(probs, before)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    # a second save of the loaded model gives the same weights file, hence the same version
    again = save_model_folder(tmp_path / "m2", loaded.model, loaded.mel, loaded.norm,
                              loaded.card)
    assert load_model_folder(again).version == loaded.version
    assert len(loaded.version) == 12


def test_predict_mels(tiny_model_dir, tiny_mel):
    loaded = load_model_folder(tiny_model_dir)
    clips = np.random.default_rng(0).uniform(-0.3, 0.3, (3, tiny_mel.clip_samples))
    probs = loaded.predict_mels(log_mel(clips.astype(np.float32), tiny_mel))
    assert probs.shape == (3, len(TINY_LABELS))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert loaded.predict_mels(torch.zeros(0, 64, 160)).shape == (0, 4)


def test_folder_with_only_a_pickle_is_refused(tmp_path, tiny_model_dir):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    state = load_model_folder(tiny_model_dir).model.state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelFolderError) as err:
        load_model_folder(folder)
    message = str(err.value)
    assert "model.safetensors is missing" in message
    assert "pytorch_model.bin" in message and "pickled weights are refused" in message


def test_missing_and_broken_files(tmp_path, tiny_model_dir):
    with pytest.raises(ModelFolderError, match="model folder not found"):
        load_model_folder(tmp_path / "absent")
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelFolderError, match="preprocessor_config.json is missing"):
        load_model_folder(folder)
    (folder / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="invalid JSON"):
        load_model_folder(folder)


def edit_json(path, change):
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


@pytest.mark.parametrize(("file", "change", "message"), [
    ("callmood.json", lambda c: c.update(labels=["a", "b", "c", "d"]), "labels"),
    ("preprocessor_config.json", lambda p: p["mel"].update(n_mels=80), "image_size"),
    ("preprocessor_config.json", lambda p: p["mel"].update(window="hamming"),
     "unknown mel settings"),
    ("preprocessor_config.json", lambda p: p["mel"].update(speaker_mean=True,
                                                           speaker_shift_db=10.0),
     "speaker_shift_db needs a speaker_reference of 64 values"),
    ("config.json", lambda c: c.update(model_type="bert"),
     r"model_type must be one of \['vit', 'wav2vec2'\]"),
    ("preprocessor_config.json", lambda p: p["mel"].update(frontend="waveform"),
     "frontend 'waveform', but a vit model reads the log-mel frontend"),
    ("config.json", lambda c: c.update(hidden_size=32, intermediate_size=64),
     "does not describe the weights"),
])
def test_inconsistent_folders_are_refused(tmp_path, tiny_model_dir, file, change, message):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    edit_json(folder / file, change)
    with pytest.raises(ModelFolderError, match=message):
        load_model_folder(folder)


def test_save_refuses_card_labels_that_differ(tmp_path, tiny_mel):
    model = build_model(tiny_mel, TINY_LABELS, "random:micro")
    with pytest.raises(ModelFolderError, match="differ"):
        save_model_folder(tmp_path / "m", model, tiny_mel, Normalization(),
                          ModelCard(name="x", labels=list(reversed(TINY_LABELS))))


def test_the_stored_temperature_is_applied_wherever_probabilities_leave(tmp_path, tiny_mel):
    torch.manual_seed(6)
    model = build_model(tiny_mel, TINY_LABELS, "random:micro").eval()
    norm = Normalization(mean=-5.5, std=2.5)
    card = ModelCard(name="t", labels=list(TINY_LABELS), calibration={"temperature": 2.5})
    loaded = load_model_folder(save_model_folder(tmp_path / "m", model, tiny_mel, norm, card))
    assert loaded.card.temperature == 2.5
    mels = random_mels(tiny_mel)
    with torch.no_grad():
        logits = model(pixel_values=model_input(mels, tiny_mel, norm)).logits
    np.testing.assert_allclose(loaded.predict_mels(mels), torch.softmax(logits / 2.5, -1).numpy(),
                               rtol=1e-5, atol=1e-6)
    # a folder without calibration (an older one) gives the plain softmax
    card.calibration = {}
    plain = load_model_folder(save_model_folder(tmp_path / "p", model, tiny_mel, norm, card))
    np.testing.assert_allclose(plain.predict_mels(mels), torch.softmax(logits, -1).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_call_analytics_fitted_with_a_model_travel_in_its_folder(tmp_path, tiny_mel):
    model = build_model(tiny_mel, TINY_LABELS, "random:micro")
    folder = save_model_folder(tmp_path / "m", model, tiny_mel, Normalization(),
                               ModelCard(name="a", labels=list(TINY_LABELS)))
    assert CallAnalytics.of_model(load_model_folder(folder)) == CallAnalytics()  # none fitted
    written = {p.name: p.read_bytes() for p in folder.iterdir()}
    fitted = CallAnalytics(shares="argmax", persistence_s=20.0, share_error_sd=0.2)
    write_call_analytics(folder, asdict(fitted), "150 dev calls")
    # a file of its own: the four files an older reader checks are untouched
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in written} == written
    loaded = load_model_folder(folder)
    assert CallAnalytics.of_model(loaded) == fitted
    assert loaded.analytics["fitted_on"] == "150 dev calls"
    # settings given (--analytics) go over the model's own
    assert CallAnalytics.of_model(loaded, {"min_rise": 0.3}) == replace(fitted, min_rise=0.3)


def test_a_models_call_analytics_are_checked_with_short_errors_naming_the_file(tmp_path,
                                                                              tiny_mel):
    folder = save_model_folder(tmp_path / "m", build_model(tiny_mel, TINY_LABELS,
                                                           "random:micro"),
                               tiny_mel, Normalization(), ModelCard(name="a",
                                                                   labels=list(TINY_LABELS)))
    file = folder / "call_analytics.json"
    for analytics, message in (({"min_rise": -1}, "min_rise must be"),
                               ({"shares": "x" * 100_000}, "shares must be"),
                               ({"min_segments": "y" * 100_000}, "min_segments must be")):
        file.write_text(json.dumps(analytics))
        with pytest.raises(ValueError, match=message) as err:
            CallAnalytics.of_model(load_model_folder(folder))
        assert str(err.value).startswith(f"{file}: ") and len(str(err.value)) < 300
    file.write_text("[1]")
    with pytest.raises(ModelFolderError, match="call_analytics.json: must hold a JSON object"):
        load_model_folder(folder)
    # settings of a newer callmood are left out with a warning, named briefly
    file.write_text(json.dumps({"min_rise": 0.3} | {f"new_{i}": 1 for i in range(20_000)}))
    with pytest.warns(UserWarning, match="ignored settings this callmood does not know") as warned:
        assert CallAnalytics.of_model(load_model_folder(folder)) == CallAnalytics(min_rise=0.3)
    assert "and 19995 more" in str(warned[0].message) and len(str(warned[0].message)) < 500
    # a file that cannot be replaced (here a folder in its place) is named, no temp left
    file.unlink()
    file.mkdir()
    with pytest.raises(ModelFolderError, match="call_analytics.json: cannot be written"):
        write_call_analytics(folder, {}, "x")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["call_analytics.json", "callmood.json", "config.json", "model.safetensors",
         "preprocessor_config.json"])


def test_analytics_fitted_before_the_live_thresholds_keep_their_live_alert(tmp_path,
                                                                          tiny_mel):
    """A count of confirmations without live thresholds was fitted when live alerts read
    the nightly thresholds: it is read with those, with a warning to refit."""
    folder = save_model_folder(tmp_path / "m", build_model(tiny_mel, TINY_LABELS,
                                                           "random:micro"),
                               tiny_mel, Normalization(), ModelCard(name="a",
                                                                   labels=list(TINY_LABELS)))
    old = {"min_rise": 0.15, "min_evidence": 2.0, "min_segments": 4, "confirm_segments": 1}
    write_call_analytics(folder, old, "a fit of 2026-12-06")
    as_fitted = CallAnalytics(**old, live_min_rise=0.15, live_min_evidence=2.0,
                              live_min_segments=4)
    with pytest.warns(UserWarning, match="call_analytics.json: fitted before live alerts"):
        assert CallAnalytics.of_model(load_model_folder(folder)) == as_fitted
    # the same for such settings given with --analytics, over a model's newer ones
    write_call_analytics(folder, asdict(CallAnalytics()), "a fit of now")
    with pytest.warns(UserWarning, match="--analytics: fitted before live alerts"):
        assert CallAnalytics.of_model(load_model_folder(folder), old) == as_fitted
    # settings that name live thresholds, or no confirmation count, are read as they are
    newer = load_model_folder(folder)
    assert CallAnalytics.of_model(newer, {"min_rise": 0.3}) == CallAnalytics(min_rise=0.3)
    assert CallAnalytics.of_model(newer, {"live_min_rise": 0.3, "confirm_segments": 5}) \
        == CallAnalytics(live_min_rise=0.3, confirm_segments=5)


def test_the_bundled_models_analytics_are_the_defaults_and_its_dev_fit():
    """CallAnalytics' defaults, the bundled folder's call_analytics.json and the committed
    fit report are one setting (a refit changes all three)."""
    bundled = load_model_folder(default_model_dir())
    fit = json.loads((REPO_DIR / "benchmarks/results/call_analytics_fit.json").read_text())
    assert fit["model_version"] == bundled.version
    assert CallAnalytics.of_model(bundled) == CallAnalytics() == CallAnalytics(**fit["chosen"])


def test_a_speaker_reference_travels_in_the_folder(tmp_path, tiny_mel):
    mel = replace(tiny_mel, speaker_mean=True, speaker_shift_db=10.0, trim_silence=True)
    model = build_model(mel, TINY_LABELS, "random:micro")
    norm = Normalization(mean=-5.5, std=2.5, speaker_reference=[-3.0] * mel.n_mels)
    loaded = load_model_folder(save_model_folder(tmp_path / "m", model, mel, norm,
                                                 ModelCard(name="s", labels=TINY_LABELS)))
    assert (loaded.mel, loaded.norm) == (mel, norm)
    # a folder without speaker normalisation does not name its settings: readers older
    # than them still load it
    plain = save_model_folder(tmp_path / "p", build_model(tiny_mel, TINY_LABELS, "random:micro"),
                              tiny_mel, Normalization(), ModelCard(name="p", labels=TINY_LABELS))
    written = json.loads((plain / "preprocessor_config.json").read_text())
    assert not {"speaker_mean", "speaker_shift_db", "speaker_reference", "trim_silence"} & {
        *written["mel"], *written["normalization"]}
    assert load_model_folder(plain).mel == tiny_mel


def test_folders_older_than_the_relative_floor_keep_their_absolute_floor(tmp_path,
                                                                          tiny_model_dir):
    folder = tmp_path / "legacy"
    shutil.copytree(tiny_model_dir, folder)
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["mel"]["level_floor_db"] == 80.0
    del pre["mel"]["level_floor_db"]
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    assert load_model_folder(folder).mel.level_floor_db is None


def test_a_pickle_named_model_safetensors_is_refused_in_one_line(tmp_path, tiny_model_dir):
    import pickle

    folder = tmp_path / "disguised"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelFolderError, match="not a safetensors file"):
        load_model_folder(folder)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_hidden_layers", 100_000, "layers 100000"),
    ("hidden_size", 4096, "hidden_size 4096"),
    ("intermediate_size", 10**9, "intermediate_size"),
])
def test_a_config_with_sizes_the_weights_lack_is_refused_before_building(
        tmp_path, tiny_model_dir, field, value, message):
    folder = tmp_path / "absurd"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=message):
        load_model_folder(folder)


def test_code_and_pickles_beside_the_weights_are_ignored_with_a_warning(tmp_path,
                                                                         tiny_model_dir):
    folder = tmp_path / "offered"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "ran"
    # what a stranger's folder might offer: remote code, and a pickle that runs code
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    torch.save({"x": 1}, folder / "pytorch_model.bin")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.warns(IgnoredModelFiles) as caught:
        model = load_model_folder(folder)
    message = str(caught[0].message)
    assert "modeling_evil.py" in message and "pytorch_model.bin" in message
    assert "auto_map" in message and "runs no code" in message
    assert not marker.exists() and model.labels == TINY_LABELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model_folder(tiny_model_dir)  # a clean folder loads without a word
