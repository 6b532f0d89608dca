"""Per-clip level on RAVDESS: how much emotion it carries, and which benchmark row can see it.

Row 2 of the RAVDESS benchmark (mel picture, image-style fine-tuning) beat row 1 (callmood's
input). Per-clip level is an emotion cue on RAVDESS (actors shout in anger, murmur when sad)
and a channel artefact on calls, so "row 2 wins by hearing loudness" was the obvious guess.
This script measures instead of guessing, on the EmoBox folds:

  1. UA of classifiers that see nothing but each clip's level (log power of its loud frames,
     `features.clip_level`): the absolute level, the level relative to the same actor's
     mean (what would survive a per-speaker gain), and the contrast of row 2's picture
     (dB from its peak to its floor: 80 unless librosa's absolute floor binds first);
  2. each emotion's median level relative to the same actor's neutral takes;
  3. how much each row's model input changes when a clip is played 20 dB louder or quieter
     (no clipping): row 2's picture, row 1's input as the committed run had it (equalised,
     absolute floor 1e-6) and today's level-relative input.

    .venv/bin/python benchmarks/level_cue.py [--shared ../shared]

writes benchmarks/results/level_cue.{json,md}. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from callmood.signal.audio import load_mono
from callmood.signal.features import MelConfig, clip_level, level_relative, log_mel
from callmood.training.cache import extract
from callmood.training.corpora.registry import load_corpus
from callmood.training.evaluate import classification_metrics
from callmood.training.labels import ordered_labels
from callmood.training.splits import make_split

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: harness, baselines
import harness  # noqa: E402
from baselines import picture_db, render_image  # noqa: E402  (row 2's own code)

DB_PER_LOG_UNIT = 10 / math.log(10)  # log power (nats) -> dB
GAINS_DB = (-20.0, 20.0)


def level_features(utterances, levels_db: np.ndarray) -> dict[str, np.ndarray]:
    """Absolute clip level, and the level relative to the actor's mean over all their clips."""
    actors = np.array([u.speaker for u in utterances])
    relative = levels_db.copy()
    for actor in set(actors):
        relative[actors == actor] -= levels_db[actors == actor].mean()
    return {"absolute level": levels_db[:, None], "level relative to the actor's mean":
            relative[:, None]}


def picture_contrast(utterances) -> np.ndarray:
    """dB between the peak and the floor of each clip's row-2 picture (80 = level-free)."""
    return np.array([-picture_db(load_mono(u.path, 16000), 16000).min() for u in utterances])


def contrast_by_emotion(utterances, contrast: np.ndarray, labels: list[str]) -> dict:
    """Per emotion, the share of pictures whose floor is librosa's absolute one."""
    return {label: round(100 * float(np.mean([c < 79.9 for u, c in
                                               zip(utterances, contrast, strict=True)
                                               if u.label == label])), 1)
            for label in labels}


def level_only_ua(utterances, features: np.ndarray, labels: list[str], shared: Path) -> dict:
    """Six-fold UA of a logistic regression on the level alone (balanced class weights)."""
    label_id = {label: i for i, label in enumerate(labels)}
    index = {u.path: i for i, u in enumerate(utterances)}
    y = np.array([label_id[u.label] for u in utterances])
    per_fold = []
    for fold in range(1, 7):
        split = make_split(utterances, fold=fold, shared=shared)
        train = [index[u.path] for u in split.train + split.val]
        test = [index[u.path] for u in split.test]
        model = make_pipeline(StandardScaler(),
                              LogisticRegression(class_weight="balanced", max_iter=1000))
        model.fit(features[train], y[train])
        per_fold.append(classification_metrics(y[test], model.predict(features[test]), labels))
    ua = [m["ua"] for m in per_fold]
    return {"ua_mean": round(100 * float(np.mean(ua)), 1),
            "ua_std": round(100 * float(np.std(ua)), 1),
            "ua_per_fold": [round(100 * x, 1) for x in ua],
            "recall_per_class": {label: round(100 * float(np.mean(
                [m["per_class"][label]["recall"] for m in per_fold])), 1) for label in labels}}


def level_by_emotion(utterances, levels_db: np.ndarray, labels: list[str]) -> dict:
    """Median over actors of (mean level of an emotion - mean level of the actor's neutral)."""
    by_actor: dict[str, dict[str, list[float]]] = {}
    for u, level in zip(utterances, levels_db, strict=True):
        by_actor.setdefault(u.speaker, {}).setdefault(u.label, []).append(level)
    out = {}
    for label in labels:
        offsets = [np.mean(a[label]) - np.mean(a["neutral"]) for a in by_actor.values()
                   if label in a and "neutral" in a]
        out[label] = round(float(np.median(offsets)), 1)
    return out


