"""Probability calibration: temperature scaling, reliability diagrams and prior adaptation.

Why: the classifier is trained on acted corpora whose classes are balanced, and its softmax is
overconfident (a ViT fine-tuned with cross-entropy typically is). The `confidence` column of the
scored tables and the dashboard's minimum-confidence filter must mean what they say: of the
segments shown with confidence 0.8, about 80 % should be right. Two separate corrections:

* temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") fixes
  the over- or underconfidence, one scalar fitted on validation logits;
* the EM prior adjustment of Saerens, Latinne & Decaestecker (2002, Neural Computation 14(1))
  re-estimates the class priors of unlabelled call audio (mostly neutral, unlike the balanced
  corpora) and corrects the calibrated posteriors for them.

Expected calibration error (ECE) is the top-label ECE with equal-width confidence bins
(Naeini et al., 2015; Guo et al., 2017), reported as a fraction.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) over the last axis, stable for large logits.

    Returns float64 of the same shape (float64 in, float64 out; other dtypes are promoted).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if scaled.size == 0:
        return scaled.copy()
    shifted = scaled - scaled.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the targets under softmax(logits / temperature)."""
    scaled = logits / temperature
    log_norm = logsumexp(scaled, axis=1)
    return float(np.mean(log_norm - scaled[np.arange(len(targets)), targets]))


def _check_labelled(values: np.ndarray, targets: np.ndarray, what: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    targets = np.asarray(targets).astype(np.int64, copy=False).reshape(-1)
    if values.ndim != 2:
        raise ValueError(f"{what} must be 2-D (samples, classes), got shape {values.shape}")
    if len(values) != len(targets):
        raise ValueError(f"{len(values)} rows of {what} but {len(targets)} targets")
    if len(targets) and (targets.min() < 0 or targets.max() >= values.shape[1]):
        raise ValueError(f"targets must lie in [0, {values.shape[1]})")
    return values, targets


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 minimising the NLL of softmax(logits / T).

    Fit on held-out (validation) logits, never on the training set. The search runs over
    log T, bounded to [log 0.05, log 20]; T > 1 softens an overconfident model, T < 1 sharpens
    an underconfident one. Argmax predictions are unchanged. Returns 1.0 for empty input.
    """
    logits, targets = _check_labelled(logits, targets, "logits")
    if len(targets) == 0:
        return 1.0
    result = minimize_scalar(lambda log_t: _nll(logits, targets, float(np.exp(log_t))),
                             bounds=LOG_T_BOUNDS, method="bounded",
                             options={"xatol": 1e-6})
    temperature = float(np.exp(result.x))
    # The bounded search cannot do worse than leaving the logits alone.
    if _nll(logits, targets, temperature) > _nll(logits, targets, 1.0):
        return 1.0
    return temperature


def reliability_bins(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> list[dict]:
    """Top-label statistics in `bins` equal-width confidence bins over [0, 1].

    Bin i covers (i / bins, (i + 1) / bins]; the first also holds confidence 0. Each entry has
    lower, upper, count, confidence (mean top probability) and accuracy (share of argmax
    predictions that are right); confidence and accuracy are None for an empty bin.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    probs, targets = _check_labelled(probs, targets, "probs")
    edges = np.arange(bins + 1) / bins  # i / bins is exact where the decimal is (0.2, 0.6 ...)
    if len(targets):
        confidence = probs.max(axis=1)
        correct = probs.argmax(axis=1) == targets
        index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    else:
        confidence = correct = index = np.zeros(0)
    out = []
    for i in range(bins):
        member = index == i
        count = int(member.sum())
        out.append({
            "lower": float(edges[i]),
            "upper": float(edges[i + 1]),
            "count": count,
            "confidence": float(confidence[member].mean()) if count else None,
            "accuracy": float(correct[member].mean()) if count else None,
        })
    return out


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (Naeini et al. 2015 / Guo et al. 2017).

    sum over bins of (count / n) * |accuracy - mean confidence|, as a fraction in [0, 1];
    0.0 for empty input.
    """
    table = reliability_bins(probs, targets, bins)
    total = sum(b["count"] for b in table)
    if total == 0:
        return 0.0
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in table if b["count"]))


def adapt_priors(probs: np.ndarray, train_priors: np.ndarray, max_iter: int = 100,
                 tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """EM re-estimation of class priors on unlabelled data (Saerens, Latinne & Decaestecker,
    2002, Neural Computation 14(1)).

    `probs` are calibrated posteriors under the training priors (rows sum to 1). Each step
    reweights every row by new prior / training prior, renormalises it, and takes the mean
    adjusted posterior as the new prior; it stops when no prior moves by more than `tol`, or
    after `max_iter` steps. Returns (adjusted posteriors, estimated priors).

    Guards: classes with a training prior of 0 keep probability 0; a row with no mass on any
    class of non-zero prior is left as it was; empty input comes back as is, with the
    training priors as the estimate.
    """
    probs = np.asarray(probs, dtype=np.float64)
    train = np.asarray(train_priors, dtype=np.float64).reshape(-1)
    if probs.ndim != 2 or probs.shape[1] != len(train):
        raise ValueError(f"probs of shape {probs.shape} do not match {len(train)} priors")
    if np.any(train < 0) or train.sum() <= 0:
        raise ValueError("training priors must be non-negative and not all zero")
    train = train / train.sum()
    if len(probs) == 0:
        return probs.copy(), train.copy()
    rows = probs.sum(axis=1, keepdims=True)
    probs = np.divide(probs, rows, out=np.zeros_like(probs), where=rows > 0)
    known = train > 0

    def adjust(priors: np.ndarray) -> np.ndarray:
        ratio = np.divide(priors, train, out=np.zeros_like(priors), where=known)
        weighted = probs * ratio
        total = weighted.sum(axis=1, keepdims=True)
        return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), probs)

    priors = train.copy()
    for _ in range(max_iter):
        updated = adjust(priors).mean(axis=0)
        change = float(np.max(np.abs(updated - priors)))
        priors = updated
        if change < tol:
            break
    return adjust(priors), priors
