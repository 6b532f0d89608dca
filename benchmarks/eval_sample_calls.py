"""How well a model scores sample_calls/, against their ground truth: benchmarks/eval_calls.py
on the 12 sample calls, plus where their errors come from.

The calls are telephone-channel audio (8 kHz mu-law) of the RAVDESS fold-1 test actors,
so a model trained without those actors is scored on unseen voices through a channel
unlike the studio recordings it learned from. Twelve calls are a demo, not a benchmark:
the call benchmark (benchmarks/callbench/) is where settings are fitted and figures
reported.

    .venv/bin/python benchmarks/eval_sample_calls.py [--model DIR]

writes benchmarks/results/sample_calls.json and sample_calls_confusion.png. The calls are
scored with `callmood score` twice, without and with `--prior-shift em`, and live too
(eval_calls.py's figures for each; which calls escalate and which are calm comes from
their calls_truth.csv). The mono call (0009) has no customer channel, so no customer share.

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

from callmood.model.folder import default_model_dir, load_model_folder
from callmood.training.corpora.base import Utterance
from callmood.training.evaluate import classification_metrics, plot_confusion, score_utterances

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/
import harness  # noqa: E402
from eval_calls import (  # noqa: E402
    evaluate_folder,
    headline,
    match_segments,
    read_results,
    role_negative_share,
    score_folder,
    utterance_predictions,
)


def none_if_nan(value) -> float | None:
    """JSON has no NaN: a share that does not exist (a mono call has no customer) is null."""
    return None if pd.isna(value) else round(float(value), 3)


def mean_abs_error(per_call: dict, key: str) -> float:
    """Mean |true - key| over the calls that have a `key` share."""
    return float(np.mean([abs(v["true"] - v[key]) for v in per_call.values()
                          if v[key] is not None]))


def studio_attribution(model, truth: pd.DataFrame, matched: pd.DataFrame,
                       data: Path) -> dict:
    """The calls' utterances scored on the studio recordings they were cut from, beside the
    same utterances as the nightly job heard them in the calls (see the module docstring)."""
    labels = model.labels
    label_id = {label: i for i, label in enumerate(labels)}
    known = truth[truth.emotion.isin(labels)]
    sources = known.drop_duplicates("source")
    scored = score_utterances(model, [
        Utterance(str(data / row.source), row.emotion, row.speaker, row.corpus)
        for row in sources.itertuples()])
    by_path = {u.path: p for u, p in zip(scored.utterances, scored.probs.argmax(axis=1),
                                         strict=True)}
    studio = known.source.map(lambda source: by_path[str(data / source)]).to_numpy()
    call_pred = utterance_predictions(matched, labels)
    found = known.index.isin(call_pred.index)
    y_true = known.emotion.map(label_id).to_numpy()[found]
    y_studio, y_call = studio[found], call_pred.loc[known.index[found]].to_numpy()
    studio_metrics = classification_metrics(y_true, y_studio, labels)
    call_metrics = classification_metrics(y_true, y_call, labels)
    negative_labels = {label for label, v in model.card.valence.items() if v < 0}
    negative = {label_id[label] for label in negative_labels if label in label_id}
    studio_share = role_negative_share(known, [p in negative for p in studio], "customer")
    # the calls whose customer the nightly job could tell apart, so both errors are comparable
    stereo = set(matched[matched.role == "customer"].call_id)
    per_call = {call: {"true": round(float(share), 3),
                       "studio": none_if_nan(studio_share.get(call, np.nan))}
                for call, share in role_negative_share(
                    truth, truth.emotion.isin(negative_labels), "customer").items()
                if call in stereo}
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
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp) / "results"
            score_folder(args.calls, results, args.model, ["--prior-shift", prior_shift])
            figures = evaluate_folder(args.calls, results, args.model, live=True,
                                      escalating=[], calm=[])
            segments, _ = read_results(results)
        if prior_shift == "off" and (args.shared / "data" / "ravdess").is_dir():
            figures["studio_attribution"] = studio_attribution(
                model, truth, match_segments(segments, truth), args.shared / "data")
        report[f"prior_shift_{prior_shift}"] = figures
        print(f"prior shift {prior_shift}: {headline(figures)}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot_confusion(np.array(report["prior_shift_off"]["utterances"]["confusion"]),
                   model.labels, args.out / "sample_calls_confusion.png",
                   f"{model.name} on sample_calls/ (utterances)")
    harness.write_json(args.out / "sample_calls.json", report)
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
