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
0007, 0009 and 0010 are calm. The mono call (0009) has no customer channel, so no
customer share.

Where the calls' errors come from: with --shared (default ../shared), the RAVDESS studio
recordings the calls were made from are scored too, clean and whole, by the same model.
The same utterances are then compared as recorded and as heard in the calls: an error
already made on the studio recording is the model's; one made only in the call comes from
the signal path (phone band, codec, line noise, segmentation, clip placement).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from callmood.batch.score import ScoreConfig, score_calls
from callmood.dashboard import connect
from callmood.model.folder import default_model_dir, load_model_folder
from callmood.training.corpora.base import Utterance
from callmood.training.evaluate import classification_metrics, plot_confusion, score_utterances

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402


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


def customer_negative_share(utterances: pd.DataFrame, negative) -> pd.Series:
    """Per call: the share of the customer's speech time in `utterances` (ground-truth rows)
    that `negative` (one flag per row) marks."""
    customer = utterances.assign(seconds=utterances.end_s - utterances.start_s,
                                 negative=np.asarray(negative))
    customer = customer[customer.role == "customer"]
    return customer.groupby("call_id").apply(
        lambda t: (t.seconds * t.negative).sum() / t.seconds.sum(), include_groups=False)


def true_negative_share(truth: pd.DataFrame) -> pd.Series:
    """Per call: the share of the customer's speech time whose true emotion is negative."""
    return customer_negative_share(truth, truth.emotion.isin(NEGATIVE))


def utterance_predictions(matched: pd.DataFrame, labels: list[str]) -> pd.Series:
    """Per ground-truth utterance heard in the calls (indexed as the ground truth): the label
    id that the mean probabilities of its matched segments choose."""
    scored = matched[matched.true_emotion.isin(labels)]
    probs = scored.groupby("utterance")[[f"p_{label}" for label in labels]].mean()
    return pd.Series(probs.to_numpy().argmax(axis=1), index=probs.index)


def evaluate(matched: pd.DataFrame, calls: pd.DataFrame, truth: pd.DataFrame,
             labels: list[str]) -> dict:
    """Segment- and utterance-level figures, per-call negative share and escalation flags,
    from the segments with their ground truth (match_segments)."""
    scored = matched[matched.true_emotion.isin(labels)]
    label_id = {label: i for i, label in enumerate(labels)}
    y_true = scored.true_emotion.map(label_id).to_numpy()
    y_pred = scored.emotion.map(label_id).to_numpy()
    segment_metrics = classification_metrics(y_true, y_pred, labels)
    predicted = utterance_predictions(matched, labels)
    utterance_true = truth.emotion.loc[predicted.index].map(label_id).to_numpy()
    utterance_metrics = classification_metrics(utterance_true, predicted.to_numpy(), labels)
    shares = true_negative_share(truth)
    shown = calls.set_index("call_id").customer_negative_share
    per_call = {call: {"true": round(float(shares[call]), 3),
                       "shown": none_if_nan(shown.get(call, np.nan))}
                for call in sorted(shares.index)}
    flagged = set(calls[calls.escalated].call_id)
    brief = ("wa", "ua", "macro_f1", "weighted_f1", "n")
    return {
        "segments_total": int(len(matched)), "segments_matched": int(len(scored)),
        "utterances_in_ground_truth": int(len(truth)),
        "utterances_found": int(len(predicted)),
        "segments": {k: segment_metrics[k] for k in brief},
        "utterances": {k: utterance_metrics[k] for k in brief},
        "neutral_recall_utterances": utterance_metrics["per_class"]["neutral"]["recall"],
        "neutral_utterances": utterance_metrics["per_class"]["neutral"]["support"],
        "per_class_f1_segments": {k: round(v["f1"], 3)
                                  for k, v in segment_metrics["per_class"].items()},
        "confusion_segments": segment_metrics["confusion"],
        "confusion_utterances": utterance_metrics["confusion"],
        "customer_negative_share": per_call,
        "customer_negative_share_mean_abs_error": mean_abs_error(per_call, "shown"),
        "escalating_flagged": sorted(flagged & set(ESCALATING)),
        "calm_flagged": sorted(flagged & set(CALM)),
        "all_flagged": sorted(flagged),
    }


def none_if_nan(value) -> float | None:
    """JSON has no NaN: a share that does not exist (a mono call has no customer) is null."""
    return None if pd.isna(value) else round(float(value), 3)


def mean_abs_error(per_call: dict, key: str) -> float:
    """Mean |true - key| over the calls that have a `key` share."""
    return float(np.mean([abs(v["true"] - v[key]) for v in per_call.values()
                          if v[key] is not None]))


