"""Held-out figures per corpus (training/evaluate.py) and the default-model report built on
them (benchmarks/eval_default_model.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from conftest import load_benchmark

from callmood.model.folder import load_model_folder
from callmood.training.corpora.base import Utterance
from callmood.training.evaluate import held_out_corpus_metrics


def test_restricted_figures_only_choose_among_the_corpus_classes(tiny_model_dir, write_wav):
    model = load_model_folder(tiny_model_dir)  # labels neutral, happy, sad, angry
    utterances = [Utterance(str(write_wav(f"{i}.wav", 1.0, freq=200 + 150 * i)),
                            label, f"c:{i % 2}", "c")
                  for i, label in enumerate(["happy", "angry"] * 3 + ["boredom"])]
    figures = held_out_corpus_metrics(model, utterances, workers=1)
    assert figures["n"] == 6 and figures["not_scored_labels"] == ["boredom"]
    assert figures["classes"] == ["happy", "angry"] and figures["chance"] == 0.5
    confusion = np.array(figures["confusion_restricted"])
    happy, angry = model.labels.index("happy"), model.labels.index("angry")
    # every prediction is one of the two classes the corpus has
    assert confusion[:, [happy, angry]].sum() == 6 == confusion.sum()
    assert figures["neutral_recall"] is None  # the corpus has no neutral
    assert 0 <= figures["ua_open"] <= 1 and 0 <= figures["ua_restricted"] <= 1


def card(corpora: dict, test_speakers: list[str]):
    return SimpleNamespace(card=SimpleNamespace(training={
        "corpora": corpora, "split": {"test_speakers": test_speakers}}))


def test_a_compared_model_that_heard_the_speakers_is_marked_seen():
    bench = load_benchmark("eval_default_model")
    candidate = card({"ravdess": 1, "emodb": 1}, ["ravdess:01", "emodb:03"])
    older = card({"ravdess": 1, "emodb": 1}, ["ravdess:01"])
    assert bench.held_out_speakers(candidate) == {"ravdess": ["ravdess:01"],
                                                  "emodb": ["emodb:03"]}
    assert not bench.trained_on(candidate, "emodb", ["emodb:03"])
    assert bench.trained_on(older, "emodb", ["emodb:03"])  # trained on all of EmoDB
    assert not bench.trained_on(older, "ravdess", ["ravdess:01"])
    assert not bench.trained_on(older, "ased", ["ased:ased_01"])  # never heard ASED
    cell = {"n": 10, "classes": ["happy", "angry"], "chance": 0.5, "ua_restricted": 0.7,
            "macro_f1_restricted": 0.65, "ua_open": 0.6, "neutral_recall": None}
    text = bench.markdown({"models": {"candidate": {}, "bundled": {}},
                           "held_out_speakers": {"emodb": ["emodb:03"]},
                           "corpora": {"emodb": {
                               "candidate": cell | {"seen_in_training": False},
                               "bundled": cell | {"seen_in_training": True}}}})
    assert "| emodb (03) | 10 | 2 (50) | 70.0 / 65.0 (60.0) |  | 70.0 / 65.0 (60.0) (seen)" \
        in text
    assert "candidate: mean restricted UA 70.0 over 1" in text
    assert "bundled: mean" not in text
