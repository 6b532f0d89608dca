"""training/splits.py: speaker-independent splits never leak a speaker."""

import json

import pytest

from callmood.training.corpora import emodb, ravdess
from callmood.training.splits import (
    Split,
    SplitError,
    hold_out_validation,
    make_split,
    ravdess_fold_speakers,
    speaker_folds,
)


@pytest.fixture(scope="module")
def rav(shared_dir):
    return ravdess.scan(shared_dir / "data/ravdess")[0]


@pytest.fixture(scope="module")
def emo(shared_dir):
    return emodb.scan(shared_dir / "data/emodb")[0]


@pytest.fixture(scope="module")
def protocol(shared_dir):
    return json.loads((shared_dir / "protocols/ravdess_speaker_folds.json").read_text())


def speakers(part):
    return {u.speaker for u in part}


def assert_no_leak(split: Split, everything):
    train, val, test = speakers(split.train), speakers(split.val), speakers(split.test)
    assert train and val and test
    assert not train & val and not train & test and not val & test
    assert len(split.train) + len(split.val) + len(split.test) == len(everything)
    assert {u.path for u in split.train + split.val + split.test} == {u.path for u in everything}
    assert split.speaker_independent


@pytest.mark.parametrize("fold", range(1, 7))
def test_ravdess_protocol_fold(rav, protocol, shared_dir, fold):
    split = make_split(rav, fold=fold, shared=shared_dir)
    assert_no_leak(split, rav)
    actors = protocol["test_actors_by_fold"][str(fold)]
    assert speakers(split.test) == {f"ravdess:{a}" for a in actors}
    assert len(split.test) == 60 * len(actors)
    assert f"protocol fold {fold}" in split.description
    # 10% of the 20 training actors validate: 2 actors
    assert len(speakers(split.val)) == 2


def test_protocol_folds_cover_every_actor_once(shared_dir):
    tested = [s for k in range(1, 7) for s in ravdess_fold_speakers(k, shared_dir)]
    assert sorted(tested) == [f"ravdess:{a:02d}" for a in range(1, 25)]


def test_protocol_fold_with_a_second_corpus_trains_on_it(rav, emo, shared_dir):
    split = make_split(rav + emo, fold=2, shared=shared_dir)
    assert_no_leak(split, rav + emo)
    assert {u.corpus for u in split.test} == {"ravdess"}
    # validation speakers are drawn per corpus, so EmoDB gets one too
    assert {s.split(":")[0] for s in speakers(split.val)} == {"ravdess", "emodb"}


def test_protocol_errors(rav, emo, shared_dir, tmp_path):
    with pytest.raises(SplitError, match="--fold must be one of"):
        make_split(rav, fold=7, shared=shared_dir)
    with pytest.raises(SplitError, match="give a ravdess corpus"):
        make_split(emo, fold=1, shared=shared_dir)
    with pytest.raises(SplitError, match="fold protocol not found"):
        make_split(rav, fold=1, shared=tmp_path)


@pytest.mark.parametrize("n_folds", [3, 5])
def test_speaker_folds_over_two_corpora(rav, emo, shared_dir, n_folds):
    everything = rav + emo
    tests = []
    for fold in range(1, n_folds + 1):
        split = make_split(everything, fold=fold, n_folds=n_folds, seed=4, shared=shared_dir)
        assert_no_leak(split, everything)
        assert f"{n_folds}-fold" in split.description
        tests.append(speakers(split.test))
    # the folds partition the 34 speakers
    assert sum(len(t) for t in tests) == 34
    assert set().union(*tests) == speakers(everything)
    assert sorted(len(t) for t in tests)[-1] - sorted(len(t) for t in tests)[0] <= 1


def test_speaker_folds_depend_on_seed_only(rav):
    assert speaker_folds(rav, 4, seed=1) == speaker_folds(list(reversed(rav)), 4, seed=1)
    assert speaker_folds(rav, 4, seed=1) != speaker_folds(rav, 4, seed=2)
    with pytest.raises(SplitError, match="cannot make 25 speaker folds"):
        speaker_folds(rav, 25)
    with pytest.raises(SplitError, match="in 1..4"):
        make_split(rav, fold=5, n_folds=4)


def test_explicit_test_speakers(rav, emo):
    everything = rav + emo
    split = make_split(everything, test_speakers=["01", "emodb:03", "ravdess:24"])
    assert_no_leak(split, everything)
    assert speakers(split.test) == {"ravdess:01", "ravdess:24", "emodb:03"}
    assert split.summary()["test_speakers"] == ["emodb:03", "ravdess:01", "ravdess:24"]


def test_explicit_speaker_errors(rav, emo):
    with pytest.raises(SplitError, match="ambiguous"):
        make_split(rav + emo, test_speakers=["03"])  # RAVDESS actor 03 and EmoDB speaker 03
    with pytest.raises(SplitError, match="not in the corpora"):
        make_split(rav, test_speakers=["99"])
    with pytest.raises(SplitError, match="exactly one"):
        make_split(rav, fold=1, test_speakers=["01"])
    with pytest.raises(SplitError, match="exactly one"):
        make_split(rav)


def test_random_split_says_it_is_not_speaker_independent(rav):
    split = make_split(rav, random_test=0.2, seed=3)
    assert not split.speaker_independent
    assert "not speaker-independent" in split.description
    assert split.summary()["speaker_independent"] is False
    assert len(split.test) == 288 and len(split.val) == 144
    assert len(split.train) + len(split.val) + len(split.test) == len(rav)
    assert speakers(split.train) & speakers(split.test)  # the overlap the report warns about
    assert make_split(rav, random_test=0.2, seed=3).test == split.test
    with pytest.raises(SplitError, match="fraction"):
        make_split(rav, random_test=1.5)


def test_hold_out_validation_per_corpus(rav, emo):
    train, val = hold_out_validation(rav + emo, fraction=0.25, seed=1)
    assert not speakers(train) & speakers(val)
    val_speakers = speakers(val)
    assert len([s for s in val_speakers if s.startswith("ravdess:")]) == 6
    assert len([s for s in val_speakers if s.startswith("emodb:")]) == 3
    # a corpus with a single speaker keeps it for training
    one = [u for u in emo if u.speaker == "emodb:03"]
    assert hold_out_validation(one) == (one, [])
