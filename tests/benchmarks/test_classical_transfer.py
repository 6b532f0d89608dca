"""benchmarks/classical_transfer.py: the normalisations, the balance, a cell on real audio."""

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("classical_transfer")


def test_standardise_puts_every_group_at_zero_mean_and_unit_spread(bench):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(5, 3, (40, 4)), rng.normal(-2, 0.5, (60, 4))])
    groups = np.array(["a"] * 40 + ["b"] * 60)
    out = bench.standardise(x, groups)
    for g in ("a", "b"):
        assert np.allclose(out[groups == g].mean(0), 0, atol=1e-9)
        assert np.allclose(out[groups == g].std(0), 1, atol=1e-6)


def test_balance_weights_give_every_corpus_and_its_classes_the_same_weight(bench):
    corpus = np.array(["x"] * 10 + ["y"] * 90)
    label = np.array([0] * 8 + [1] * 2 + [0] * 30 + [1] * 30 + [2] * 30)
    w = bench.balance_weights(corpus, label)
    assert np.isclose(w[corpus == "x"].sum(), w[corpus == "y"].sum())
    assert np.isclose(w[(corpus == "x") & (label == 0)].sum(),
                      w[(corpus == "x") & (label == 1)].sum())
    assert np.isclose(w.mean(), 1.0)