def studio_attribution(model, truth: pd.DataFrame, matched: pd.DataFrame,
                       ravdess: Path) -> dict:
    """The calls' utterances scored on the studio recordings they were cut from, beside the
    same utterances as the nightly job heard them in the calls (see the module docstring)."""
    labels = model.labels
    label_id = {label: i for i, label in enumerate(labels)}
    known = truth[truth.emotion.isin(labels)]
    sources = known.drop_duplicates("source")
    scored = score_utterances(model, [
        Utterance(str(ravdess / row.source), row.emotion, f"ravdess:{row.actor:02d}", "ravdess")
        for row in sources.itertuples()])
    by_path = {u.path: p for u, p in zip(scored.utterances, scored.probs.argmax(axis=1),
                                         strict=True)}
    studio = known.source.map(lambda source: by_path[str(ravdess / source)]).to_numpy()
    call_pred = utterance_predictions(matched, labels)
    found = known.index.isin(call_pred.index)
    y_true = known.emotion.map(label_id).to_numpy()[found]
    y_studio, y_call = studio[found], call_pred.loc[known.index[found]].to_numpy()
    studio_metrics = classification_metrics(y_true, y_studio, labels)
    call_metrics = classification_metrics(y_true, y_call, labels)
    negative = {label_id[label] for label in NEGATIVE if label in label_id}
    studio_share = customer_negative_share(known, [p in negative for p in studio])
    # the calls whose customer the nightly job could tell apart, so both errors are comparable
    stereo = set(matched[matched.role == "customer"].call_id)
    per_call = {call: {"true": round(float(share), 3),
                       "studio": none_if_nan(studio_share.get(call, np.nan))}
                for call, share in true_negative_share(truth).items() if call in stereo}
    studio_right, call_right = y_studio == y_true, y_call == y_true
    return {
        "utterances": int(found.sum()),
        "studio": {k: studio_metrics[k] for k in ("wa", "ua", "macro_f1", "n")},
        "in_call": {k: call_metrics[k] for k in ("wa", "ua", "macro_f1", "n")},
        "studio_neutral_recall": studio_metrics["per_class"]["neutral"]["recall"],
        "in_call_neutral_recall": call_metrics["per_class"]["neutral"]["recall"],
        "same_prediction": float(np.mean(y_studio == y_call)),
        "wrong_in_call": int((~call_right).sum()),
        "wrong_in_call_and_studio": int((~call_right & ~studio_right).sum()),
        "wrong_in_call_only": int((~call_right & studio_right).sum()),
        "right_in_call_only": int((call_right & ~studio_right).sum()),
        "studio_confusion": studio_metrics["confusion"],
        "customer_negative_share_studio": per_call,
        "customer_negative_share_studio_mean_abs_error": mean_abs_error(per_call, "studio"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_dir()))
    parser.add_argument("--calls", type=Path, default=harness.ROOT / "sample_calls")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    harness.add_shared_option(parser, help="the folder holding data/ravdess, for the studio "
                              "comparison (skipped when it is missing; default: "
                              "$CALLMOOD_SHARED, else ../shared beside the repository)")
    args = parser.parse_args()
    model = load_model_folder(args.model)
    truth = pd.read_csv(args.calls / "ground_truth.csv")
    report = {"model": model.name, "model_version": model.version,
              "machine": harness.machine("torch")}
    for prior_shift in ("off", "em"):
        with tempfile.TemporaryDirectory() as results:
            summary = score_calls([str(args.calls)], results, args.model,
                                  ScoreConfig(workers=2, prior_shift=prior_shift),
                                  progress=False)
            con = connect(results)
            segments = con.sql("SELECT * FROM segments").df()
            calls = con.sql("SELECT * FROM calls").df()
        matched = match_segments(segments, truth)
        figures = evaluate(matched, calls, truth, model.labels)
        ravdess = args.shared / "data" / "ravdess"
        if prior_shift == "off" and ravdess.is_dir():
            figures["studio_attribution"] = studio_attribution(model, truth, matched, ravdess)
        if summary.priors:
            figures["estimated_priors"] = summary.priors
        report[f"prior_shift_{prior_shift}"] = figures
        if prior_shift == "off":
            args.out.mkdir(parents=True, exist_ok=True)
            plot_confusion(np.array(figures["confusion_utterances"]), model.labels,
                           args.out / "sample_calls_confusion.png",
                           f"{model.name} on sample_calls/ (utterances)")
    harness.write_json(args.out / "sample_calls.json", report)
    for key in ("prior_shift_off", "prior_shift_em"):
        f = report[key]
        print(f"{key}: utterances UA {100 * f['utterances']['ua']:.1f}  WA "
              f"{100 * f['utterances']['wa']:.1f}  neutral recall "
              f"{100 * f['neutral_recall_utterances']:.1f}  negative share error "
              f"{100 * f['customer_negative_share_mean_abs_error']:.1f} points  escalated "
              f"{f['escalating_flagged']} calm flagged {f['calm_flagged']}")
    studio = report["prior_shift_off"].get("studio_attribution")
    if studio:
        print(f"the same {studio['utterances']} utterances on their studio recordings: UA "
              f"{100 * studio['studio']['ua']:.1f} (in the calls "
              f"{100 * studio['in_call']['ua']:.1f}); of {studio['wrong_in_call']} wrong in "
              f"the calls, {studio['wrong_in_call_and_studio']} are wrong in the studio too, "
              f"{studio['wrong_in_call_only']} only in the calls; negative share error from "
              f"studio predictions "
              f"{100 * studio['customer_negative_share_studio_mean_abs_error']:.1f} points")


if __name__ == "__main__":
    main()
