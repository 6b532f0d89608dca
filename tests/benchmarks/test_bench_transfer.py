"""benchmarks/bench_transfer.py: which corpora each row trains on, kept cells, the table."""

import argparse
import json
from pathlib import Path

import pytest
from conftest import load_benchmark

from callmood.training.corpora.base import Utterance

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_transfer")


def args(**changes) -> argparse.Namespace:
    values = {"params": str(ROOT / "benchmarks/default_model_params.json"),
              "init": "random:micro", "epochs": 2, "epoch_size": 100, "seed": 0,
              "precision": "fp32", "device": "cpu", "max_per_corpus": 0, "corpora": list(
                  ("ravdess", "emodb", "ased", "nemo", "kored", "emovo", "tess")),
              "candidates": {"a-warp": {"like": "a", "set": {"augment.frequency_warp": 0.1},
                                        "description": "row a, warped"}}}
    return argparse.Namespace(**{**values, **changes})


def test_rows_train_on_the_right_corpora(bench):
    names = args().corpora
    assert bench.training_corpora("a", "kored", names) == ["ravdess", "emodb"]
    assert bench.training_corpora("a", "ravdess", names) == ["emodb"]
    assert bench.training_corpora("b", "tess", names) == names[:-1]
    assert bench.recipe(args(), "b").augment.channel_p == 0.0
    assert bench.recipe(args(), "c").augment.channel_p > 0.0
    assert bench.recipe(args(), "c").balance == "corpus"
    assert bench.recipe(args(), "c").mask_absent_classes


def test_the_committed_cells_are_found_by_todays_settings(bench):
    """Settings added to training since the cells were kept (off in them) do not hide them:
    main()'s defaults find every committed cell of rows a, b, c and si."""
    defaults = args(params=str(bench.harness.RECIPE), init="/any/where/deit-tiny-in1k",
                    epochs=6, epoch_size=1500, precision="bf16", device="auto")
    kept = bench.harness.RESULTS / "transfer_cells"
    for row in "abc":
        for corpus in defaults.corpora:
            name = bench.cell_name(defaults, row, corpus)
            assert (kept / f"{name}.json").is_file(), name
    for fold in range(1, 6):
        name = bench.cell_name(defaults, "si", f"fold{fold}of5")
        assert (kept / f"{name}.json").is_file(), name


def test_a_cell_is_kept_only_for_the_same_settings(bench):
    key = bench.cell_key(args(), "c", "kored")
    assert key == bench.cell_key(args(), "c", "kored")
    assert key != bench.cell_key(args(epochs=3), "c", "kored")
    assert key != bench.cell_key(args(epoch_size=200), "c", "kored")
    assert key != bench.cell_key(args(max_per_corpus=100), "c", "kored")
    assert key != bench.cell_key(args(), "b", "kored")
    # kept cells are committed: a clone elsewhere, with its shared folder elsewhere, reuses them
    here, there = "/work/shared/weights/deit-tiny-in1k", "/tmp/x/shared/weights/deit-tiny-in1k"
    assert bench.cell_key(args(init=here), "c", "kored") == bench.cell_key(args(init=there), "c",
                                                                           "kored")


def test_row_a_trains_once_for_every_corpus_it_does_not_learn_from(bench, tmp_path):
    names = args().corpora
    folder = {(row, held_out): bench.training_folder(
                  args(work=tmp_path), row, bench.training_corpora(row, held_out, names))
              for row in ("a", "c") for held_out in names}
    assert len({folder["a", c] for c in ("ased", "nemo", "kored", "emovo", "tess")}) == 1
    assert folder["a", "ravdess"] != folder["a", "emodb"] != folder["a", "ased"]
    assert len({folder["c", c] for c in names}) == len(names)
    assert folder["a", "ased"] != bench.training_folder(args(work=tmp_path, epochs=3), "a",
                                                        ["ravdess", "emodb"])


