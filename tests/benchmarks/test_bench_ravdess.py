"""benchmarks/bench_ravdess.py keeps each finished (fold, row) so a stopped run resumes."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

from callmood.training.evaluate import classification_metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_ravdess")


def bench_args(tmp_path: Path, **changes) -> argparse.Namespace:
    values = {"epochs": 6, "patience": 3, "trials": 3, "trial_epochs": 2, "seed": 0,
              "precision": "bf16", "limit": 0, "work": tmp_path, "cells": tmp_path / "cells",
              "recipe": str(ROOT / "benchmarks/default_model_params.json"),
              "shared": ROOT.parent / "shared"}
    return argparse.Namespace(**{**values, **changes})


def test_a_kept_result_is_reused_only_with_the_same_settings(bench, tmp_path):
    result = {"metrics": {"ua": 0.5}, "tuned_params": {"lr": 1e-4}, "train_wall_s": 12.0}
    bench.save_cell(bench_args(tmp_path), 2, 1, result)
    assert bench.load_cell(bench_args(tmp_path), 2, 1) == result  # e.g. after a JSON round trip
    assert bench.load_cell(bench_args(tmp_path), 2, 3) is None  # another row
    assert bench.load_cell(bench_args(tmp_path, epochs=8), 2, 1) is None  # other settings
    # the classical baseline does not depend on the ViT's epochs, so it is kept
    bench.save_cell(bench_args(tmp_path), 2, 4, {"metrics": {"ua": 0.4}})
    assert bench.load_cell(bench_args(tmp_path, epochs=8), 2, 4) == {"metrics": {"ua": 0.4}}
    assert bench.load_cell(bench_args(tmp_path, seed=1), 2, 4) is None


def test_settings_digest_names_the_studies(bench, tmp_path):
    assert bench.settings_digest(bench_args(tmp_path)) == bench.settings_digest(
        bench_args(tmp_path / "elsewhere"))
    assert bench.settings_digest(bench_args(tmp_path)) != bench.settings_digest(
        bench_args(tmp_path, trials=4))


def test_rows_1_5_and_6_follow_the_recipe_file(bench, tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"lr": 0.0003, "epoch_size": 3000, "augment": {"channel_p": 0.5}}')
    args = bench_args(tmp_path, recipe=str(recipe))
    alone, extra, raw = (bench.recipe_config(args, row) for row in (1, 5, 6))
    assert alone.lr == extra.lr == raw.lr == 0.0003 and alone.augment.channel_p == 0.5
    assert (alone.backbone, raw.backbone, raw.init) == ("vit", "wav2vec2", "random:tiny")
    assert raw.mel.frontend == "waveform" and raw.epoch_size == 0
    assert alone.epochs == 6 and alone.patience == 3  # the benchmark's budget
    # on RAVDESS alone an epoch is one pass; with the other corpora, the recipe's draw
    assert alone.epoch_size == 0 and extra.epoch_size == 3000
    assert bench.first_trial(alone)["lr"] == 0.0003
    # a kept row 1 or 5 is not reused once the recipe changes; row 2 does not depend on it
    for row in (1, 2, 3, 5):
        bench.save_cell(args, 1, row, {"metrics": {"ua": 0.5}})
    assert bench.load_cell(args, 1, 6) is None  # wav2vec2 is not row 3's ViT
    bench.save_cell(args, 1, 6, {"metrics": {"ua": 0.3}})
    assert bench.load_cell(args, 1, 3) == {"metrics": {"ua": 0.5}}
    recipe.write_text('{"lr": 0.0001}')
    assert bench.load_cell(args, 1, 1) is None and bench.load_cell(args, 1, 5) is None
    assert bench.load_cell(args, 1, 2) == {"metrics": {"ua": 0.5}}


def test_the_committed_cells_count_as_made_with_settings_added_since(bench):
    """Settings added to training after the committed cells were made (the corpus
    adversary, speaker normalisation, the backbone...) are off in them: rerunning the
    benchmark with its committed settings reuses them instead of training again."""
    args = bench_args(Path("unused"), epochs=16, patience=6, trials=0, trial_epochs=0,
                      cells=ROOT / "benchmarks/results/ravdess_cells")
    for row in (1, 5):
        assert bench.load_cell(args, 1, row) is not None, row


def test_rows_not_run_keep_their_committed_figures(bench, tmp_path):
    labels = ["neutral", "angry"]
    metrics = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), labels)
    protocol = {"protocol": "p", "source": "s", "published_results_same_protocol": {}}
    fold = {"metrics": metrics, "train_wall_s": 1.0}
    first = bench_args(tmp_path, out=tmp_path, folds=[1], epochs=6)
    bench.write_results({1: {"name": "row 1 then", "folds": {1: fold}},
                         2: {"name": "row 2", "folds": {1: fold}}}, protocol, first, 1.0)
    again = bench_args(tmp_path, out=tmp_path, folds=[1], epochs=16)
    perfect = {**fold, "metrics": classification_metrics(np.array([0, 1]), np.array([0, 1]),
                                                         labels)}
    bench.write_results({1: {"name": "row 1 now", "folds": {1: perfect}}}, protocol, again,
                        1.0)
    rows = json.loads((tmp_path / "ravdess_si.json").read_text())["rows"]
    assert rows["2"]["name"] == "row 2" and rows["2"]["settings"]["epochs"] == 6
    assert rows["1"]["name"] == "row 1 now" and rows["1"]["ua"] == 100.0
    assert rows["1"]["settings"]["epochs"] == 16
    assert "| row 2 | 1 | 75.0" in (tmp_path / "ravdess_si.md").read_text()
