"""Held-out figures per corpus (training/evaluate.py) and the default-model report built on
them (benchmarks/eval_default_model.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import load_benchmark

from callmood.model.folder import load_model_folder
from callmood.training.corpora.base import Utterance
from callmood.training.evaluate import corpus_figures, held_out_corpus_metrics


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
    # restricted UA: the mean recall of the corpus's classes, from its confusion
    recalls = [confusion[i, i] / confusion[i].sum() for i in (happy, angry)]
    assert figures["ua_restricted"] == pytest.approx(np.mean(recalls))


def test_an_ensemble_averages_its_members_probabilities(tmp_path, write_wav, tiny_mel):
    from batch_fixtures import make_model_folder

    from callmood.training.evaluate import score_utterances

    members = [load_model_folder(make_model_folder(tmp_path / str(seed), seed=seed,
                                                   mel=tiny_mel)) for seed in (0, 1)]
    utterances = [Utterance(str(write_wav(f"{i}.wav", 1.0, freq=150 + 90 * i)), label,
                            f"c:{i % 3}", "c")
                  for i, label in enumerate(["happy", "angry", "sad"] * 4)]
    both = held_out_corpus_metrics(members, utterances, workers=1)
    probs = np.mean([score_utterances(m, utterances, workers=1).probs for m in members], 0)
    targets = [members[0].labels.index(u.label) for u in utterances]
    expected = corpus_figures(np.array(targets), probs, members[0].labels)
    assert both["ua_restricted"] == pytest.approx(expected["ua_restricted"])
    assert both["confusion_restricted"] == expected["confusion_restricted"]
    alone = [held_out_corpus_metrics(m, utterances, workers=1)["confusion_restricted"]
             for m in members]
    assert both["confusion_restricted"] not in alone  # the average is neither member
    members[1].card.labels = members[1].labels[::-1]
    with pytest.raises(ValueError, match="same labels"):
        held_out_corpus_metrics(members, utterances, workers=1)


def test_open_figures_count_a_class_the_corpus_lacks_restricted_ones_do_not():
    labels = ["neutral", "happy", "sad", "angry"]
    targets = np.array([1, 1, 3, 3])  # happy, happy, angry, angry
    probs = np.array([[0.1, 0.5, 0.0, 0.4],  # happy: right either way
                      [0.6, 0.3, 0.0, 0.1],  # neutral, open; happy, restricted
                      [0.0, 0.1, 0.6, 0.3],  # sad, open; angry, restricted
                      [0.0, 0.7, 0.0, 0.3]])  # happy: wrong either way
    figures = corpus_figures(targets, probs, labels)
    assert figures["classes"] == ["happy", "angry"] and figures["chance"] == 0.5
    assert figures["ua_open"] == pytest.approx((1 / 2 + 0 / 2) / 2)
    assert figures["ua_restricted"] == pytest.approx((2 / 2 + 1 / 2) / 2)
    # restricted: happy 2/3 precise, all found (F1 0.8); angry 1/1 precise, half found (2/3)
    assert figures["macro_f1_restricted"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert figures["confusion_restricted"] == [[0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0],
                                               [0, 1, 0, 1]]
    assert figures["neutral_recall"] is None


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
            "macro_f1_restricted": 0.65, "ua_open": 0.6, "neutral_recall": None,
            "speech_only": {"ua_restricted": 0.5, "macro_f1_restricted": 0.45}}
    text = bench.markdown({"models": {"candidate": {}, "bundled": {}},
                           "held_out_speakers": {"emodb": ["emodb:03"]},
                           "corpora": {"emodb": {
                               "candidate": cell | {"seen_in_training": False},
                               "bundled": cell | {"seen_in_training": True}}}})
    assert "| emodb (03) | 10 | 2 (50) | 70.0 / 65.0 (60.0) | 50.0 / 45.0 |  | " \
        "70.0 / 65.0 (60.0) (seen) | 50.0 / 45.0 |" in text
    assert "candidate: mean restricted UA 70.0 (speech only 50.0) over 1" in text
    assert "bundled: mean" not in text


def fold_metrics(ua: float, n: int, confusion: list) -> dict:
    return {"labels": ["sad", "angry"], "wa": ua + 0.1, "ua": ua, "macro_f1": ua - 0.1,
            "weighted_f1": ua, "n": n, "confusion": confusion,
            "per_class": {"sad": {"precision": ua, "recall": 0.5, "f1": 0.4, "support": n // 2},
                          "angry": {"precision": 1.0, "recall": ua, "f1": 0.6,
                                    "support": n - n // 2}}}


def test_folds_aggregate_to_mean_and_std():
    from callmood.training.evaluate import aggregate_folds

    out = aggregate_folds([fold_metrics(0.5, 4, [[2, 0], [1, 1]]),
                           fold_metrics(0.7, 6, [[2, 1], [1, 2]])])
    assert out["folds"] == 2 and out["labels"] == ["sad", "angry"]
    assert out["ua"] == pytest.approx(0.6) and out["ua_std"] == pytest.approx(0.1)
    assert out["wa"] == pytest.approx(0.7) and out["macro_f1_std"] == pytest.approx(0.1)
    assert out["per_class"]["sad"] == pytest.approx(
        {"precision": 0.6, "recall": 0.5, "f1": 0.4, "support": 5})
    assert out["per_class"]["angry"]["support"] == 5  # supports add up over folds
    assert out["confusion"] == [[2.0, 0.5], [1.0, 1.5]]
    assert [f["n"] for f in out["per_fold"]] == [4, 6]
    assert out["per_fold"][1]["ua"] == 0.7


def held_out_row(candidate: float, bundled: float, seen: bool = False,
                 speech: tuple[float, float] = (0.5, 0.5)) -> dict:
    """Restricted UA of both models from the file, and (candidate, bundled) from its speech
    alone."""
    return {"candidate": {"ua_restricted": candidate, "seen_in_training": False,
                          "speech_only": {"ua_restricted": speech[0]}},
            "bundled": {"ua_restricted": bundled, "seen_in_training": seen,
                        "speech_only": {"ua_restricted": speech[1]}}}


def call_report(ua: float | None, share: float | None) -> dict:
    return {"calls": 150, "utterances": {"ua": ua} if ua is not None else {"n": 0},
            "customer_negative_share": {"mean_abs_error_points": share}}


@pytest.fixture
def rule(tmp_path):
    """eval_default_model's adoption() on a table of leave-one-corpus-out rows (c: the
    reference; c12: +0.04, +0.03, +0.05; flat: +0.04, -0.05, +0.04; part: two corpora),
    hand-made held-out figures and call reports that pass every test."""
    bench = load_benchmark("eval_default_model")
    corpora = ["ravdess", "emodb", "nemo"]
    rows = {"c": [0.30, 0.40, 0.50], "c12": [0.34, 0.43, 0.55], "flat": [0.34, 0.35, 0.54]}
    table = {"corpora": corpora, "settings": {"epochs": "6", "precision": "bf16"},
             "cells": {f"{row}-{corpus}": {"ua_restricted": ua}
                       for row, figures in rows.items()
                       for corpus, ua in zip(corpora, figures, strict=True)}
             | {"part-ravdess": {"ua_restricted": 0.5}, "part-emodb": {"ua_restricted": 0.5}}}
    (tmp_path / "transfer.json").write_text(json.dumps(table))
    twelve = {**table, "settings": {"epochs": "12", "precision": "fp32"}}
    (tmp_path / "transfer_12.json").write_text(json.dumps(twelve))

    def loco(spec: str, reference: str = f"{tmp_path}/transfer.json:c") -> dict:
        return {"candidate": bench.loco_row(spec), "reference": bench.loco_row(reference)}

    report = {"models": {"candidate": {"model": "v5"}, "bundled": {"model": "v4"}},
              "corpora": {"emodb": held_out_row(0.60, 0.62),
                          "nemo": held_out_row(0.20, 0.50, seen=True)}}  # not a held-out pair
    calls = {"candidate": call_report(0.60, 22.0), "bundled": call_report(0.577, 24.9)}
    return bench, loco, report, calls, tmp_path


def test_a_candidate_is_adopted_when_every_test_of_the_rule_passes(rule):
    bench, loco, report, calls, tables = rule
    verdict = bench.adoption(report, calls, loco(f"{tables}/transfer_12.json:c12"), "bundled")
    tests = verdict["tests"]
    assert tests["leave_one_corpus_out"]["mean_gain"] == pytest.approx(0.04)
    low, high = tests["leave_one_corpus_out"]["interval_95"]
    assert 0 < low < 0.04 < high  # +0.04, +0.03, +0.05: beyond the cells' noise
    assert tests["leave_one_corpus_out"]["budgets_differ"] == ["epochs", "precision"]
    assert tests["held_out_speakers"]["change_by_corpus"] == {"emodb": pytest.approx(-0.02)}
    assert tests["held_out_speakers"]["seen_by_a_model"] == ["nemo"]
    assert verdict["adopt"]
    text = bench.adoption_markdown(verdict)
    assert text.startswith("**Adopt**: v5 against bundled")
    assert "| 44.0 | 40.0 | +4.0 [" in text and "within the cells' noise" not in text
    assert "Not compared, a model heard their speakers: nemo." in text
    assert "differ in epochs (12 against 6), precision (fp32 against bf16)" in text


def test_each_failed_test_of_the_rule_keeps_the_bundled_model_and_says_why(rule):
    bench, loco, report, calls, tables = rule
    gain = loco(f"{tables}/transfer.json:c12")
    worse = {**calls, "candidate": call_report(0.60, 25.0)}  # share error up
    verdict = bench.adoption(report, worse, gain, "bundled")
    assert not verdict["adopt"]
    assert verdict["tests"]["call_benchmark_test"]["why"] == \
        "utterance UA or share error not better"
    lacking = {**calls, "candidate": call_report(None, None)}  # eval_calls found nothing
    verdict = bench.adoption(report, lacking, gain, "bundled")
    assert "lacks utterance UA" in verdict["tests"]["call_benchmark_test"]["why"]
    assert "| – | 57.7 | – | failed: a report lacks" in bench.adoption_markdown(verdict)

    dropped = {**report, "corpora": {"emodb": held_out_row(0.58, 0.62)}}  # -4 points
    verdict = bench.adoption(dropped, calls, gain, "bundled")
    assert not verdict["adopt"] and verdict["tests"]["held_out_speakers"]["dropped"] == ["emodb"]
    assert "**Keep**" in bench.adoption_markdown(verdict)
    # level from the file, -4 points from the speech alone: the silence held the figure up
    silence = {**report, "corpora": {"emodb": held_out_row(0.62, 0.62, speech=(0.46, 0.5))}}
    verdict = bench.adoption(silence, calls, gain, "bundled")
    assert verdict["tests"]["held_out_speakers"]["dropped"] == ["emodb"]
    assert "| held-out speakers of emodb, change of restricted UA (from the file / its " \
        "speech alone) | | | +0.0 / -4.0 | failed |" in bench.adoption_markdown(verdict)
    all_seen = {**report, "corpora": {"nemo": report["corpora"]["nemo"]}}
    verdict = bench.adoption(all_seen, calls, gain, "bundled")
    assert verdict["tests"]["held_out_speakers"]["why"] == \
        "no corpus whose speakers both models held out"
    assert "| held-out speakers | | | | failed: no corpus" in bench.adoption_markdown(verdict)

    verdict = bench.adoption(report, calls, loco(f"{tables}/transfer.json:part"), "bundled")
    assert verdict["tests"]["leave_one_corpus_out"]["why"] == \
        "cells missing: {'candidate': ['nemo'], 'reference': []}"
    assert not verdict["adopt"]
    # the reference's own row lacking a corpus fails too, however the others compare
    verdict = bench.adoption(report, calls, loco(f"{tables}/transfer.json:c12",
                                                 f"{tables}/transfer.json:part"), "bundled")
    assert not verdict["tests"]["leave_one_corpus_out"]["passed"]

    flat = bench.adoption(report, calls, loco(f"{tables}/transfer.json:flat"), "bundled")
    assert flat["adopt"]  # +0.01 on average: the rule's letter, marked as noise
    assert flat["tests"]["leave_one_corpus_out"]["within_noise"]
    assert "passed (within the cells' noise)" in bench.adoption_markdown(flat)


def test_a_leave_one_corpus_out_row_is_read_from_a_transfer_table(rule):
    bench, _, _, _, tables = rule
    row = bench.loco_row(f"{tables}/transfer.json:c")
    assert row["ua"] == {"ravdess": 0.30, "emodb": 0.40, "nemo": 0.50}
    assert row["corpora"] == ["ravdess", "emodb", "nemo"]
    with pytest.raises(ValueError, match="has no cell of row 'x'"):
        bench.loco_row(f"{tables}/transfer.json:x")
    with pytest.raises(ValueError, match="expected TABLE.json:ROW"):
        bench.loco_row(f"{tables}/missing.json:c")
    (tables / "other.json").write_text(json.dumps({"levers": {}}))
    with pytest.raises(ValueError, match="not a table of benchmarks/bench_transfer.py"):
        bench.loco_row(f"{tables}/other.json:c")
