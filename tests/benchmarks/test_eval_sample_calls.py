"""benchmarks/eval_sample_calls.py: telling the model's errors from the signal path's, with a
real (tiny) model scoring the real RAVDESS recordings the sample calls were cut from."""

import numpy as np
import pandas as pd
import pytest
from batch_fixtures import SAMPLE_CALLS
from conftest import TINY_LABELS, load_benchmark

from callmood.model.folder import load_model_folder


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("eval_sample_calls")


def perfect_segments(truth: pd.DataFrame, labels: list[str], stereo_only: bool) -> pd.DataFrame:
    """One segment per ground-truth utterance, scored as its true emotion with certainty."""
    rows = truth[truth.emotion.isin(labels)]
    if stereo_only:  # what the nightly job can say about a mono call is not the customer's
        mono = rows.call_id == "call-0009"
        rows = rows.assign(role=np.where(mono, "mixed", rows.role))
    segments = rows[["call_id", "channel", "role", "start_s", "end_s"]].assign(
        emotion=rows.emotion)
    for label in labels:
        segments[f"p_{label}"] = (rows.emotion == label).astype(float)
    return segments.reset_index(drop=True)


def test_studio_attribution_counts_only_the_models_errors_when_the_calls_are_heard_right(
        bench, shared_dir, tiny_model_dir):
    model = load_model_folder(tiny_model_dir)
    negative = {label for label, v in model.card.valence.items() if v < 0}
    truth = pd.read_csv(SAMPLE_CALLS / "ground_truth.csv")
    segments = perfect_segments(truth, TINY_LABELS, stereo_only=True)
    out = bench.studio_attribution(model, truth, bench.match_segments(segments, truth),
                                   shared_dir / "data")

    known = truth[truth.emotion.isin(TINY_LABELS)]
    assert out["utterances"] == len(known)
    assert out["in_call"]["ua"] == 1.0 and out["wrong_in_call"] == 0
    # every studio error is then an utterance the calls got right and the studio did not
    studio_errors = round((1 - out["studio"]["wa"]) * len(known))
    assert out["right_in_call_only"] == studio_errors
    assert out["same_prediction"] == pytest.approx(out["studio"]["wa"])
    # the mono call has no customer channel, so no customer share to compare
    shares = out["customer_negative_share_studio"]
    assert "call-0009" not in shares and "call-0004" in shares
    assert all(0.0 <= v["studio"] <= 1.0 for v in shares.values())
    assert shares["call-0004"]["true"] == pytest.approx(
        float(bench.role_negative_share(truth, truth.emotion.isin(negative), "customer")[
            "call-0004"]), abs=1e-3)


def test_a_call_without_a_customer_share_is_null_not_nan(bench):
    per_call = {"a": {"true": 0.5, "shown": bench.none_if_nan(float("nan"))},
                "b": {"true": 0.5, "shown": bench.none_if_nan(0.25)}}
    assert per_call["a"]["shown"] is None
    assert bench.mean_abs_error(per_call, "shown") == pytest.approx(0.25)
