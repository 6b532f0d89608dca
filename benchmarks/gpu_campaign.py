"""One campaign step for a GPU lent for minutes: the corpora packed here into one compact
folder that travels with the working tree, then trained and evaluated there in one go.

    .venv/bin/python benchmarks/gpu_campaign.py pack [--out runs/campaign] [--max-mib 50]
    .venv/bin/python benchmarks/gpu_campaign.py run --data runs/campaign --out "$OUT" \\
        [--held-out emodb,nemo,emovo] [--seeds 0] [--epochs 30] [--set KEY=VALUE ...]

`pack` reads the seven corpora of ../shared (labels mapped to callmood's, as every
benchmark maps them), keeps at most `--per-corpus` utterances of each (stratified by
label, the same on every run), and writes each as 16-kHz mono Opus at `--kbps` (16 by
default: transparent enough for speech emotion, and the training's channel simulation
draws Opus at 6-16 kbit/s anyway) with a manifest per corpus, and beside them the
ImageNet DeiT-Tiny the recipe starts from (22 MB). It refuses to write more than
`--max-mib` (50: the device tool carries 64 MiB a call, and the GPU image lacks
soundfile, soxr and pyroomacoustics, whose wheels travel beside the pack). The corpora
are non-commercial: the pack, and models trained on it, are for research.

`run` is the leave-one-corpus-out protocol of benchmarks/ablate.py on the pack, at a
GPU's budget: per held-out corpus and seed, train on the other corpora (the bundled
recipe, device auto: CUDA when there is one), then restricted UA on the held-out corpus
clean and through a line outside every training range (`unseen_narrow`). It writes the
model folders, `campaign.json` (the command, the machine, every cell) and
`campaign.md` (the table) into `--out`. Everything runs on a CPU too, slowly: the tests
run it with a micro model on a few utterances.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from joblib import Parallel, delayed

from callmood.model.folder import load_model_folder
from callmood.signal.audio import load_mono
from callmood.training.channel import opus_compression_level
from callmood.training.corpora import generic
from callmood.training.evaluate import held_out_corpus_metrics
from callmood.training.labels import parse_mapping
from callmood.training.splits import make_split
from callmood.training.train import train
from callmood.workers import usable_cores

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/
import harness  # noqa: E402
from ablate import CORPORA, LINE, parse_sets, recipe  # noqa: E402
from bench_transfer import load_all, subsample  # noqa: E402

RATE = 16000


def _encode(path: str, target: Path, kbps: float) -> float:
    """One utterance as 16-kHz mono Opus; its seconds."""
    audio = load_mono(path, RATE)
    sf.write(target, audio, RATE, format="OGG", subtype="OPUS",
             compression_level=opus_compression_level(kbps))
    return len(audio) / RATE


def pack(args) -> None:
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    data = load_all(args.shared, args.corpora.split(","))
    summary = {}
    for name, utterances in data.items():
        kept = subsample(utterances, args.per_corpus, seed=0)
        folder = out / name
        folder.mkdir(parents=True)
        files = [f"{i:05d}.ogg" for i in range(len(kept))]
        seconds = Parallel(n_jobs=args.workers)(
            delayed(_encode)(u.path, folder / f, args.kbps) for u, f in zip(kept, files,
                                                                           strict=True))
        pd.DataFrame({"path": files, "label": [u.label for u in kept],
                      "speaker": [u.speaker.split(":", 1)[1] for u in kept]}
                     ).to_csv(folder / "manifest.csv", index=False)
        summary[name] = {"utterances": len(kept), "of": len(utterances),
                         "seconds": round(float(sum(seconds)), 1)}
        print(f"{name}: {len(kept)} of {len(utterances)} utterances", flush=True)
    shutil.copytree(args.shared / harness.DEIT, out / harness.DEIT)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if size > args.max_mib * 2**20:
        shutil.rmtree(out)
        raise SystemExit(f"the pack would be {size / 2**20:.1f} MiB, over --max-mib "
                         f"{args.max_mib:g}: lower --per-corpus or --kbps")
    harness.write_json(out / "pack.json", {"corpora": summary, "kbps": args.kbps,
                                           "mib": round(size / 2**20, 1),
                                           "licence": "non-commercial corpora: research "
                                                      "use only"})
    print(f"{out}: {size / 2**20:.1f} MiB", flush=True)


def run(args) -> None:
    corpora = sorted(p.parent.name for p in args.data.glob("*/manifest.csv"))
    missing = [name for name in args.held_out.split(",") if name not in corpora]
    if missing or not (args.data / harness.DEIT).is_dir():
        raise SystemExit(f"{args.data}: not a pack with {', '.join(missing) or 'its init'} "
                         f"(it holds {', '.join(corpora) or 'no corpus'}); make one with "
                         "`gpu_campaign.py pack`")
    # each corpus of the pack through its manifest (its own adapter expects its layout)
    data = {name: generic.scan(args.data / name, name)[0] for name in corpora}
    # the ablation protocol's recipe, the pack standing in for ../shared (its init too)
    protocol = argparse.Namespace(shared=args.data, epochs=args.epochs,
                                  epoch_size=args.epoch_size, precision=args.precision,
                                  device=args.device)
    cells = []
    for held_out in args.held_out.split(","):
        for seed in map(int, args.seeds.split(",")):
            config = recipe(protocol, {"workers": args.workers, **parse_sets(args.set)}, seed)
            test = data[held_out]
            split = make_split([u for name in corpora for u in data[name]],
                               test_speakers=sorted({u.speaker for u in test}),
                               shared=args.data, seed=seed)
            folder = args.out / "models" / f"{held_out}-s{seed}"
            started = time.time()
            train(split, config, folder, label_map=parse_mapping("calls", []),
                  cache_dir=args.out / "features")
            model = load_model_folder(folder)
            clean = held_out_corpus_metrics(model, test, args.out / "features", args.workers)
            line = held_out_corpus_metrics(model, test, args.out / "features", args.workers,
                                           LINE)
            cells.append({"held_out": held_out, "seed": seed, "ua": clean["ua_restricted"],
                          "ua_line": line["ua_restricted"],
                          "neutral_recall": clean["neutral_recall"],
                          "best_epoch": model.card.training["best_epoch"],
                          "train_utterances": len(split.train),
                          "wall_s": round(time.time() - started, 1)})
            print(f"{held_out} seed {seed}: UA {clean['ua_restricted']:.3f}, via the line "
                  f"{line['ua_restricted']:.3f} ({cells[-1]['wall_s']:.0f} s)", flush=True)
    report = {"machine": harness.machine("torch"), "data": json.loads(
                  (args.data / "pack.json").read_text()) if (args.data / "pack.json").exists()
              else None, "changes": parse_sets(args.set), "epochs": args.epochs,
              "cells": cells, "mean_ua": float(np.mean([c["ua"] for c in cells])),
              "mean_ua_line": float(np.mean([c["ua_line"] for c in cells]))}
    harness.write_json(args.out / "campaign.json", report)
    rows = [f"| {c['held_out']} | {c['seed']} | {c['ua']:.3f} | {c['ua_line']:.3f} | "
            f"{c['best_epoch']} | {c['wall_s']:.0f} |" for c in cells]
    harness.write_text(args.out / "campaign.md", "\n".join(
        ["| held-out corpus | seed | UA | UA via the line | best epoch | wall (s) |",
         "| --- | --- | --- | --- | --- | --- |", *rows,
         f"| mean | | {report['mean_ua']:.3f} | {report['mean_ua_line']:.3f} | | |", ""]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="pack the corpora into one compact folder")
    harness.add_shared_option(packing)
    packing.add_argument("--out", type=Path, default=harness.ROOT / "runs" / "campaign")
    packing.add_argument("--corpora", default=",".join(CORPORA))
    packing.add_argument("--per-corpus", type=int, default=800)
    packing.add_argument("--kbps", type=float, default=16.0)
    packing.add_argument("--max-mib", type=float, default=50.0)
    packing.add_argument("--workers", type=int, default=2)
    running = commands.add_parser("run", help="train and evaluate on a pack")
    running.add_argument("--data", type=Path, required=True)
    running.add_argument("--out", type=Path, required=True)
    running.add_argument("--held-out", default="emodb,nemo,emovo")
    running.add_argument("--seeds", default="0")
    running.add_argument("--epochs", type=int, default=30)
    running.add_argument("--epoch-size", type=int, default=0)
    running.add_argument("--precision", default="bf16")
    running.add_argument("--device", default="auto")
    running.add_argument("--workers", type=int, default=usable_cores(),
                         help="feature extraction's processes (default: every core)")
    running.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
