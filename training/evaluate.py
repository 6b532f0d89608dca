"""Scoring utterances and reporting: WA, UA, macro/weighted F1, per-class figures, confusion.

An utterance is scored as `callmood predict` and training's validation score it
(callmood.model.predict.Inference): on the clips that cover all of it, probabilities
averaged.
"""

from __future__ import annotations

import json
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from callmood.model.calibration import (  # noqa: E402
    expected_calibration_error,
    reliability_bins,
)
from callmood.model.predict import Inference  # noqa: E402


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                           labels: list[str]) -> dict:
    """Figures as fractions in [0, 1]; the confusion matrix has true labels as rows."""
    index = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=index, zero_division=0)
    present = np.unique(y_true)
    with warnings.catch_warnings():  # a prediction of a class the test set lacks is expected
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        ua = float(balanced_accuracy_score(y_true, y_pred)) if len(present) else 0.0
    return {
        "wa": float(accuracy_score(y_true, y_pred)),
        "ua": ua,
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro",
                                   zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=index, average="weighted",
                                      zero_division=0)),
        "n": int(len(y_true)),
        "labels": labels,
        "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]),
                              "f1": float(f1[i]), "support": int(support[i])}
                      for i, label in enumerate(labels)},
        "confusion": confusion_matrix(y_true, y_pred, labels=index).tolist(),
    }


def _draw_confusion(ax, confusion: np.ndarray, labels: list[str], title: str, width: int = 60):
    """Row-normalised shares with the counts (or mean counts) in each cell, onto `ax`."""
    confusion = np.asarray(confusion, dtype=float)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted emotion")
    ax.set_ylabel("true emotion")
    ax.set_title(textwrap.fill(title, width), fontsize=9)
    integral = np.allclose(confusion, confusion.round())
    for i in range(len(labels)):
        for j in range(len(labels)):
            text = f"{confusion[i, j]:.0f}" if integral else f"{confusion[i, j]:.1f}"
            ax.text(j, i, f"{share[i, j]:.0%}\n{text}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    return image


def plot_confusion(confusion: np.ndarray, labels: list[str], path: str | Path,
                   title: str) -> None:
    """Row-normalised confusion matrix with counts (or mean counts) in each cell."""
    size = 1.2 + 0.65 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = _draw_confusion(ax, confusion, labels, title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion_grid(panels: list[tuple[np.ndarray, list[str], str]], path: str | Path,
                        title: str, columns: int = 4) -> None:
    """Several confusion matrices (matrix, labels, panel title) side by side in one picture."""
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.6 * rows), squeeze=False)
    for ax, (confusion, labels, panel_title) in zip(axes.flat, panels, strict=False):
        _draw_confusion(ax, confusion, labels, panel_title, width=40)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    fig.suptitle(textwrap.fill(title, 120), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(probs: np.ndarray, targets: np.ndarray, path: str | Path, title: str,
                     before: np.ndarray | None = None, bins: int = 15) -> None:
    """Reliability diagram PNG: accuracy per confidence bin as bars against the diagonal.

    A small histogram of bin counts sits below. `before` (the uncalibrated probabilities of
    the same samples) is drawn as a second, outlined series; each series' ECE is in the legend.
    """
    series = [("calibrated" if before is not None else "model", probs, "tab:blue")]
    if before is not None:
        series.insert(0, ("uncalibrated", before, "tab:orange"))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / bins
    offsets = [0.0] if len(series) == 1 else [-width / 4, width / 4]
    bar_width = width if len(series) == 1 else width / 2
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for (name, values, colour), shift in zip(series, offsets, strict=True):
        table = reliability_bins(values, targets, bins)
        ece = expected_calibration_error(values, targets, bins)
        centres = np.array([(b["lower"] + b["upper"]) / 2 for b in table]) + shift
        accuracy = np.array([b["accuracy"] if b["count"] else 0.0 for b in table])
        counts = np.array([b["count"] for b in table])
        outlined = name == "uncalibrated"
        style = dict(facecolor="none", edgecolor=colour, hatch="//") if outlined \
            else dict(color=colour, alpha=0.8, edgecolor="black")
        top.bar(centres, accuracy, width=bar_width, linewidth=0.8,
                label=f"{name} (ECE {ece:.1%})", **style)
        bottom.bar(centres, counts, width=bar_width, linewidth=0.8, **style)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(textwrap.fill(title, 60), fontsize=9)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("count")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_report(metrics: dict, title: str, context: dict) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    lines += ["", "| metric | value |", "| --- | --- |"]
    for key in ("ua", "wa", "macro_f1", "weighted_f1"):
        std = metrics.get(f"{key}_std")
        value = f"{100 * metrics[key]:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")
        lines.append(f"| {key.upper() if len(key) == 2 else key} (%) | {value} |")
    lines += ["", "| emotion | precision | recall | F1 | support |",
              "| --- | --- | --- | --- | --- |"]
    for label, row in metrics["per_class"].items():
        lines.append(f"| {label} | {100 * row['precision']:.1f} | {100 * row['recall']:.1f} | "
                     f"{100 * row['f1']:.1f} | {row['support']} |")
    if "ece" in metrics:
        lines += ["", f"Expected calibration error: {100 * metrics['ece']:.1f} %"
                  + (f" (uncalibrated {100 * metrics['ece_uncalibrated']:.1f} %)"
                     if "ece_uncalibrated" in metrics else "")
                  + " — ![reliability diagram](reliability.png)"]
    lines += ["", "![confusion matrix](confusion.png)", ""]
    return "\n".join(lines)


