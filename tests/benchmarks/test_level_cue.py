"""benchmarks/level_cue.py: which model input hears a clip's level, on real RAVDESS takes."""

import numpy as np
import pytest
from conftest import load_benchmark

from callmood.training.corpora.base import Utterance
from callmood.training.corpora.registry import load_corpus


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("level_cue")


def test_only_the_committed_row_1_input_moves_with_gain(bench, shared_dir):
    takes = load_corpus("ravdess", shared_dir / "data" / "ravdess")[::500][:2]
    change = {name.split(":")[0]: figures["max_abs_change_over_std"]
              for name, figures in bench.gain_sensitivity(takes, 2).items()
              if isinstance(figures, dict)}
    assert change["row 1 today"] < 1e-4  # level-relative: a gain cancels
    # both earlier inputs have an absolute floor somewhere, so they hear the level: row 1's
    # committed log(mel + 1e-6) everywhere, row 2's picture where librosa's 1e-10 binds
    assert change["row 1 as committed"] > 0.1 and change["row 2"] > 0.1


def test_levels_are_compared_within_each_actor(bench):
    utterances = [Utterance(f"{i}.wav", label, actor, "ravdess")
                  for i, (label, actor) in enumerate(
                      [("neutral", "a"), ("angry", "a"), ("neutral", "b"), ("angry", "b")])]
    levels = np.array([-40.0, -25.0, -10.0, 0.0])  # actor b records 30 dB hotter
    relative = bench.level_features(utterances, levels)["level relative to the actor's mean"]
    assert relative.ravel().tolist() == [-7.5, 7.5, -5.0, 5.0]
    # angry is 15 dB above neutral for a, 10 dB for b: the median is 12.5
    assert bench.level_by_emotion(utterances, levels, ["neutral", "angry"]) == {
        "neutral": 0.0, "angry": 12.5}
