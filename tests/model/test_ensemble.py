"""callmood/model/ensemble.py: an ensemble folder scores as its members' averaged
calibrated probabilities, everywhere a model folder goes, and refuses members that
do not fit together or lie outside it."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_LABELS

from callmood.cli import main
from callmood.model.ensemble import write_ensemble_folder
from callmood.model.folder import (
    ModelCard,
    ModelFolderError,
    folder_files,
    load_model_folder,
    save_model_folder,
    write_call_analytics,
)
from callmood.model.predict import Inference
from callmood.signal.features import Normalization
from callmood.training.model import build_model

NORM = Normalization(mean=-6.0, std=3.0)


def member(path, mel, seed, temperature=1.0, test_speakers=("ravdess:01", "ravdess:02"),
           labels=TINY_LABELS, norm=NORM):
    torch.manual_seed(seed)
    card = ModelCard(name=f"m{seed}", labels=list(labels),
                     calibration={"temperature": temperature},
                     training={"corpora": {"ravdess": 100 + seed},
                               "split": {"test_speakers": list(test_speakers)}})
    return save_model_folder(path, build_model(mel, list(labels), "random:micro"), mel, norm,
                             card)


def random_mels(mel, n=6):
    g = torch.Generator().manual_seed(3)
    return -6.0 + 3.0 * torch.randn(n, mel.n_mels, mel.input_frames, generator=g)


def test_an_ensemble_scores_its_members_calibrated_probabilities_averaged(tmp_path, tiny_mel):
    a = member(tmp_path / "a", tiny_mel, 1, temperature=2.0)
    b = member(tmp_path / "b", tiny_mel, 2, temperature=0.5,
               test_speakers=("ravdess:02", "ravdess:03"))
    write_ensemble_folder(tmp_path / "ens", [a, b], "pair")
    folder = tmp_path / "ens"
    # only JSON and safetensors, the members as subfolders
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) \
        == sorted(folder_files(folder))
    assert all(f.endswith((".json", ".safetensors")) for f in folder_files(folder))
    ensemble, one, two = (load_model_folder(p) for p in (folder, a, b))
    mels = random_mels(tiny_mel)
    expected = (one.predict_mels(mels) + two.predict_mels(mels)) / 2
    np.testing.assert_allclose(ensemble.predict_mels(mels), expected, rtol=1e-5, atol=1e-6)
    # evaluation and predict read utterances through Inference: the same average
    scores = Inference.of(ensemble).utterances([mels[0], mels[1]])
    np.testing.assert_allclose(scores.probs, expected[:2], rtol=1e-5, atol=1e-6)
    # in bf16 too, each member in bf16, the average in fp32
    np.testing.assert_allclose(ensemble.predict_mels(mels, bf16=True),
                               (one.predict_mels(mels, bf16=True)
                                + two.predict_mels(mels, bf16=True)) / 2, rtol=1e-5, atol=1e-6)

    assert ensemble.name == "pair" and ensemble.labels == TINY_LABELS
    assert ensemble.card.temperature == 1.0  # each member applies its own
    assert ensemble.version not in (one.version, two.version)
    training = ensemble.card.training
    assert [m["version"] for m in training["ensemble"]] == [one.version, two.version]
    assert training["split"]["test_speakers"] == ["ravdess:02"]  # held out by both
    assert training["corpora"] == {"ravdess": 102}
    # call analytics fitted with the ensemble travel in its folder, as with one model
    write_call_analytics(folder, {"min_rise": 0.3}, "dev calls")
    assert load_model_folder(folder).analytics == {"min_rise": 0.3, "fitted_on": "dev calls"}
    # the same members in another order are another ensemble (version), same scores
    swapped = write_ensemble_folder(tmp_path / "swapped", [b, a], "pair")
    assert swapped.version != ensemble.version
    np.testing.assert_allclose(swapped.predict_mels(mels), expected, rtol=1e-5, atol=1e-6)


def test_the_ensemble_command_writes_a_folder_predict_reads(tmp_path, tiny_mel, write_wav):
    a, b = member(tmp_path / "a", tiny_mel, 1), member(tmp_path / "b", tiny_mel, 2)
    runner = CliRunner()
    made = runner.invoke(main, ["ensemble", str(a), str(b), "--out", str(tmp_path / "e"),
                                "--name", "pair"])
    assert made.exit_code == 0, made.output
    assert "2 members" in made.output and "2 test speakers no member" in made.output
    tone = str(write_wav("tone.wav", seconds=2.0))
    predicted = runner.invoke(main, ["predict", tone, "--model", str(tmp_path / "e"),
                                     "--format", "jsonl"])
    assert predicted.exit_code == 0, predicted.output
    row = json.loads(predicted.output.strip().splitlines()[-1])
    assert set(row["probabilities"]) == set(TINY_LABELS)
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
    # a member that does not load, or an existing output, is one line naming it
    again = runner.invoke(main, ["ensemble", str(a), str(b), "--out", str(tmp_path / "e"),
                                 "--name", "pair"])
    assert again.exit_code != 0 and "already exists" in again.output
    missing = runner.invoke(main, ["ensemble", str(a), str(tmp_path / "nope"), "--out",
                                   str(tmp_path / "f"), "--name", "x"])
    assert missing.exit_code != 0 and "nope: model folder not found" in missing.output
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("change, message", [
    ({"labels": ["neutral", "happy", "sad", "fearful"]}, "labels"),
    ({"norm": Normalization(mean=-5.0, std=3.0)}, "normalisation"),
    ({"mel": "n_mels=48"}, "mel settings"),
])
def test_members_that_read_other_features_or_labels_are_refused(tmp_path, tiny_mel, change,
                                                                  message):
    a = member(tmp_path / "a", tiny_mel, 1)
    mel = replace(tiny_mel, n_mels=48) if change.get("mel") else tiny_mel
    other = {key: value for key, value in change.items() if key != "mel"}
    b = member(tmp_path / "b", mel, 2, **other)
    with pytest.raises(ModelFolderError, match=f"member-2: its [a-z, ]*{message}[a-z, ]* differ"):
        write_ensemble_folder(tmp_path / "ens", [a, b], "x")
    assert not (tmp_path / "ens").exists()


@pytest.mark.parametrize("members, message", [
    (["member-1", "../outside"], "distinct subfolder names"),
    (["member-1", "/etc"], "distinct subfolder names"),
    (["member-1"], "2 to 8"),
    (["member-1", "member-1"], "distinct"),
    ("member-1", "distinct subfolder names"),
])
def test_an_ensemble_json_from_a_stranger_names_only_its_own_subfolders(tmp_path, tiny_mel,
                                                                        members, message):
    folder = tmp_path / "ens"
    write_ensemble_folder(folder, [member(tmp_path / "a", tiny_mel, 1),
                                   member(tmp_path / "b", tiny_mel, 2)], "x")
    shutil.copytree(folder / "member-2", tmp_path / "outside")
    (folder / "ensemble.json").write_text(json.dumps({"name": "x", "members": members}))
    with pytest.raises(ModelFolderError, match=f"ensemble.json: .*{message}"):
        load_model_folder(folder)
    with pytest.raises(ModelFolderError, match=f"ensemble.json: .*{message}"):
        folder_files(folder)  # what a Dask run would ship: the same checks


def test_a_member_that_is_a_link_is_refused(tmp_path, tiny_mel):
    folder = tmp_path / "ens"
    write_ensemble_folder(folder, [member(tmp_path / "a", tiny_mel, 1),
                                   member(tmp_path / "b", tiny_mel, 2)], "x")
    shutil.rmtree(folder / "member-2")
    (folder / "member-2").symlink_to(tmp_path / "b")  # a folder anywhere on the machine
    for read in (load_model_folder, folder_files):
        with pytest.raises(ModelFolderError, match="member-2: a member must be a folder "
                                                   "inside the ensemble"):
            read(folder)


def test_held_out_speakers_are_those_no_member_trained_on(tmp_path, tiny_mel):
    a = member(tmp_path / "a", tiny_mel, 1, test_speakers=("ravdess:01", "emodb:03"))
    b = member(tmp_path / "b", tiny_mel, 2, test_speakers=("ravdess:01", "ravdess:02"))
    card = json.loads((a / "callmood.json").read_text())
    card["training"]["corpora"]["emodb"] = 50  # a trained on emodb, b never did
    (a / "callmood.json").write_text(json.dumps(card))
    ensemble = write_ensemble_folder(tmp_path / "ens", [a, b], "x")
    assert ensemble.card.training["split"]["test_speakers"] == ["emodb:03", "ravdess:01"]
    assert ensemble.card.training["corpora"] == {"ravdess": 102, "emodb": 50}


@pytest.mark.parametrize("training", [[], {"corpora": "all", "split": 3},
                                      {"corpora": {"ravdess": "many"}}])
def test_a_members_odd_training_entry_is_no_traceback(tmp_path, tiny_mel, training):
    a, b = member(tmp_path / "a", tiny_mel, 1), member(tmp_path / "b", tiny_mel, 2)
    card = json.loads((b / "callmood.json").read_text())
    card["training"] = training
    (b / "callmood.json").write_text(json.dumps(card))
    load_model_folder(b)  # a single model loads with any training entry
    if training == {"corpora": {"ravdess": "many"}}:
        with pytest.raises(ModelFolderError, match="member-2/callmood.json: .*many"):
            write_ensemble_folder(tmp_path / "ens", [a, b], "x")
        assert not (tmp_path / "ens").exists()  # nothing half-written is left
    else:
        ensemble = write_ensemble_folder(tmp_path / "ens", [a, b], "x")
        assert ensemble.card.training["split"]["test_speakers"] == []


def test_an_ensemble_cannot_hold_an_ensemble(tmp_path, tiny_mel):
    a, b = member(tmp_path / "a", tiny_mel, 1), member(tmp_path / "b", tiny_mel, 2)
    inner, outer = tmp_path / "inner", tmp_path / "outer"
    write_ensemble_folder(inner, [a, b], "inner")
    with pytest.raises(ModelFolderError, match="an ensemble cannot be a member"):
        write_ensemble_folder(outer, [inner, a], "outer")
    write_ensemble_folder(outer, [a, b], "outer")
    shutil.rmtree(outer / "member-2")
    shutil.copytree(inner, outer / "member-2")
    with pytest.raises(ModelFolderError, match="member-2: an ensemble cannot hold an ensemble"):
        load_model_folder(outer)
    # a member's own faults are reported by its file, as for any folder
    shutil.rmtree(outer / "member-2")
    shutil.copytree(a, outer / "member-2")
    (outer / "member-2" / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="member-2: model.safetensors is missing"):
        load_model_folder(outer)


def test_averaged_weights_make_one_ordinary_model_folder(tmp_path, tiny_mel):
    a, b = member(tmp_path / "a", tiny_mel, 1, 2.0), member(tmp_path / "b", tiny_mel, 2, 0.5)
    runner = CliRunner()
    made = runner.invoke(main, ["ensemble", str(a), str(b), "--out", str(tmp_path / "soup"),
                                "--name", "soup", "--average", "weights"])
    assert made.exit_code == 0, made.output
    assert not (tmp_path / "soup" / "ensemble.json").exists()  # one network, any reader
    soup, one, two = (load_model_folder(p) for p in (tmp_path / "soup", a, b))
    for key, tensor in soup.model.state_dict().items():
        torch.testing.assert_close(tensor, (one.model.state_dict()[key]
                                            + two.model.state_dict()[key]) / 2)
    assert soup.card.temperature == 1.0  # not fitted: the members' are not the soup's
    assert soup.card.training["averaged"] == "weights"
    assert [m["version"] for m in soup.card.training["ensemble"]] == [one.version, two.version]
    assert soup.predict_mels(random_mels(tiny_mel)).shape == (6, len(TINY_LABELS))
    # members of another architecture cannot be averaged
    torch.manual_seed(3)
    other = save_model_folder(tmp_path / "c", build_model(tiny_mel, list(TINY_LABELS),
                                                          "random:tiny"), tiny_mel, NORM,
                              ModelCard(name="c", labels=list(TINY_LABELS)))
    refused = runner.invoke(main, ["ensemble", str(a), str(other), "--out",
                                   str(tmp_path / "bad"), "--name", "x", "--average", "weights"])
    assert refused.exit_code != 0 and "its architecture differ" in refused.output
    assert not (tmp_path / "bad").exists()
