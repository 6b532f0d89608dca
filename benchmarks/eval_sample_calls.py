"""How well a model scores sample_calls/ segment by segment, against their ground truth.

The calls are telephone-channel audio (8 kHz mu-law) of the RAVDESS fold-1 test actors,
so a model trained without those actors is scored on unseen voices through a channel
unlike the studio recordings it learned from.

Each scored segment takes the label of the ground-truth utterance it overlaps most on its
channel, if that overlap covers at least half the segment; other segments (pauses,
overlapping talk, VAD misses) are counted but not scored. Utterance-level figures
average the probabilities of the segments that overlap each utterance.

    .venv/bin/python benchmarks/eval_sample_calls.py [--model DIR]

writes benchmarks/results/sample_calls.json and sample_calls_confusion.png. The calls are
scored twice, without and with `--prior-shift em`, so both are reported. Per call, the
customer negative share of the results is compared with the ground truth's (by speech
time), and the escalation flags with the stories: 0002, 0005 and 0008 escalate; 0001,
0007, 0009 and 0010 are calm.
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


NEGATIVE = ("sad", "angry", "fearful", "disgust")
ESCALATING = ("call-0002", "call-0005", "call-0008")
CALM = ("call-0001", "call-0007", "call-0009", "call-0010")


def true_negative_share(truth: pd.DataFrame) -> pd.Series:
    """Per call: the share of the customer's speech time whose true emotion is negative."""
    customer = truth[truth.role == "customer"].assign(
        seconds=lambda t: t.end_s - t.start_s,
        negative=lambda t: t.emotion.isin(NEGATIVE))
    return customer.groupby("call_id").apply(
        lambda t: (t.seconds * t.negative).sum() / t.seconds.sum(), include_groups=False)


def evaluate(segments: pd.DataFrame, calls: pd.DataFrame, truth: pd.DataFrame,
             labels: list[str]) -> dict:
    """Segment- and utterance-level figures, per-call negative share and escalation flags."""
    matched = match_segments(segments, truth)
    scored = matched[matched.true_emotion.notna() & matched.true_emotion.isin(labels)]
    label_id = {label: i for i, label in enumerate(labels)}
    y_true = scored.true_emotion.map(label_id).to_numpy()
    y_pred = scored.emotion.map(label_id).to_numpy()
    segment_metrics = classification_metrics(y_true, y_pred, labels)
    prob_columns = [f"p_{label}" for label in labels]
    per_utterance = scored.groupby("utterance")
    utterance_pred = per_utterance[prob_columns].mean().to_numpy().argmax(axis=1)
    utterance_true = per_utterance.true_emotion.first().map(label_id).to_numpy()
    utterance_metrics = classification_metrics(utterance_true, utterance_pred, labels)
    shares = true_negative_share(truth)
    shown = calls.set_index("call_id").customer_negative_share
    per_call = {call: {"true": round(float(shares[call]), 3),
                       "shown": round(float(shown.get(call, np.nan)), 3)}
                for call in sorted(shares.index)}
    flagged = set(calls[calls.escalated].call_id)
    brief = ("wa", "ua", "macro_f1", "weighted_f1", "n")
    return {
        "segments_total": int(len(segments)), "segments_matched": int(len(scored)),
        "utterances_in_ground_truth": int(len(truth)),
        "utterances_found": int(per_utterance.ngroups),
        "segments": {k: segment_metrics[k] for k in brief},
        "utterances": {k: utterance_metrics[k] for k in brief},
        "neutral_recall_utterances": utterance_metrics["per_class"]["neutral"]["recall"],
        "neutral_utterances": utterance_metrics["per_class"]["neutral"]["support"],
        "per_class_f1_segments": {k: round(v["f1"], 3)
                                  for k, v in segment_metrics["per_class"].items()},
        "confusion_segments": segment_metrics["confusion"],
        "confusion_utterances": utterance_metrics["confusion"],
        "customer_negative_share": per_call,
        "customer_negative_share_mean_abs_error": float(np.nanmean(
            [abs(v["true"] - v["shown"]) for v in per_call.values()])),
        "escalating_flagged": sorted(flagged & set(ESCALATING)),
        "calm_flagged": sorted(flagged & set(CALM)),
        "all_flagged": sorted(flagged),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_dir()))
    parser.add_argument("--calls", type=Path, default=ROOT / "sample_calls")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    model = load_model_folder(args.model)
    truth = pd.read_csv(args.calls / "ground_truth.csv")
    report = {"model": model.name, "model_version": model.version,
              "command": "python benchmarks/eval_sample_calls.py"
                         + ("" if args.model == str(default_model_dir())
                            else f" --model {args.model}")}
    for prior_shift in ("off", "em"):
        with tempfile.TemporaryDirectory() as results:
            summary = score_calls([str(args.calls)], results, args.model,
                                  ScoreConfig(workers=2, prior_shift=prior_shift),
                                  progress=False)
            con = connect(results)
            segments = con.sql("SELECT * FROM segments").df()
            calls = con.sql("SELECT * FROM calls").df()
        figures = evaluate(segments, calls, truth, model.labels)
        if summary.priors:
            figures["estimated_priors"] = summary.priors
        report[f"prior_shift_{prior_shift}"] = figures
        if prior_shift == "off":
            args.out.mkdir(parents=True, exist_ok=True)
            plot_confusion(np.array(figures["confusion_utterances"]), model.labels,
                           args.out / "sample_calls_confusion.png",
                           f"{model.name} on sample_calls/ (utterances)")
    (args.out / "sample_calls.json").write_text(json.dumps(report, indent=2) + "\n")
    for key in ("prior_shift_off", "prior_shift_em"):
        f = report[key]
        print(f"{key}: utterances UA {100 * f['utterances']['ua']:.1f}  WA "
              f"{100 * f['utterances']['wa']:.1f}  neutral recall "
              f"{100 * f['neutral_recall_utterances']:.1f}  negative share error "
              f"{100 * f['customer_negative_share_mean_abs_error']:.1f} points  escalated "
              f"{f['escalating_flagged']} calm flagged {f['calm_flagged']}")


if __name__ == "__main__":
    main()
