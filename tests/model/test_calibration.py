"""callmood/model/calibration.py: temperature scaling, ECE, reliability plot and EM prior
adaptation, all checked on synthetic data whose true probabilities are known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from callmood.model.calibration import (
    adapt_priors,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    softmax,
)
from callmood.training.evaluate import plot_reliability


def sample_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One label per row, drawn from that row's distribution."""
    return (rng.random(len(probs))[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)


def true_logits(rng: np.random.Generator, n: int, classes: int = 5
                ) -> tuple[np.ndarray, np.ndarray]:
    """Logits z and labels drawn from softmax(z): softmax(z) is perfectly calibrated."""
    z = rng.normal(scale=1.5, size=(n, classes))
    return z, sample_labels(rng, softmax(z))


def nll(probs: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.mean(np.log(probs[np.arange(len(targets)), targets])))


@pytest.mark.parametrize("factor, expected_t", [(3.0, 3.0), (0.5, 0.5)],
                         ids=["overconfident", "underconfident"])
def test_temperature_recovers_the_distortion(factor, expected_t):
    rng = np.random.default_rng(7)
    z_val, y_val = true_logits(rng, 4000)
    # A large test set keeps the sampling noise of ECE (about 0.02 at 4000) well below 0.02.
    z_test, y_test = true_logits(rng, 20000)
    model_val, model_test = factor * z_val, factor * z_test

    temperature = fit_temperature(model_val, y_val)
    assert temperature == pytest.approx(expected_t, rel=0.10)

    before = expected_calibration_error(softmax(model_test), y_test)
    after = expected_calibration_error(softmax(model_test, temperature), y_test)
    assert before > 0.05
    assert after < 0.02
    # NLL never increases, on the fitting data or on fresh data.
    for logits, targets in ((model_val, y_val), (model_test, y_test)):
        assert nll(softmax(logits, temperature), targets) <= nll(softmax(logits), targets) + 1e-12
    # Scaling never changes the predicted class.
    assert np.array_equal(softmax(model_test, temperature).argmax(1), model_test.argmax(1))


def test_temperature_of_a_calibrated_model_stays_near_one_and_empty_is_one():
    rng = np.random.default_rng(3)
    z, y = true_logits(rng, 4000)
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.10)
    assert fit_temperature(np.zeros((0, 5)), np.zeros(0, dtype=int)) == 1.0


def test_softmax_is_stable_and_keeps_shape():
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), -np.inf]])
    probs = softmax(logits)
    assert probs.dtype == np.float64 and probs.shape == logits.shape
    np.testing.assert_allclose(probs, [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]], atol=1e-12)
    np.testing.assert_allclose(softmax(np.array([2.0, 0.0]), temperature=2.0),
                               [np.e / (np.e + 1), 1 / (np.e + 1)])
    with pytest.raises(ValueError):
        softmax(logits, temperature=0.0)


def test_ece_of_a_perfectly_calibrated_set_is_small():
    rng = np.random.default_rng(11)
    probs = rng.dirichlet(np.full(4, 0.7), size=20000)
    targets = sample_labels(rng, probs)
    assert expected_calibration_error(probs, targets) < 0.02


