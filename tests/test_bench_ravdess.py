"""benchmarks/bench_ravdess.py keeps each finished (fold, row) so a stopped run resumes."""

import argparse
from pathlib import Path

import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_ravdess")


def bench_args(tmp_path: Path, **changes) -> argparse.Namespace:
    values = {"epochs": 6, "patience": 3, "trials": 3, "trial_epochs": 2, "seed": 0,
              "precision": "bf16", "limit": 0, "work": tmp_path}
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