def test_a_cell_on_real_corpora(bench, shared_dir, tmp_path):
    """Three real corpora, a few utterances each: the features are kept and read again,
    and a cell scores the held-out corpus over its own classes only."""
    data = bench.load_all(shared_dir, ["kored", "emodb", "emovo"])
    labels = sorted({u.label for part in data.values() for u in part})
    label_id = {label: i for i, label in enumerate(labels)}
    table, parts = {}, {}
    for name, part in data.items():
        parts[name] = sorted(part, key=lambda u: u.path)[::max(1, len(part) // 24)][:24]
        x = bench.corpus_features(name, parts[name], tmp_path, tmp_path / "cache", 1)
        assert x.shape[0] == len(parts[name]) and np.isfinite(x).all()
        table[name] = {"x": x, "y": np.array([label_id[u.label] for u in parts[name]]),
                       "speaker": np.array([u.speaker for u in parts[name]])}
    [kept] = tmp_path.glob("features-kored-*.npy")
    np.save(kept, np.zeros((3, 2)))  # a kept file is read, not computed again
    assert bench.corpus_features("kored", parts["kored"], tmp_path, None, 1).shape == (3, 2)
    models = {}
    for row in bench.ROWS:
        cell = bench.run_row(row, "kored", table, labels)
        shared = bench.run_row(row, "kored", table, labels, models=models)
        assert shared["ua_restricted"] == cell["ua_restricted"]
        assert cell["trained_on"] == ["emodb", "emovo"]
        assert set(cell["classes"]) == {labels[k] for k in table["kored"]["y"]}
        assert 0.0 <= cell["ua_restricted"] <= 1.0
        assert np.allclose(cell["probs"].sum(1), 1)
    assert len(models) == 3  # the pseudo-call rows reuse k-speaker's model
    y = table["kored"]["y"]
    onehot = np.eye(len(labels))[y]  # a ViT that is always right
    by_weight = bench.averaged(cell, onehot, y, labels)
    assert by_weight["0.0"] == 1.0 and by_weight["1.0"] == pytest.approx(cell["ua_restricted"])
    report = {"corpora": ["kored", "emodb"], "rows": ["k"], "cells": {"k-kored": cell},
              "averaged": {"kored": {"0.5": 0.6}},
              "vit": {"transfer:c": {"table": "t.json:c", "per_corpus": {"kored": 0.39,
                                                                          "emodb": 0.49}}}}
    text = bench.markdown(report)
    assert "| emodb | not run | 49.0 |  |" in text and "| 39.0 | 60.0 |" in text
    assert "| mean (corpora) |" in text and "44.0 (2)" in text


def test_pseudo_calls_deal_every_utterance_of_one_speaker_into_calls(bench):
    rng = np.random.default_rng(1)
    speaker = np.array(["a"] * 100 + ["b"] * 60)
    y = rng.integers(0, 4, len(speaker))
    for alpha in (None, 0.5):
        groups = bench.pseudo_calls(speaker, y, 26, alpha)
        assert all(g is not None for g in groups)
        for g in set(groups):
            members = groups == g
            assert members.sum() <= 26 and len(set(speaker[members])) == 1
        assert len(set(groups[speaker == "a"])) == 4  # 100 utterances: 26 + 26 + 26 + 22

    def top_share(alpha):  # the mean share of each call's commonest emotion
        groups = bench.pseudo_calls(speaker, y, 26, alpha, seed=3)
        return np.mean([np.bincount(y[groups == g]).max() / (groups == g).sum()
                        for g in set(groups)])
    assert top_share(0.5) > top_share(None) + 0.1


def test_each_row_normalises_the_held_out_corpus_its_own_way(bench):
    rng = np.random.default_rng(2)
    speaker = np.repeat(["s1", "s2"], 60)
    x = rng.normal(3, 2, (120, 5)) + (speaker == "s2")[:, None] * 4.0
    corpus = {"x": x, "y": rng.integers(0, 4, 120), "speaker": speaker}
    mean, std = np.full(5, 1.0), np.full(5, 2.0)  # a training set's statistics

    def prepare(v):
        return (v - mean) / std
    assert np.allclose(bench.held_out_features("k", corpus, prepare), (x - 1) / 2)
    out = bench.held_out_features("k-corpus", corpus, lambda v: v)
    assert np.allclose(out.mean(0), 0) and not np.allclose(out[speaker == "s1"].mean(0), 0)
    out = bench.held_out_features("k-speaker", corpus, lambda v: v)
    assert all(np.allclose(out[speaker == s].mean(0), 0) for s in ("s1", "s2"))
    heard = {**corpus, "x_heard": x + 10}  # through a line: the heard features are read
    assert np.allclose(bench.held_out_features("k", heard, prepare), (x + 9) / 2)
    groups = bench.pseudo_calls(speaker, corpus["y"], bench.CALL_TURNS, None)
    out = bench.held_out_features("k-speaker-calls", corpus, lambda v: v)
    assert all(np.allclose(out[groups == g].mean(0), 0) for g in set(groups))
    skewed = bench.held_out_features("k-speaker-calls-skewed", corpus, lambda v: v, skew=0.1)
    assert not np.allclose(skewed, out)  # --skew reaches the pseudo-calls
    assert np.allclose(skewed, bench.held_out_features("k-speaker-calls-skewed", corpus,
                                                       lambda v: v, skew=0.1))
    shrunk = bench.held_out_features("k-speaker-calls-shrunk", corpus, lambda v: v, skew=0.1)
    groups = bench.pseudo_calls(speaker, corpus["y"], bench.CALL_TURNS, 0.1)
    g = groups[0]
    rows = groups == g
    own = rows.sum() / (rows.sum() + bench.CALL_TURNS)  # the same pseudo-calls, shrunk
    mean = own * x[rows].mean(0) + (1 - own) * x.mean(0)
    spread = np.sqrt(own * x[rows].var(0) + (1 - own) * x.var(0))
    assert np.allclose(shrunk[rows], (x[rows] - mean) / spread, atol=1e-6)
    one = speaker == "s1"  # unshrunk: each speaker by their own mean and spread, as before
    assert np.allclose(bench.standardise(x, speaker)[one],
                       (x[one] - x[one].mean(0)) / (x[one].std(0) + 1e-8))
    unshrunk = bench.held_out_features("k-speaker-calls-skewed", corpus, lambda v: v, skew=0.1)
    # a pseudo-call's own statistics count for less: its mean moves away from 0
    assert np.abs(shrunk[rows].mean(0)).mean() > np.abs(unshrunk[rows].mean(0)).mean() + 0.05