def test_ece_matches_a_hand_computed_example():
    # Five bins of width 0.2, each covering (lower, upper].
    probs = np.array([
        [0.90, 0.10],  # conf 0.90, right  -> bin (0.8, 1.0]
        [0.85, 0.15],  # conf 0.85, wrong  -> bin (0.8, 1.0]
        [0.30, 0.70],  # conf 0.70, right  -> bin (0.6, 0.8]
        [0.40, 0.60],  # conf 0.60, wrong  -> bin (0.4, 0.6], on its upper edge
        [0.55, 0.45],  # conf 0.55, right  -> bin (0.4, 0.6]
    ])
    targets = np.array([0, 1, 1, 0, 0])
    # (0.8, 1.0]: 2/5 * |0.5 - 0.875|  = 0.15
    # (0.6, 0.8]: 1/5 * |1.0 - 0.70|   = 0.06
    # (0.4, 0.6]: 2/5 * |0.5 - 0.575|  = 0.03
    assert expected_calibration_error(probs, targets, bins=5) == pytest.approx(0.24, abs=1e-12)

    table = reliability_bins(probs, targets, bins=5)
    assert [b["count"] for b in table] == [0, 0, 2, 1, 2]
    assert table[2]["lower"] == pytest.approx(0.4) and table[2]["upper"] == pytest.approx(0.6)
    assert table[2]["confidence"] == pytest.approx(0.575)
    assert table[4]["accuracy"] == pytest.approx(0.5)
    assert table[0]["confidence"] is None and table[0]["accuracy"] is None
    assert expected_calibration_error(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 0.0


def test_reliability_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(5)
    z, y = true_logits(rng, 2000)
    path = tmp_path / "plots" / "reliability.png"
    plot_reliability(softmax(z), y, path, "validation, T = 3.00", before=softmax(3 * z))
    assert path.stat().st_size > 5000
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 400 <= width <= 2000 and 400 <= height <= 2000
    plain = tmp_path / "plain.png"
    plot_reliability(softmax(z), y, plain, "no before")
    with Image.open(plain) as image:
        assert image.size == (width, height)


MEANS = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
UNIFORM = np.full(4, 0.25)


def gaussian_sample(rng: np.random.Generator, priors: np.ndarray, n: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels from `priors`, points from unit Gaussians; returns (log-likelihoods, labels,
    exact Bayes posteriors under uniform training priors)."""
    labels = rng.choice(len(priors), size=n, p=priors)
    points = MEANS[labels] + rng.normal(size=(n, 2))
    log_lik = -0.5 * ((points[:, None, :] - MEANS[None]) ** 2).sum(axis=-1)
    return log_lik, labels, softmax(log_lik)


def test_adapt_priors_recovers_shifted_priors_and_improves_accuracy():
    rng = np.random.default_rng(2002)
    test_priors = np.array([0.7, 0.1, 0.1, 0.1])
    log_lik, labels, posteriors = gaussian_sample(rng, test_priors, 8000)

    adjusted, estimated = adapt_priors(posteriors, UNIFORM)
    np.testing.assert_allclose(estimated, test_priors, atol=0.03)
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0, atol=1e-12)
    before = np.mean(posteriors.argmax(axis=1) == labels)
    after = np.mean(adjusted.argmax(axis=1) == labels)
    assert after > before + 0.05
    # The adjusted posteriors approach the Bayes posteriors under the true test priors.
    oracle = softmax(log_lik + np.log(test_priors))
    assert np.mean(np.abs(adjusted - oracle)) < 0.02


def test_adapt_priors_leaves_matching_priors_alone():
    rng = np.random.default_rng(17)
    _, _, posteriors = gaussian_sample(rng, UNIFORM, 8000)
    adjusted, estimated = adapt_priors(posteriors, UNIFORM)
    np.testing.assert_allclose(estimated, UNIFORM, atol=0.03)
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0, atol=1e-12)
    assert np.mean(np.abs(adjusted - posteriors)) < 0.03


def test_adapt_priors_guards():
    empty, priors = adapt_priors(np.zeros((0, 4)), UNIFORM)
    assert empty.shape == (0, 4)
    np.testing.assert_allclose(priors, UNIFORM)

    # A class the training data never had keeps probability 0, and nothing turns NaN.
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=500)
    probs = np.column_stack([probs, np.zeros(500)])
    adjusted, estimated = adapt_priors(probs, np.array([0.5, 0.25, 0.25, 0.0]))
    assert np.isfinite(adjusted).all() and np.isfinite(estimated).all()
    assert estimated[3] == 0.0 and np.all(adjusted[:, 3] == 0.0)
    np.testing.assert_allclose(adjusted.sum(axis=1), 1.0, atol=1e-12)
    assert estimated.sum() == pytest.approx(1.0)

    with pytest.raises(ValueError):
        adapt_priors(np.full((3, 4), 0.25), np.full(3, 1 / 3))