def render_row2(waveform: np.ndarray) -> np.ndarray:
    return render_image(waveform, 16000).astype(np.float32) / 255


def input_row1_committed(waveform: np.ndarray) -> np.ndarray:
    """Row 1's input in the committed run: log(mel + 1e-6), then level equalisation."""
    mels = log_mel(waveform, MelConfig(log_floor=1e-6))
    return level_relative(mels, MelConfig(level_floor_db=None)).numpy()


def input_today(waveform: np.ndarray) -> np.ndarray:
    config = MelConfig()
    return level_relative(log_mel(waveform, config), config).numpy()


def gain_sensitivity(utterances, count: int) -> dict:
    """Mean |change| of each input at +-20 dB, as a fraction of the input's own spread."""
    inputs = {"row 2: mel picture (librosa, ref=max, 8-bit, 224x224)": render_row2,
              "row 1 as committed: equalised, absolute floor 1e-6": input_row1_committed,
              "row 1 today: level-relative, floored 80 dB below the clip level": input_today}
    picked = utterances[:: max(1, len(utterances) // count)][:count]
    changes = {name: [] for name in inputs}
    for u in picked:
        waveform = load_mono(u.path, 16000)
        for name, make in inputs.items():
            reference = make(waveform)
            spread = float(reference.std())
            for gain in GAINS_DB:
                changed = make(waveform * 10 ** (gain / 20))
                changes[name].append(float(np.abs(changed - reference).mean()) / spread)
    return {name: {"mean_abs_change_over_std": float(f"{np.mean(v):.3g}"),
                   "max_abs_change_over_std": float(f"{np.max(v):.3g}")}
            for name, v in changes.items()} | {"clips": len(picked), "gains_db": GAINS_DB}


def markdown(results: dict) -> str:
    lines = ["| classifier on the clip level alone (6 EmoBox folds, 8 classes) | UA % |",
             "| --- | --- |"]
    for name, r in results["level_only"].items():
        lines.append(f"| {name} | {r['ua_mean']} ± {r['ua_std']} |")
    lines.append(f"| chance | {results['chance']} |")
    lines += ["", "Share of row 2's pictures whose floor is librosa's absolute one (their "
              "contrast, and so every pixel, follows the recording level), %:", "",
              "| " + " | ".join(results["row2_level_bound_pictures_pct"]) + " |",
              "|" + " --- |" * len(results["row2_level_bound_pictures_pct"]),
              "| " + " | ".join(str(v) for v in
                                results["row2_level_bound_pictures_pct"].values()) + " |"]
    lines += ["", "Median over actors of each emotion's level minus the actor's neutral level, dB:",
              "", "| " + " | ".join(results["level_by_emotion_db"]) + " |",
              "|" + " --- |" * len(results["level_by_emotion_db"]),
              "| " + " | ".join(str(v) for v in results["level_by_emotion_db"].values()) + " |",
              "", f"Change of the model input at {results['gain']['gains_db']} dB "
              f"({results['gain']['clips']} clips), mean |change| / the input's std:", "",
              "| input | mean | largest |", "| --- | --- | --- |"]
    for name, r in results["gain"].items():
        if isinstance(r, dict):
            lines.append(f"| {name} | {r['mean_abs_change_over_std']} | "
                         f"{r['max_abs_change_over_std']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_shared_option(parser)
    parser.add_argument("--gain-clips", type=int, default=120)
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    utterances = load_corpus("ravdess", args.shared / "data" / "ravdess")
    labels = ordered_labels({u.label for u in utterances})
    mels = extract(utterances, MelConfig(), (), None, 2).mels["clean"]
    levels_db = np.array([float(clip_level(m)) * DB_PER_LOG_UNIT for m in mels])
    contrast = picture_contrast(utterances)
    features = level_features(utterances, levels_db)
    features["row 2's picture contrast (dB from its peak to its floor)"] = contrast[:, None]
    results = {
        "corpus": "RAVDESS speech, 24 actors, 1440 clips",
        "level": "log power of the clip's loud frames (90th percentile of frame energy), dB",
        "chance": round(100 / len(labels), 1),
        "level_only": {name: level_only_ua(utterances, x, labels, args.shared)
                       for name, x in features.items()},
        "row2_level_bound_pictures_pct": contrast_by_emotion(utterances, contrast, labels),
        "level_by_emotion_db": level_by_emotion(utterances, levels_db, labels),
        "gain": gain_sensitivity(utterances, args.gain_clips),
        "machine": harness.machine("torch"),
    }
    harness.write_json(args.out / "level_cue.json", results)
    harness.write_text(args.out / "level_cue.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
