"""Cross-corpus transfer: leave one corpus out, train on the others, test on all of it.

Rows, each trained once per held-out corpus with the same recipe and budget:
  a  today's default-model recipe: RAVDESS and EmoDB only (whichever of the two is not
     held out), no channel augmentation;
  b  all the other corpora, no channel augmentation;
  c  all the other corpora with the channel augmentation of training/channel.py.
(Not yet here: the issue's "all corpora, speaker-independent" row, K speaker-grouped
folds over the union; `callmood train --folds K --fold k` with every corpus does it.)

Per cell: UA and macro-F1 over the classes the held-out corpus has (argmax restricted to
them) and open (over all labels), neutral recall, the confusion matrix, and chance level
(1 / classes). Training data are balanced by corpus and class (`balance: corpus`) and each
example's loss weighs only its corpus's classes. Validation speakers come from the
training corpora (10 % of each corpus's speakers); the held-out corpus is never looked at
before its test.

    .venv/bin/python benchmarks/bench_transfer.py [--rows a,b,c] [--corpora ...]
        [--epochs N] [--epoch-size N] [--max-per-corpus N] [--device cuda]

Resumable: each finished cell is kept in --work/cells/ (reused only with the same
settings), and an unfinished training continues from its checkpoint. Writes
benchmarks/results/transfer.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from callmood.training.corpora.registry import load_corpus
from callmood.training.evaluate import held_out_corpus_metrics
from callmood.training.labels import apply_mapping, parse_mapping
from callmood.training.model_folder import load_model_folder
from callmood.training.splits import make_split
from callmood.training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ("ravdess", "emodb", "ased", "nemo", "kored", "emovo", "tess")
ROWS = {"a": "RAVDESS + EmoDB (today's recipe), no channel augmentation",
        "b": "all other corpora, no channel augmentation",
        "c": "all other corpora + channel augmentation"}


def load_all(shared: Path, names: list[str]) -> dict[str, list]:
    mapping = parse_mapping("calls", [])
    return {name: apply_mapping(load_corpus(name, shared / "data" / name), mapping)
            for name in names}


def subsample(utterances: list, limit: int, seed: int) -> list:
    """At most `limit` utterances, stratified by label, the same on every run."""
    if not limit or len(utterances) <= limit:
        return utterances
    rng = np.random.default_rng(seed)
    by_label: dict[str, list] = {}
    for u in sorted(utterances, key=lambda u: u.path):
        by_label.setdefault(u.label, []).append(u)
    share = limit / len(utterances)
    kept = []
    for group in by_label.values():
        count = max(1, round(share * len(group)))
        kept += [group[i] for i in sorted(rng.choice(len(group), count, replace=False))]
    return kept


def recipe(args: argparse.Namespace, row: str) -> TrainConfig:
    values = json.loads(Path(args.params).read_text())
    values.update({"init": args.init, "epochs": args.epochs, "epoch_size": args.epoch_size,
                   "seed": args.seed,
                   "precision": args.precision, "device": args.device,
                   "balance": "corpus", "mask_absent_classes": True})
    if row in ("a", "b"):
        values.setdefault("augment", {})["channel_p"] = 0.0
    return TrainConfig().with_overrides(values)


def cell_key(args: argparse.Namespace, row: str, held_out: str) -> str:
    settings = {"row": row, "held_out": held_out, "config": recipe(args, row).to_dict(),
                "max_per_corpus": args.max_per_corpus, "corpora": args.corpora}
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()
                        ).hexdigest()[:12]


def training_corpora(row: str, held_out: str, names: list[str]) -> list[str]:
    if row == "a":
        return [n for n in ("ravdess", "emodb") if n != held_out]
    return [n for n in names if n != held_out]


def run_cell(args, row: str, held_out: str, data: dict[str, list]) -> dict:
    """Train without `held_out` (resuming a stopped training) and test on all of it."""
    train_names = training_corpora(row, held_out, args.corpora)
    train_utts = [u for n in train_names
                  for u in subsample(data[n], args.max_per_corpus, args.seed)]
    test = data[held_out]
    split = make_split(train_utts + test, test_speakers=sorted({u.speaker for u in test}),
                       shared=args.shared, seed=args.seed)
    out = args.work / f"{row}-{held_out}"
    started = time.time()
    train(split, recipe(args, row), out, label_map=parse_mapping("calls", []),
          cache_dir=args.cache_dir, resume=(out / "checkpoint" / "state.json").is_file())
    model = load_model_folder(out)
    return held_out_corpus_metrics(model, test, args.cache_dir, args.workers) | {
        "row": row, "held_out": held_out, "trained_on": train_names,
        "train_utterances": len(split.train), "train_wall_s": round(time.time() - started, 1),
        "best_epoch": model.card.training["best_epoch"],
        "epochs_run": model.card.training["epochs_run"]}


def markdown(results: dict) -> str:
    # chance differs per cell: a row that never heard a class does not score it
    lines = ["| held-out corpus | " + " | ".join(
        f"row {r} UA / macro-F1 (open UA), chance % | row {r} neutral recall"
        for r in results["rows"]) + " |", "| --- |" + " --- | --- |" * len(results["rows"])]
    for corpus in results["corpora"]:
        row = []
        for c in (results["cells"].get(f"{r}-{corpus}") for r in results["rows"]):
            if c is None:
                row += ["not run", ""]
                continue
            neutral = "" if c["neutral_recall"] is None else f"{100 * c['neutral_recall']:.1f}"
            row += [f"{100 * c['ua_restricted']:.1f} / {100 * c['macro_f1_restricted']:.1f} "
                    f"({100 * c['ua_open']:.1f}), {100 * c['chance']:.0f}", neutral]
        lines.append(f"| {corpus} | " + " | ".join(row) + " |")
    for r in results["rows"]:
        done = [results["cells"][f"{r}-{c}"]["ua_restricted"] for c in results["corpora"]
                if f"{r}-{c}" in results["cells"]]
        if done:
            lines.append(f"\nRow {r} ({ROWS[r]}): mean restricted UA "
                         f"{100 * np.mean(done):.1f} over {len(done)} held-out corpora.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--rows", default="a,b,c")
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--params", default=str(ROOT / "benchmarks/default_model_params.json"))
    parser.add_argument("--init", default=None,
                        help="default: the shared DeiT-Tiny (weights/deit-tiny-in1k)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--epoch-size", type=int, default=1500,
                        help="examples per epoch, the same in every cell: every row gets the "
                             "same number of training steps whatever its data")
    parser.add_argument("--max-per-corpus", type=int, default=0,
                        help="train on at most N utterances of each corpus (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_transfer")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.corpora = args.corpora.split(",")
    args.init = args.init or str(args.shared / "weights/deit-tiny-in1k")
    rows = args.rows.split(",")
    needed = args.corpora + [n for n in ("ravdess", "emodb")
                             if "a" in rows and n not in args.corpora]
    data = load_all(args.shared, needed)
    cells_dir = args.work / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    results = {"rows": rows, "row_names": {r: ROWS[r] for r in rows}, "corpora": args.corpora,
               "settings": {k: str(v) for k, v in vars(args).items()},
               "machine": f"{platform.machine()}, torch {torch.__version__}, "
                          f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
               "cells": {}}
    total = len(rows) * len(args.corpora)
    # corpus by corpus, so that a stopped run leaves whole rows of the table
    for done, (held_out, row) in enumerate(((c, r) for c in args.corpora for r in rows), 1):
        kept = cells_dir / f"{row}-{held_out}-{cell_key(args, row, held_out)}.json"
        if kept.is_file():
            cell = json.loads(kept.read_text())
        else:
            print(f"[{done}/{total}] row {row}, held-out {held_out}: training", flush=True)
            cell = run_cell(args, row, held_out, data)
            kept.write_text(json.dumps(cell, indent=1))
        results["cells"][f"{row}-{held_out}"] = cell
        print(f"[{done}/{total}] row {row}, held-out {held_out}: restricted UA "
              f"{100 * cell['ua_restricted']:.1f} (chance {100 * cell['chance']:.0f})",
              flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "transfer.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "transfer.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
