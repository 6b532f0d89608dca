"""Scoring utterances and reporting: WA, UA, macro/weighted F1, per-class figures, confusion.

Utterances longer than the model's clip are scored on up to three crops (start, centre,
end) whose probabilities are averaged; training's validation uses the same function.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from callmood.training.features import MelConfig, fit_frames  # noqa: E402


def utterance_crops(mel: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """(n_mels, T) -> (k, n_mels, input_frames): one padded clip, or start/centre/end crops."""
    frames = config.input_frames
    length = mel.shape[-1]
    if length <= frames:
        return fit_frames(mel, frames, config.pad_value)[None]
    offsets = sorted({0, (length - frames) // 2, length - frames})
    return torch.stack([fit_frames(mel, frames, config.pad_value, o) for o in offsets])


def utterance_probs(mels: list[torch.Tensor], config: MelConfig,
                    predict: Callable[[torch.Tensor], np.ndarray],
                    batch_size: int = 64) -> np.ndarray:
    """Average crop probabilities per utterance; `predict` maps clips to probabilities."""
    crops = [utterance_crops(m, config) for m in mels]
    owners = np.concatenate([np.full(len(c), i) for i, c in enumerate(crops)]) if crops \
        else np.zeros(0, dtype=int)
    stacked = torch.cat(crops) if crops else torch.zeros(0)
    probs = np.concatenate([predict(stacked[i:i + batch_size])
                            for i in range(0, len(stacked), batch_size)]) if crops else None
    if probs is None:
        return np.zeros((0, 0), dtype=np.float32)
    out = np.zeros((len(mels), probs.shape[1]), dtype=np.float64)
    np.add.at(out, owners, probs)
    return out / np.bincount(owners, minlength=len(mels))[:, None]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                           labels: list[str]) -> dict:
    """Figures as fractions in [0, 1]; the confusion matrix has true labels as rows."""
    index = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=index, zero_division=0)
    present = np.unique(y_true)
    return {
        "wa": float(accuracy_score(y_true, y_pred)),
        "ua": float(balanced_accuracy_score(y_true, y_pred)) if len(present) else 0.0,
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


def plot_confusion(confusion: np.ndarray, labels: list[str], path: str | Path,
                   title: str) -> None:
    """Row-normalised confusion matrix with counts (or mean counts) in each cell."""
    confusion = np.asarray(confusion, dtype=float)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    size = 1.2 + 0.65 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted emotion")
    ax.set_ylabel("true emotion")
    ax.set_title(title, fontsize=10)
    integral = np.allclose(confusion, confusion.round())
    for i in range(len(labels)):
        for j in range(len(labels)):
            text = f"{confusion[i, j]:.0f}" if integral else f"{confusion[i, j]:.1f}"
            ax.text(j, i, f"{share[i, j]:.0%}\n{text}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
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


def evaluate_model(model, split, out: str | Path, cache_dir=None, workers: int = 2) -> dict:
    """Score `split.test` with a LoadedModel and write the report folder; returns metrics."""
    from callmood.training.cache import extract

    label_id = {label: i for i, label in enumerate(model.labels)}
    unknown = sorted({u.label for u in split.test} - set(label_id))
    if unknown:
        raise ValueError(f"the test set has labels the model lacks: {unknown}; map them with "
                         f"--labels/--map (model labels: {model.labels})")
    features = extract(split.test, model.mel, ("clean",), cache_dir, workers)
    if not features.utterances:
        raise ValueError("no usable test audio")
    targets = np.array([label_id[u.label] for u in features.utterances])
    probs = utterance_probs(features.mels["clean"], model.mel, model.predict_mels)
    metrics = classification_metrics(targets, probs.argmax(1), model.labels)
    context = {"model": model.name, "model_version": model.version,
               "split": split.description, "speaker_independent": split.speaker_independent,
               "test_speakers": sorted({u.speaker for u in features.utterances}),
               "skipped_unreadable_files": len(features.failures)}
    write_report(out, metrics, f"{model.name} on {split.description}", context)
    return {**context, **metrics}
