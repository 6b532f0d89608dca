"""Probe: does test-time speaker normalisation rescue a transfer cell's model?

For a held-out corpus and a row of benchmarks/bench_transfer.py whose model is still in
runs/bench_transfer, every held-out speaker's mean log-mel spectrum (per mel bin, over
all their frames, as the model sees them: level-relative) is moved to the mean spectrum
of 1,500 utterances drawn from the corpora the model trained on; nothing is retrained.
Reports restricted UA and neutral recall as is and normalised. Speaker normalisation is
the main lever of cross-corpus emotion recognition in the literature (Schuller et al.
2010); this measures its cheapest form before anyone trains with it.

    .venv/bin/python benchmarks/probe_speaker_norm.py --held-out kored,emovo,tess --rows a,b,c

writes benchmarks/results/probe_speaker_norm.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: harness, bench_transfer
import bench_transfer  # noqa: E402  (the cells' recipe, corpora and model folders)
import harness  # noqa: E402

from callmood.model.folder import load_model_folder  # noqa: E402
from callmood.model.predict import Inference  # noqa: E402
from callmood.signal.features import level_relative  # noqa: E402
from callmood.training.cache import clean, extract  # noqa: E402
from callmood.training.evaluate import corpus_figures  # noqa: E402


def mean_spectrum(mels: list[torch.Tensor], mel) -> torch.Tensor:
    """Per mel bin, the mean over utterances of each utterance's mean over frames."""
    return torch.stack([level_relative(m, mel).mean(1) for m in mels]).mean(0)


def figures(model, mels: list[torch.Tensor], targets: np.ndarray) -> dict:
    f = corpus_figures(targets, Inference.of(model).utterances(mels).probs, model.labels)
    return {"ua_restricted": round(100 * f["ua_restricted"], 1),
            "neutral_recall": None if f["neutral_recall"] is None
            else round(100 * f["neutral_recall"], 1)}


def probe(args, row: str, held_out: str, data: dict) -> dict | None:
    names = bench_transfer.training_corpora(row, held_out, args.corpora)
    folder = bench_transfer.training_folder(args, row, names)
    if not bench_transfer.has_finished_model(folder):
        print(f"row {row}, held-out {held_out}: no model in {folder}", flush=True)
        return None
    model = load_model_folder(folder)
    pool = [u for n in names for u in data[n]]
    drawn = np.random.default_rng(args.seed).choice(len(pool), min(1500, len(pool)),
                                                    replace=False)
    reference = mean_spectrum(extract([pool[i] for i in drawn], model.mel, (clean(),),
                                      workers=args.workers).mels["clean"], model.mel)
    test = [u for u in data[held_out] if u.label in model.labels]
    features = extract(test, model.mel, (clean(),), workers=args.workers)
    mels = features.mels["clean"]
    label_id = {label: i for i, label in enumerate(model.labels)}
    targets = np.array([label_id[u.label] for u in features.utterances])
    by_speaker: dict[str, list[int]] = {}
    for i, u in enumerate(features.utterances):
        by_speaker.setdefault(u.speaker, []).append(i)
    normalised = list(mels)
    for members in by_speaker.values():
        shift = (reference - mean_spectrum([mels[i] for i in members], model.mel))[:, None]
        for i in members:
            normalised[i] = mels[i] + shift
    return {"row": row, "held_out": held_out, "speakers": len(by_speaker),
            "as_is": figures(model, mels, targets),
            "speaker_normalised": figures(model, normalised, targets)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held-out", default="kored,emovo,tess")
    parser.add_argument("--rows", default="a,b,c")
    harness.add_shared_option(parser)
    parser.add_argument("--params", default=str(harness.RECIPE))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--epoch-size", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--work", type=Path, default=harness.ROOT / "runs/bench_transfer")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    # the transfer benchmark's defaults, so that its model folders are found
    args.corpora, args.max_per_corpus = list(bench_transfer.CORPORA), 0
    args.init, args.precision, args.device = str(args.shared / harness.DEIT), "bf16", "auto"
    data = bench_transfer.load_all(args.shared, args.corpora)
    results = []
    for held_out in args.held_out.split(","):
        for row in args.rows.split(","):
            if (result := probe(args, row, held_out, data)) is not None:
                results.append(result)
                print(json.dumps(result), flush=True)
    harness.write_json(args.out / "probe_speaker_norm.json",
                       {"machine": harness.machine("torch"), "results": results})


if __name__ == "__main__":
    main()