def test_subsample_is_stratified_and_repeatable(bench):
    utterances = [Utterance(f"{i}.wav", "neutral" if i < 80 else "angry", f"x:{i % 5}", "x")
                  for i in range(100)]
    kept = bench.subsample(utterances, 20, seed=0)
    assert len(kept) == 20 and sum(u.label == "angry" for u in kept) == 4
    assert kept == bench.subsample(utterances, 20, seed=0)
    assert bench.subsample(utterances, 0, seed=0) is utterances


def test_the_table_marks_cells_not_run(bench):
    cell = {"classes": ["neutral", "angry"], "chance": 0.5, "ua_restricted": 0.6,
            "macro_f1_restricted": 0.55, "ua_open": 0.4, "neutral_recall": 0.7}
    text = bench.markdown({"rows": ["a", "c"], "corpora": ["kored"],
                           "cells": {"c-kored": cell}})
    assert "| kored | not run |  | 60.0 / 55.0 (40.0), 50 | 70.0 |" in text
    assert "Row c" in text and "mean restricted UA 60.0 over 1" in text


def test_the_speaker_independent_row_pools_every_fold_per_corpus(bench):
    labels = ["neutral", "happy", "angry"]
    folds = [{"labels": labels, "per_corpus": {
                  "x": {"targets": [0, 2], "probs": [[0.1, 0.8, 0.15], [0.2, 0.1, 0.7]]}}},
             {"labels": labels, "per_corpus": {
                  "x": {"targets": [0, 2], "probs": [[0.3, 0.6, 0.1], [0.5, 0.1, 0.4]]},
                  "y": {"targets": [1], "probs": [[0.2, 0.7, 0.1]]}}}]
    cells = bench.pool_si_folds(folds, ["x", "y", "z"])
    assert set(cells) == {"si-x", "si-y"} and cells["si-x"]["folds"] == 2
    x = cells["si-x"]
    assert x["n"] == 4 and x["classes"] == ["neutral", "angry"] and x["chance"] == 0.5
    # restricted to neutral/angry: fold 1 says angry, angry; fold 2 neutral, neutral
    assert x["ua_restricted"] == 0.5 and x["neutral_recall"] == 0.5
    assert x["ua_open"] == 0.25  # both neutral utterances are "happy" when all labels count
    assert cells["si-y"]["ua_restricted"] == 1.0
    text = bench.markdown({"rows": ["si"], "corpora": ["x"], "cells": cells,
                           "si_folds_done": "2 of 5"})
    assert "| x |" in text and "pooled over 2 of 5 folds" in text  # a partial row says so


def test_the_channel_table_shows_each_condition_and_means_over_complete_cells(bench):
    def cell(clean, phone=None):
        figures = {"classes": ["neutral", "angry"], "chance": 0.5, "ua_restricted": clean,
                   "macro_f1_restricted": clean, "ua_open": clean, "neutral_recall": 0.5}
        return figures | ({"channels": {"telephone": {"ua_restricted": phone}}} if phone else {})
    results = {"rows": ["a", "c", "si"], "corpora": ["x", "y"], "si_folds_done": "5 of 5",
               "cells": {"a-x": cell(0.6, 0.4), "c-x": cell(0.5, 0.5), "a-y": cell(0.7),
                         "si-x": cell(0.8), "si-y": cell(0.9)}}
    text = bench.markdown(results)
    assert "| held-out corpus | row a | row c |\n" in text  # row si is scored clean only
    assert "clean / telephone" in text
    assert "| x | 60.0 / 40.0 | 50.0 / 50.0 |" in text
    assert "| y | 70.0 / – |  |" in text  # a cell kept from before the channel was added
    assert "| mean over x | 60.0 / 40.0 | 50.0 / 50.0 |" in text  # y: row c never ran


