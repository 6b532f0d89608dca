"""Robustness of models to the call channel, on speakers none of them trained on.

Every model is scored on the RAVDESS fold-1 test actors (01, 11, 20, 21: the voices of
sample_calls/, held out from both the bundled models) with the call label set, once per
evaluation condition of training/channel.py: clean, narrowband telephone, each codec,
noise at fixed SNRs, babble, reverberation, a ±20 dB gain, and the `unseen_*` conditions,
whose settings lie outside every range the channel augmentation draws from. Per condition
and model: UA, neutral recall and expected calibration error. The gain check feeds every
clip at ±20 dB without clipping and reports the largest change of any probability.

    .venv/bin/python benchmarks/bench_robustness.py \\
        --model bundled-v2=runs/bundled_v2 --model default-v3=callmood/default_model

(runs/bundled_v2: `git show 65caa39:callmood/default_model/<file>` for each file of the
previous bundled model.) Per condition it also reports what the EM prior shift of
`callmood score --prior-shift em` does to the same utterances' UA.

writes benchmarks/results/robustness.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from callmood.model.calibration import adapt_priors
from callmood.model.folder import load_model_folder
from callmood.model.predict import Inference
from callmood.signal.audio import load_mono
from callmood.signal.features import audio_features
from callmood.signal.segment import utterance_audio
from callmood.training.channel import CONDITIONS, ChannelConfig
from callmood.training.corpora.registry import load_corpora
from callmood.training.evaluate import (
    classification_metrics,
    expected_calibration_error,
    score_utterances,
)
from callmood.training.labels import apply_mapping, parse_mapping
from callmood.training.splits import make_split

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

GAIN_DB = 20.0


def gain_drift(model, utterances, gain_db: float) -> float:
    """Largest change of any utterance probability when the audio is `gain_db` louder or
    quieter (in float, so nothing clips): the input is level-relative by construction
    (with mel.trim_silence, so far as the detector cuts the take alike: its -60 dBFS
    floor can cut a very quiet take differently)."""
    worst, inference = 0.0, Inference.of(model)
    for u in utterances:
        audio = load_mono(u.path, model.mel.sample_rate)
        probs = [inference.utterances([audio_features(
            utterance_audio(audio * 10 ** (g / 20), model.mel), model.mel)]).probs[0]
                 for g in (0.0, gain_db, -gain_db)]
        worst = max(worst, float(np.abs(probs[1] - probs[0]).max()),
                    float(np.abs(probs[2] - probs[0]).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR")
    harness.add_shared_option(parser)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    utterances = apply_mapping(load_corpora([f"ravdess={args.shared / 'data/ravdess'}"]),
                               parse_mapping("calls", []))
    test = make_split(utterances, fold=1, shared=args.shared).test
    conditions = args.conditions.split(",")
    ranges = ChannelConfig()
    report = {"test_set": "RAVDESS fold-1 test actors 01, 11, 20, 21 (240 clips), call labels",
              "conditions": {name: {**CONDITIONS[name].describe(),
                                    "outside_training_ranges":
                                        ranges.out_of_range(CONDITIONS[name])}
                             for name in conditions},
              "machine": harness.machine("torch"),
              "models": {}}
    for spec in args.model:
        name, folder = spec.split("=", 1)
        model = load_model_folder(folder)
        rows = {}
        for condition in conditions:
            started = time.time()
            scored = score_utterances(model, test, condition, workers=args.workers)
            m = classification_metrics(scored.targets, scored.probs.argmax(1), model.labels)
            # what `score --prior-shift em` would do to these utterances
            adapted, _ = adapt_priors(scored.probs, np.full(len(model.labels),
                                                            1 / len(model.labels)))
            shifted = classification_metrics(scored.targets, adapted.argmax(1), model.labels)
            rows[condition] = {"ua": m["ua"], "wa": m["wa"], "macro_f1": m["macro_f1"],
                               "neutral_recall": m["per_class"]["neutral"]["recall"],
                               "ece": expected_calibration_error(scored.probs, scored.targets),
                               "ua_prior_shift_em": shifted["ua"], "n": m["n"]}
            print(f"{name:>14} {condition:>18}: UA {100 * m['ua']:.1f}  neutral recall "
                  f"{100 * rows[condition]['neutral_recall']:.1f}  "
                  f"({time.time() - started:.0f} s)", flush=True)
        drift = gain_drift(model, test, GAIN_DB)
        print(f"{name:>14} ±{GAIN_DB:.0f} dB: largest probability change {drift:.2e}")
        report["models"][name] = {"folder": folder, "model": model.name,
                                  "version": model.version,
                                  "temperature": model.card.temperature,
                                  "conditions": rows, "gain_20db_max_probability_change": drift}
    harness.write_json(args.out / "robustness.json", report)
    harness.write_text(args.out / "robustness.md", markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    models = list(report["models"])
    conditions = list(report["conditions"])
    head = "| condition | " + " | ".join(
        f"{m} UA | {m} neutral recall | {m} ECE | {m} UA with EM prior shift" for m in models)
    lines = [head + " |", "| --- |" + " --- | --- | --- | --- |" * len(models)]
    for c in conditions:
        unseen = " (outside training ranges)" if report["conditions"][c][
            "outside_training_ranges"] else ""
        cells = []
        for m in models:
            row = report["models"][m]["conditions"][c]
            cells += [f"{100 * row['ua']:.1f}", f"{100 * row['neutral_recall']:.1f}",
                      f"{100 * row['ece']:.1f}", f"{100 * row['ua_prior_shift_em']:.1f}"]
        lines.append(f"| {c}{unseen} | " + " | ".join(cells) + " |")
    lines += ["", "Largest change of any probability at ±20 dB (no clipping): " + ", ".join(
        f"{m} {report['models'][m]['gain_20db_max_probability_change']:.1e}" for m in models)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