def write_report(report_dir: str | Path, metrics: dict, title: str, context: dict) -> Path:
    """metrics.json, confusion.png and report.md in report_dir."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps({**context, **metrics}, indent=2) + "\n")
    plot_confusion(np.array(metrics["confusion"]), metrics["labels"],
                   report_dir / "confusion.png", title)
    (report_dir / "report.md").write_text(markdown_report(metrics, title, context))
    return report_dir


def aggregate_folds(per_fold: list[dict]) -> dict:
    """Mean and standard deviation over folds; the confusion matrix is the mean."""
    out = {"labels": per_fold[0]["labels"], "folds": len(per_fold)}
    for key in ("wa", "ua", "macro_f1", "weighted_f1"):
        values = np.array([m[key] for m in per_fold])
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    out["per_class"] = {
        label: {k: float(np.mean([m["per_class"][label][k] for m in per_fold]))
                for k in ("precision", "recall", "f1")} | {
            "support": int(sum(m["per_class"][label]["support"] for m in per_fold))}
        for label in out["labels"]}
    out["confusion"] = np.mean([m["confusion"] for m in per_fold], axis=0).tolist()
    out["per_fold"] = [{k: m[k] for k in ("wa", "ua", "macro_f1", "weighted_f1", "n")}
                       for m in per_fold]
    return out


@dataclass
class Scored:
    """A model's utterance-level probabilities on test audio through one channel."""

    utterances: list
    targets: np.ndarray
    probs: np.ndarray  # calibrated (the model folder's temperature)
    uncalibrated: np.ndarray | None  # softmax of the raw logits, when a temperature is set
    failures: list


def test_features(model, utterances: list, channel: str = "clean", cache_dir=None,
                  workers: int = 2):
    """The features a LoadedModel reads of labelled utterances heard through `channel`, a
    condition of training/channel.py (babble is made from the other speakers given), and
    the name of that variant in them."""
    from callmood.training.cache import babble_bank, condition_variant, extract

    unknown = sorted({u.label for u in utterances} - set(model.labels))
    if unknown:
        raise ValueError(f"the test set has labels the model lacks: {unknown}; map them with "
                         f"--labels/--map (model labels: {model.labels})")
    babble = babble_bank(utterances, model.mel.sample_rate) if "babble" in channel else None
    variant = condition_variant(channel, babble)
    features = extract(utterances, model.mel, (variant,), cache_dir, workers)
    if not features.utterances:
        raise ValueError("no usable test audio")
    return features, variant.name


def score_utterances(model, utterances: list, channel: str = "clean", cache_dir=None,
                     workers: int = 2) -> Scored:
    """Probabilities of a LoadedModel for labelled utterances heard through `channel`
    (test_features)."""
    features, variant = test_features(model, utterances, channel, cache_dir, workers)
    label_id = {label: i for i, label in enumerate(model.labels)}
    targets = np.array([label_id[u.label] for u in features.utterances])
    scores = Inference.of(model).utterances(features.mels[variant],
                                            uncalibrated=model.card.temperature != 1.0,
                                            speakers=features.speakers())
    return Scored(features.utterances, targets, scores.probs, scores.uncalibrated,
                  features.failures)