def test_a_candidate_row_is_its_base_row_with_its_settings(bench):
    a, warped = bench.recipe(args(), "a"), bench.recipe(args(), "a-warp")
    assert warped.augment.frequency_warp == 0.1 and a.augment.frequency_warp == 0.0
    assert warped.augment.channel_p == 0.0  # like row a: no channel simulation
    assert warped.to_dict() == a.with_overrides({"augment.frequency_warp": 0.1}).to_dict()
    assert bench.base_row(args(), "a-warp") == "a" and bench.base_row(args(), "c") == "c"
    assert bench.cell_key(args(), "a-warp", "kored") != bench.cell_key(args(), "a", "kored")
    assert bench.row_names(args())["a-warp"] == "row a, warped"
    # the committed candidates: their recipe is their base row's with their settings
    committed = bench.load_candidates(bench.CANDIDATES, required=True)
    bench.check_candidates(args(candidates=committed), bench.CANDIDATES)
    for name, row in committed.items():
        own = args(candidates=committed)
        assert bench.recipe(own, name).to_dict() == bench.recipe(
            own, row["like"]).with_overrides(row["set"]).to_dict()


@pytest.mark.parametrize(("rows", "error"), [
    ([1], "expected an object of rows"),
    ({"c": {"like": "c", "description": "x"}}, "is taken"),
    ({"c-x": "c"}, "needs"),
    ({"c-x": {"like": "si", "description": "x"}}, "needs"),
    ({"c-x": {"like": "c"}}, "needs"),
    ({"c-x": {"like": "c", "description": "x", "sets": {}}}, "unknown keys"),
    ({"c-x": {"like": "c", "description": "x", "set": [1]}}, '"set" must be an object'),
    ({"c-x": {"like": "c", "description": "x", "set": {"epochs": 3}}}, "every row shares"),
    ({"c-x": {"like": "c", "description": "x", "set": {"augment.warp": 0.1}}},
     "unknown training settings"),
    ({"c-x": {"like": "c", "description": "x", "set": {"augment.frequency_warp": "big"}}},
     "must be a number in"),
    ({"c-x": {"like": "c", "description": "x", "set": {"augment.frequency_warp": 0.7}}},
     "frequency_warp must be a number in"),
])
def test_a_wrong_candidate_row_is_refused_with_its_file_and_name(bench, tmp_path, rows,
                                                                 error):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=error) as raised:
        bench.check_candidates(args(candidates=bench.load_candidates(path)), path)
    assert str(raised.value).startswith(f"{path}: ")
    if isinstance(rows, dict):  # and the row
        assert f"row {next(iter(rows))!r}: " in str(raised.value)


def test_a_candidates_file_is_read_only_where_it_is(bench, tmp_path):
    missing = tmp_path / "none.json"
    assert bench.load_candidates(missing) == {}  # the default file need not exist
    with pytest.raises(ValueError, match="no such file"):
        bench.load_candidates(missing, required=True)  # one named on the command line must
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        bench.load_candidates(broken)


def test_a_candidate_row_takes_its_own_place_in_both_tables(bench):
    def cell(clean, phone=None):
        figures = {"classes": ["neutral", "angry"], "chance": 0.5, "ua_restricted": clean,
                   "macro_f1_restricted": clean, "ua_open": clean, "neutral_recall": 0.5}
        return figures | ({"channels": {"telephone": {"ua_restricted": phone}}} if phone else {})
    results = {"rows": ["c", "c-warp"], "corpora": ["x"],
               "row_names": {"c-warp": "row c, warped"},
               "cells": {"c-x": cell(0.5), "c-warp-x": cell(0.6, 0.55)}}
    text = bench.markdown(results)
    assert "Row c-warp (row c, warped): mean restricted UA 60.0 over 1" in text
    assert "Row c (all other corpora + channel augmentation): mean restricted UA 50.0" in text
    # only the candidate heard the line: row c has no column of its own there
    assert "| held-out corpus | row c-warp |\n" in text and "| x | 60.0 / 55.0 |" in text


def test_a_table_without_a_finished_cell_says_so(bench):
    text = bench.markdown({"rows": [], "corpora": ["kored", "tess"], "cells": {}})
    assert text == "No cell is finished with these settings yet.\n"
