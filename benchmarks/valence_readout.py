"""Negative emotion read two ways from the same model: the classes' probabilities summed
over the negative labels (what the product does), or the valence head trained beside the
classifier (`affect_heads`, training/auxiliary.py). Issue 23 asks which gives the better
negative share.

    .venv/bin/python benchmarks/valence_readout.py [--lever affect-heads-0.5]

For each kept ablation cell of the lever whose model folder kept its affect heads, both
readouts score the same utterances in the same forward pass:

* the cell's held-out corpus utterances (as ablate.py picks them), clean and through the
  unseen line: how well P(negative) ranks negative utterances above the others (AUC) and
  its Brier score;
* the customer utterances of the first `--dev-calls` calls of the call benchmark's dev
  split, cut from the call audio where the truth puts them (so the line, codec and echo
  are the call's): AUC, Brier, and each call's customer negative share as the
  duration-weighted mean of P(negative), against the truth's share (mean absolute error in
  points). Cutting at the truth's times isolates the readout from segmentation; the
  product's own share (segments, VAD) is ablate.py's dev-call column.

Which labels are negative is the model folder's valence map (the bundled one, which the
head's targets also follow). The summed readout is calibrated (the folder's temperature),
the head's is not: Brier scores compare the readouts as each would be used. Paired per
cell: head minus summed. Writes OUT/valence_readout.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from callmood.model.calibration import softmax
from callmood.model.folder import load_model_folder
from callmood.model.predict import Inference
from callmood.signal.audio import read_channels, resample
from callmood.training.auxiliary import load_affect_heads
from callmood.training.corpora.base import Utterance
from callmood.training.evaluate import test_features
from callmood.training.model import classifier_inputs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/
import ablate  # noqa: E402
import harness  # noqa: E402
from bench_transfer import load_all, subsample  # noqa: E402

READOUTS = ("summed", "head")


def negative_probabilities(model, heads, utterances: list, channel: str, cache_dir,
                           workers: int) -> tuple[list, dict[str, np.ndarray]]:
    """The utterances scored and, per readout, each one's P(negative) averaged over its
    clips: the calibrated class probabilities of the negative labels summed, and the
    valence head's softmax on the embedding the classifier read, from one forward pass."""
    features, variant = test_features(model, utterances, channel, cache_dir, workers)
    with classifier_inputs(model.model) as seen:
        logits, owners = Inference.of(model).clip_logits(features.mels[variant],
                                                         features.speakers())
    negative = [i for i, label in enumerate(model.labels) if model.card.valence[label] < 0]
    per_clip = {"summed": softmax(logits, model.card.temperature)[:, negative].sum(1)}
    with torch.no_grad():
        embedding = torch.cat(seen).float().cpu()
        per_clip["head"] = torch.softmax(heads.valence(embedding), -1)[:, 0].numpy()
    counts = np.bincount(owners, minlength=len(features.utterances))
    return features.utterances, {name: np.bincount(owners, weights=values,
                                                   minlength=len(counts)) / counts
                                 for name, values in per_clip.items()}


def ranking_figures(truth: np.ndarray, p: dict[str, np.ndarray]) -> dict:
    """Per readout: AUC of P(negative) for the negative utterances, Brier score."""
    return {name: {"auc": round(float(roc_auc_score(truth, p[name])), 4)
                   if 0 < truth.sum() < len(truth) else None,
                   "brier": round(float(np.mean((p[name] - truth) ** 2)), 4)}
            for name in READOUTS} | {"n": len(truth), "negative": int(truth.sum())}


def cut_turns(calls: Path, count: int, sample_rate: int, work: Path,
              roles: tuple[str, ...] = ("customer",)) -> pd.DataFrame:
    """The truth's turns of `roles` in the first `count` calls, each cut from the call audio
    at the truth's times on its channel (column `cut`: the path of the cut). Cuts are
    written once under `work`, in a folder named by the benchmark's tables and the rate."""
    digest = hashlib.sha1(b"".join((calls / name).read_bytes() for name in
                                   ("calls.csv", "ground_truth.csv"))).hexdigest()[:10]
    folder = work / f"valence_readout_calls-{digest}-{sample_rate}"
    listed = pd.read_csv(calls / "calls.csv", dtype=str, keep_default_na=False).head(count)
    truth = pd.read_csv(calls / "ground_truth.csv")
    truth = truth[truth.call_id.isin(listed.call_id) & truth.role.isin(roles)]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for call in listed.itertuples():
        rows = truth[truth.call_id == call.call_id].reset_index(drop=True)
        # numbered within its role, so a cut's name is the same whichever roles are cut;
        # customer cuts keep the names they had when only customers were cut
        turn = rows.groupby("role").cumcount()
        rows["cut"] = [str(folder / (f"{call.call_id}-{i:03d}.wav" if role == "customer"
                                     else f"{call.call_id}-{role}-{i:03d}.wav"))
                       for role, i in zip(rows.role, turn, strict=True)]
        if not all(Path(p).exists() for p in rows.cut):
            audio, rate = read_channels(calls / call.file)
            for row in rows.itertuples():
                cut = audio[int(row.channel), int(row.start_s * rate):int(row.end_s * rate)]
                harness.write_wav(row.cut, resample(cut, rate, sample_rate), sample_rate)
        out.append(rows)
    return pd.concat(out, ignore_index=True) if out else truth.assign(cut=[])


def call_utterances(calls: Path, count: int, sample_rate: int, work: Path) -> list:
    """The customer utterances of the first `count` calls, cut from the call audio at the
    truth's times on the customer's channel (cut_turns), with (call_id, duration) of each."""
    turns = cut_turns(calls, count, sample_rate, work)
    return [(Utterance(row.cut, row.emotion, f"{row.call_id}:customer", "calls"), row.call_id,
             row.end_s - row.start_s) for row in turns.itertuples()]


