"""How well a model scores sample_calls/ segment by segment, against their ground truth.

The calls are telephone-channel audio (8 kHz mu-law) of the RAVDESS fold-1 test actors,
so a model trained without those actors is scored on unseen voices through a channel
unlike the studio recordings it learned from.

Each scored segment takes the label of the ground-truth utterance it overlaps most on its
channel, if that overlap covers at least half the segment; other segments (pauses,
overlapping talk, VAD misses) are counted but not scored. Utterance-level figures
average the probabilities of the segments that overlap each utterance.

    .venv/bin/python benchmarks/eval_sample_calls.py [--model DIR]

writes benchmarks/results/sample_calls.json and sample_calls_confusion.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from callmood.batch.score import ScoreConfig, score_calls
from callmood.dashboard import connect
from callmood.training.evaluate import classification_metrics, plot_confusion
from callmood.training.model_folder import default_model_dir, load_model_folder

ROOT = Path(__file__).resolve().parent.parent


def overlap(a_start, a_end, b_start, b_end) -> np.ndarray:
    return np.clip(np.minimum(a_end, b_end) - np.maximum(a_start, b_start), 0, None)


def match_segments(segments: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Ground-truth label and utterance index for each segment (NaN when unmatched)."""
    segments = segments.copy()
    segments["true_emotion"], segments["utterance"] = None, -1
    for (call, channel), group in segments.groupby(["call_id", "channel"]):
        utterances = truth[(truth.call_id == call) & (truth.channel == channel)]
        if utterances.empty:
            continue
        shared = overlap(group.start_s.values[:, None], group.end_s.values[:, None],
                         utterances.start_s.values[None, :], utterances.end_s.values[None, :])
        best = shared.argmax(axis=1)
        enough = shared[np.arange(len(group)), best] >= 0.5 * (group.end_s - group.start_s)
        segments.loc[group.index[enough], "true_emotion"] = \
            utterances.emotion.values[best[enough]]
        segments.loc[group.index[enough], "utterance"] = utterances.index.values[best[enough]]
    return segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_dir()))
    parser.add_argument("--calls", type=Path, default=ROOT / "sample_calls")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    model = load_model_folder(args.model)
    truth = pd.read_csv(args.calls / "ground_truth.csv")
    with tempfile.TemporaryDirectory() as results:
        score_calls([str(args.calls)], results, args.model, ScoreConfig(workers=2),
                    progress=False)
        segments = connect(results).sql("SELECT * FROM segments").df()
    matched = match_segments(segments, truth)
    scored = matched[matched.true_emotion.notna() & matched.true_emotion.isin(model.labels)]
    label_id = {label: i for i, label in enumerate(model.labels)}
    y_true = scored.true_emotion.map(label_id).to_numpy()
    y_pred = scored.emotion.map(label_id).to_numpy()
    segment_metrics = classification_metrics(y_true, y_pred, model.labels)
    prob_columns = [f"p_{label}" for label in model.labels]
    per_utterance = scored.groupby("utterance")
    utterance_pred = per_utterance[prob_columns].mean().to_numpy().argmax(axis=1)
    utterance_true = per_utterance.true_emotion.first().map(label_id).to_numpy()
    utterance_metrics = classification_metrics(utterance_true, utterance_pred, model.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_confusion(np.array(segment_metrics["confusion"]), model.labels,
                   args.out / "sample_calls_confusion.png",
                   f"{model.name} on sample_calls/ (segments)")
    brief = ("wa", "ua", "macro_f1", "weighted_f1", "n")
    report = {
        "model": model.name, "model_version": model.version,
        "segments_total": int(len(segments)),
        "segments_matched": int(len(scored)),
        "segments_unmatched": int(len(segments) - len(scored)),
        "utterances_in_ground_truth": int(len(truth)),
        "utterances_found": int(per_utterance.ngroups),
        "segments": {k: segment_metrics[k] for k in brief},
        "utterances": {k: utterance_metrics[k] for k in brief},
        "per_class_f1_segments": {k: round(v["f1"], 3)
                                  for k, v in segment_metrics["per_class"].items()},
        "confusion_segments": segment_metrics["confusion"],
        "command": "python benchmarks/eval_sample_calls.py",
    }
    (args.out / "sample_calls.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("segments", "utterances", "segments_matched",
                                             "segments_unmatched")}, indent=2))


if __name__ == "__main__":
    main()
