"""`Inference` and `predict_files`: the whole file counts, short files are filled like
training clips, and every path scores an utterance the same way."""

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from callmood.model.calibration import softmax
from callmood.model.folder import default_model_dir, load_model_folder
from callmood.model.predict import Inference, predict_files
from callmood.signal.audio import load_mono
from callmood.signal.features import fit_frames, log_mel
from callmood.signal.segment import speech_span

RATE = 16000


@pytest.fixture(scope="module")
def model():
    return load_model_folder(default_model_dir())


@pytest.fixture(scope="module")
def speech(shared_dir):
    """Ten seconds of real speech: RAVDESS takes of one actor, back to back."""
    takes = sorted((shared_dir / "data/ravdess/Actor_05").glob("03-01-0[15]-02-*.flac"))
    audio = np.concatenate([load_mono(p, RATE) for p in takes])
    assert len(audio) >= 10 * RATE
    return audio[: 10 * RATE]


def write(path, audio):
    sf.write(path, audio, RATE, subtype="PCM_16")
    return str(path)


@pytest.mark.parametrize(("seconds", "clips"), [(1.0, 1), (3.5, 3), (10.0, 5)])
def test_predict_covers_the_whole_file(model, speech, tmp_path, seconds, clips):
    audio = speech[: int(seconds * RATE)]
    row = next(predict_files(model, [write(tmp_path / "a.wav", audio)]))
    assert row["clips"] == clips and row["duration_s"] == pytest.approx(seconds)
    assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    if seconds > model.mel.clip_seconds:
        # the last 0.4 s lies outside the first clip; changing it changes the answer
        noisy_end = audio.copy()
        noisy_end[-int(0.4 * RATE):] = np.random.default_rng(0).normal(0, 0.1, int(0.4 * RATE))
        other = next(predict_files(model, [write(tmp_path / "b.wav", noisy_end)]))
        moved = max(abs(other["probabilities"][k] - row["probabilities"][k])
                    for k in model.labels)
        assert moved > 1e-3


def test_a_file_shorter_than_a_clip_is_repeated_to_fill_it(model, speech, tmp_path):
    audio = speech[:RATE]
    row = next(predict_files(model, [write(tmp_path / "short.wav", audio)]))
    decoded = load_mono(tmp_path / "short.wav", RATE)
    filled = fit_frames(log_mel(decoded, model.mel), model.mel.input_frames)
    expected = model.predict_mels(filled[None])[0]
    got = np.array([row["probabilities"][k] for k in model.labels])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the filled clip is the second of speech again and again, never a constant
    frames = log_mel(decoded, model.mel).shape[-1]
    assert torch.equal(filled[:, frames:2 * frames], filled[:, :frames])


def test_a_model_that_trims_silence_predicts_a_file_from_its_speech(model, speech, tmp_path):
    trimming = load_model_folder(default_model_dir())
    trimming.mel = replace(trimming.mel, trim_silence=True)
    room = np.random.default_rng(1).normal(0, 10 ** (-60 / 20), RATE).astype(np.float32)
    path = write(tmp_path / "take.wav", np.concatenate([room, speech[:2 * RATE], room]))
    row = next(predict_files(trimming, [path]))
    span = speech_span(load_mono(path, RATE), RATE)
    assert 1.8 * RATE < len(span) < 2.4 * RATE
    expected = Inference.of(trimming).utterances([log_mel(span, trimming.mel)]).probs[0]
    got = np.array([row["probabilities"][k] for k in trimming.labels])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert row["duration_s"] == pytest.approx(4.0)  # the file's, as before
    whole = next(predict_files(model, [path]))
    assert not np.allclose(got, [whole["probabilities"][k] for k in model.labels], atol=1e-3)


def test_predict_training_and_evaluation_score_an_utterance_alike(model, speech, tmp_path):
    """A file through predict_files, the same log-mel among others (evaluation), and the
    bare network as training holds it give one answer."""
    path = write(tmp_path / "a.wav", speech[: 4 * RATE])
    row = next(predict_files(model, [path]))
    mel = log_mel(load_mono(path, RATE), model.mel)
    others = [log_mel(speech[:RATE], model.mel), log_mel(speech[5 * RATE:], model.mel)]
    together = Inference.of(model).utterances([others[0], mel, others[1]])
    assert together.clips.tolist() == [1, row["clips"], 3]
    got = np.array([row["probabilities"][k] for k in model.labels])
    np.testing.assert_allclose(together.probs[1], got, atol=1e-6)
    bare = Inference(model.model, model.mel, model.norm)  # no temperature yet
    scores = bare.utterances([mel])
    np.testing.assert_allclose(scores.probs,
                               Inference.of(model).utterances([mel], True).uncalibrated,
                               atol=1e-12)
    assert scores.uncalibrated is None


def test_calibrated_and_uncalibrated_means_come_from_one_forward_pass(model, speech):
    inference = Inference(model.model, model.mel, model.norm, temperature=2.0)
    mels = [log_mel(speech[: int(3.5 * RATE)], model.mel), log_mel(speech, model.mel)]
    logits, owners = inference.clip_logits(mels)
    assert owners.tolist() == [0] * 3 + [1] * 5
    scores = inference.utterances(mels, uncalibrated=True)
    for i in range(2):
        np.testing.assert_allclose(scores.probs[i], softmax(logits[owners == i], 2.0).mean(0))
        np.testing.assert_allclose(scores.uncalibrated[i], softmax(logits[owners == i]).mean(0))
    empty = inference.utterances([], uncalibrated=True)
    assert empty.probs.shape == empty.uncalibrated.shape == (0, len(model.labels))