def share_errors(scored: list, cut: list, negative: dict[str, bool],
                 p: dict[str, np.ndarray]) -> dict:
    """Per readout of `p` ({name: P(negative) per scored utterance}), the mean absolute
    error (points) of each call's customer negative share: the duration-weighted mean of
    P(negative) against the truth's negative time."""
    where = {u.path: (call, seconds) for u, call, seconds in cut}
    rows = pd.DataFrame({"call": [where[u.path][0] for u in scored],
                         "seconds": [where[u.path][1] for u in scored],
                         "truth": [float(negative[u.label]) for u in scored], **p})
    shares = rows.groupby("call").apply(
        lambda g: pd.Series({name: np.average(g[name], weights=g.seconds)
                             for name in ("truth", *p)}), include_groups=False)
    return {name: round(float((shares[name] - shares.truth).abs().mean() * 100), 2)
            for name in p} | {"calls": len(shares),
                              "per_call": shares.round(4).to_dict("index")}


def cell_figures(args, kept: dict, data: dict) -> dict | None:
    cell, settings = kept["result"], kept["settings"]
    folder = ablate.trained_model(args, cell["lever"], cell["held_out"], cell["seed"],
                                  settings)
    heads = load_affect_heads(folder)
    if heads is None:
        print(f"{folder.name}: no affect heads kept (trained before they were)", flush=True)
        return None
    model = load_model_folder(folder)
    negative = {label: model.card.valence[label] < 0 for label in model.labels}
    test = subsample(data[cell["held_out"]], settings["max_test"], cell["seed"])
    test = [u for u in test if u.label in negative]
    out = {"lever": cell["lever"], "held_out": cell["held_out"], "seed": cell["seed"],
           "model": folder.name}
    for channel in ("clean", ablate.LINE):
        scored, p = negative_probabilities(model, heads, test, channel, args.cache_dir,
                                           args.workers)
        out[channel] = ranking_figures(np.array([negative[u.label] for u in scored]), p)
    cut = call_utterances(args.calls, args.dev_calls, model.mel.sample_rate, args.work)
    scored, p = negative_probabilities(model, heads, [u for u, _, _ in cut], "clean",
                                       args.cache_dir, args.workers)
    out["dev_calls"] = ranking_figures(np.array([negative[u.label] for u in scored]), p) \
        | {"share_error_points": share_errors(scored, cut, negative, p)}
    print(f"{folder.name}: {out}", flush=True)
    return out


FIGURES = {"clean.{}.auc": "held-out AUC", f"{ablate.LINE}.{{}}.auc": "AUC via the line",
           "dev_calls.{}.auc": "dev calls AUC", "dev_calls.{}.brier": "dev calls Brier",
           "dev_calls.share_error_points.{}": "dev calls share error (points)"}


def summary(cells: list[dict]) -> dict:
    """Per figure and readout the mean over cells, and head minus summed."""
    out = {}
    for key in FIGURES:
        values = {name: [ablate.metric(c, key.format(name)) for c in cells]
                  for name in READOUTS}
        if any(v is None for vs in values.values() for v in vs):
            continue
        out[key.format("*")] = {name: round(float(np.mean(v)), 4)
                                for name, v in values.items()} | {
            "head_minus_summed": round(float(np.mean(np.subtract(values["head"],
                                                                 values["summed"]))), 4)}
    return out


def markdown(totals: dict, cells: list[dict]) -> str:
    lines = [f"{len(cells)} cells: " + ", ".join(f"{c['held_out']} seed {c['seed']}"
                                                 for c in cells), "",
             "| figure | summed class probabilities | valence head | head − summed |",
             "| --- | --- | --- | --- |"]
    for key, label in FIGURES.items():
        row = totals.get(key.format("*"))
        if row:
            lines.append(f"| {label} | {row['summed']:.3f} | {row['head']:.3f} | "
                         f"{row['head_minus_summed']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_shared_option(parser)
    parser.add_argument("--lever", default="affect-heads-0.5")
    parser.add_argument("--cells", type=Path, default=harness.RESULTS / "ablation_cells")
    parser.add_argument("--work", type=Path, default=harness.ROOT / "runs" / "ablation")
    parser.add_argument("--calls", type=Path, default=harness.ROOT / "runs" / "callbench" / "dev")
    parser.add_argument("--dev-calls", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    store = harness.CellStore(args.cells)
    kept = [k for p in sorted(store.folder.glob(f"{args.lever}-*.json"))
            if (k := store.load(p.stem))["result"]["lever"] == args.lever]
    if not kept:
        parser.error(f"no kept cells of {args.lever} in {args.cells}")
    if not (args.calls / "ground_truth.csv").is_file():
        parser.error(f"{args.calls}: no call benchmark; run benchmarks/callbench/generate.py")
    data = load_all(args.shared, sorted({k["settings"]["held_out"] for k in kept}))
    cells = [c for k in kept if (c := cell_figures(args, k, data)) is not None]
    if not cells:
        raise SystemExit(f"no cell of {args.lever} kept its affect heads: retrain them "
                         "(the heads are kept beside model folders trained since 2026-12-06)")
    totals = summary(cells)
    harness.write_json(args.out / "valence_readout.json",
                       {"lever": args.lever, "summary": totals, "cells": cells,
                        "machine": harness.machine("torch")})
    harness.write_text(args.out / "valence_readout.md", markdown(totals, cells))
    print(markdown(totals, cells))


if __name__ == "__main__":
    main()