def held_out_corpus_metrics(model, utterances: list, cache_dir=None, workers: int = 2,
                            channel: str = "clean") -> dict:
    """A model's figures on one corpus's held-out utterances (those with a label the model
    knows) heard through `channel`; see corpus_figures. `model` may be a list of models
    with the same labels: an ensemble, whose members' probabilities are averaged."""
    members = model if isinstance(model, list) else [model]
    labels = members[0].labels
    if any(m.labels != labels for m in members):
        raise ValueError(f"an ensemble's members must have the same labels, got "
                         f"{[m.labels for m in members]}")
    known = [u for u in utterances if u.label in labels]
    scored = [score_utterances(m, known, channel=channel, workers=workers,
                               cache_dir=cache_dir) for m in members]
    if any([u.path for u in s.utterances] != [u.path for u in scored[0].utterances]
           for s in scored):
        raise ValueError("an ensemble's members scored different utterances (a file only "
                         "some of their features could read)")
    probs = np.mean([s.probs for s in scored], axis=0)
    return corpus_figures(scored[0].targets, probs, labels) | {
        "not_scored_labels": sorted({u.label for u in utterances} - set(labels))}


def corpus_figures(targets: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Figures of utterance-level probabilities on one corpus: UA and macro-F1 `restricted`
    to the classes that corpus has (argmax over them only, so a model is not punished for a
    class the corpus never uses) and `open` (over all labels), neutral recall, the
    restricted confusion and chance level."""
    present = sorted(set(np.asarray(targets).tolist()))
    restricted = np.full_like(probs, -np.inf)
    restricted[:, present] = probs[:, present]
    closed = classification_metrics(targets, restricted.argmax(1), labels)
    opened = classification_metrics(targets, probs.argmax(1), labels)
    neutral = closed["per_class"].get("neutral", {})
    return {"n": len(targets), "classes": [labels[i] for i in present],
            "chance": 1 / len(present),
            "ua_restricted": closed["ua"], "macro_f1_restricted": closed["macro_f1"],
            "ua_open": opened["ua"], "macro_f1_open": opened["macro_f1"],
            "neutral_recall": neutral.get("recall") if neutral.get("support") else None,
            "confusion_restricted": closed["confusion"], "labels": labels}


def evaluate_model(model, split, out: str | Path, cache_dir=None, workers: int = 2,
                   channel: str = "clean") -> dict:
    """Score `split.test` heard through `channel` and write the report folder; returns
    metrics (with the expected calibration error and its reliability bins)."""
    scored = score_utterances(model, split.test, channel, cache_dir, workers)
    metrics = classification_metrics(scored.targets, scored.probs.argmax(1), model.labels)
    if scored.uncalibrated is not None:
        metrics["ece_uncalibrated"] = expected_calibration_error(scored.uncalibrated,
                                                                 scored.targets)
    metrics["ece"] = expected_calibration_error(scored.probs, scored.targets)
    metrics["reliability"] = reliability_bins(scored.probs, scored.targets)
    context = {"model": model.name, "model_version": model.version,
               "split": split.description, "speaker_independent": split.speaker_independent,
               "channel": channel, "temperature": model.card.temperature,
               "test_speakers": sorted({u.speaker for u in scored.utterances}),
               "skipped_unreadable_files": len(scored.failures)}
    title = f"{model.name} on {split.description}" + (f", {channel}" if channel != "clean"
                                                      else "")
    write_report(out, metrics, title, context)
    plot_reliability(scored.probs, scored.targets, Path(out) / "reliability.png", title,
                     before=scored.uncalibrated)
    return {**context, **metrics}


def evaluate_folds(model_dir: str, split_args: dict, out: str | Path, cache_dir=None,
                   workers: int = 2, channel: str = "clean",
                   on_split: Callable | None = None) -> dict:
    """`callmood evaluate`: score the test speakers of `split_args` (load_split's keyword
    arguments) and write the report in `out`; returns its metrics.

    With fold "all", every fold of the protocol (or of n_folds) is scored with the model
    folder `model_dir.format(fold=k)`, each reported in out/foldK, and `out` gets the mean
    ± std over folds (aggregate_folds). `on_split(split)` sees each split once loaded.
    """
    from callmood.model.folder import load_model_folder
    from callmood.training.splits import fold_names, load_split

    folds = [split_args.get("fold")]
    if folds[0] == "all":
        folds = fold_names(split_args.get("shared", "../shared"), split_args.get("n_folds"))
    per_fold = []
    for k in folds:
        split, _ = load_split(**{**split_args, "fold": k})
        if on_split is not None:
            on_split(split)
        model = load_model_folder(model_dir.format(fold=k))
        fold_out = Path(out) / f"fold{k}" if len(folds) > 1 else Path(out)
        per_fold.append(evaluate_model(model, split, fold_out, cache_dir, workers, channel))
    if len(folds) == 1:
        return per_fold[0]
    metrics = aggregate_folds(per_fold)
    write_report(out, metrics, f"{len(folds)}-fold mean ({model_dir})",
                 {"model": model_dir, "split": per_fold[0]["split"].rsplit(" fold", 1)[0]
                  + f", mean of {len(folds)} folds"})
    return metrics
