"""RAVDESS speaker-independent accuracy benchmark (the EmoBox 6-fold protocol).

Rows, all on the same folds:
  1. callmood: the bundled model's recipe (--recipe, benchmarks/default_model_params.json:
     level-relative input, channel simulation, SpecAugment, mixup) on RAVDESS alone,
     spectrogram-native input, AST-style adaptation of DeiT-Tiny; with --trials N an Optuna
     study on each fold's internal validation speakers tunes it first;
  2. the approach callmood replaces: mel spectrogram rendered to an image, resized to
     224x224 RGB, the same DeiT-Tiny fine-tuned with default settings, no augmentation;
  3. row 1's recipe (and the settings its study chose) from random initialisation;
  4. a classical baseline: MFCC + deltas + prosodic statistics -> RBF SVM;
  5. row 1 + the other corpora in --shared/data as extra training data (not the EmoBox
     protocol, which trains on RAVDESS alone): the fold's test actors stay unheard,
     validation stays on RAVDESS actors, corpora are balanced as in the recipe;
  6. the raw-audio comparison: wav2vec2 (training/wav2vec2.py, preset tiny: DeiT-Tiny's
     transformer behind a convolution stack over the samples) from random initialisation,
     with row 3's recipe; no speech-pretrained weights can be fetched here, so it stands
     against row 3, not against published fine-tuned wav2vec2 figures.

Validation speakers (early stopping, tuning, SVM's C) come from the training actors only.
The ViT rows train --epochs (default: the recipe's 16) with early stopping (--patience,
default the recipe's 6). Usage (from the repository root; `make bench-ravdess` runs the
committed settings):

    .venv/bin/python benchmarks/bench_ravdess.py --folds 1-6 --rows 4,1,2,3,5

writes benchmarks/results/ravdess_si.json, ravdess_si.md and the figures; rows not run in
this invocation keep their committed figures, each with the settings it was made with. Each
finished (fold, row) is kept in --cells (committed), and a stopped training resumes from its
checkpoint in --work, so a run that is stopped picks up where it was when started again with
the same settings.
With --trials N, row 1's Optuna studies live in benchmarks/results/optuna/ and are
committed: a fresh clone resumes them (a finished study runs no new trials, and when trials
run the full schedule its best trial's model is row 1's model); --fresh deletes them and
the kept results first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from callmood.model.folder import load_model_folder, predict_probabilities
from callmood.training.checkpoint import has_checkpoint
from callmood.training.corpora.registry import load_corpus
from callmood.training.evaluate import aggregate_folds, evaluate_model, plot_confusion
from callmood.training.labels import ordered_labels
from callmood.training.splits import make_split, ravdess_protocol
from callmood.training.train import TrainConfig, train
from callmood.training.tune import SearchSpace, run_study

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: harness, baselines
import harness  # noqa: E402
from baselines import classical_row, image_row  # noqa: E402  (rows 2 and 4)
from harness import DEIT, ROOT  # noqa: E402


def parse_folds(text: str) -> list[int]:
    if "-" in text:
        low, high = map(int, text.split("-"))
        return list(range(low, high + 1))
    return [int(x) for x in text.split(",")]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(predict, clips: torch.Tensor, clip_seconds: float, repeats: int = 3) -> dict:
    """Clips per second of `predict` on a batch of clips (best of `repeats`)."""
    predict(clips[:2])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predict(clips)
        best = min(best, time.perf_counter() - started)
    per_s = len(clips) / best
    return {"clips_per_s": round(per_s, 1), "x_real_time": round(per_s * clip_seconds, 1),
            "batch": len(clips), "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- rows 1 and 3: callmood
# A few-trial study is a random search (TPE starts after 4 trials), so the space is kept to
# settings that can win within the benchmark's epoch budget: AdamW, batch 16/32, fine-tuning
# learning rates. Dropout is off: with dropout 0.1 the pretrained ViT learnt nothing in its
# first epoch (fold 1: validation macro-F1 0.05 against 0.44 without, same settings otherwise).
BENCH_SPACE = SearchSpace(lr=(2e-5, 2e-4), weight_decay=(0.01, 0.1), optimizer=["adamw"],
                          batch_size=[16, 32], augment_strength=(0.0, 0.6))


# The ViT rows' model: (--init, backbone)
ROW_MODELS = {1: (DEIT, "vit"), 3: ("random:tiny", "vit"), 5: (DEIT, "vit"),
              6: ("random:tiny", "wav2vec2")}


def recipe_config(args, row: int) -> TrainConfig:
    """Rows 1, 3, 5 and 6: the recipe file's settings with the row's model. On RAVDESS
    alone an epoch is one pass over the fold's training actors; with the other corpora
    (row 5) it is the recipe's epoch_size."""
    init, backbone = ROW_MODELS[row]
    values = json.loads(Path(args.recipe).read_text())
    values.update(init=str(args.shared / init) if init == DEIT else init, backbone=backbone,
                  seed=args.seed, precision=args.precision, workers=2, epochs=args.epochs,
                  patience=args.patience)
    if row != 5:
        values["epoch_size"] = 0
    return TrainConfig().with_overrides(values)


def first_trial(base: TrainConfig) -> dict:
    """The study's first trial: the recipe's settings, SpecAugment's strength matched."""
    strength = base.augment.specaug_freq / 32  # tune._FULL_AUGMENT's widest frequency mask
    return {"lr": base.lr, "weight_decay": base.weight_decay, "optimizer": base.optimizer,
            "batch_size": base.batch_size, "augment_strength": strength}


def train_resumable(split, config: TrainConfig, out: Path, cache_dir):
    """train(), continuing from the checkpoint a stopped run left in `out`."""
    return train(split, config, out, label_map={}, cache_dir=cache_dir,
                 resume=has_checkpoint(out))


def callmood_row(split, fold, args, row: int, study_dir) -> dict:
    """Row 1 (with --trials an Optuna study on the fold's validation speakers picks the
    settings), or row 3 or 6 (random init, trained with the settings row 1 used).

    When trials run as many epochs as the final training, the best trial's model is row 1's
    model (trained exactly so); it is then scored on the test actors, not trained again.
    """
    tuned = row == 1
    base = recipe_config(args, row)
    tuned_params, tune_started, best = {}, time.time(), None
    trial_epochs = args.trial_epochs or args.epochs
    if not tuned:
        row1 = load_cell(args, fold, 1)
        tuned_params = row1["tuned_params"] if row1 else {}
        base = base.with_overrides(tuned_params)
    elif args.trials > 0:
        tune_split = replace(split, test=[])
        best = run_study(tune_split, replace(base, epochs=trial_epochs), BENCH_SPACE,
                         study_dir / f"fold{fold}", label_map={}, n_trials=args.trials,
                         study_name=f"fold{fold}-{settings_digest(args)}",
                         cache_dir=args.cache_dir, first_params=first_trial(base))
        if best is not None:
            tuned_params = best.user_attrs["overrides"]
            base = base.with_overrides(tuned_params)
    tune_wall = time.time() - tune_started
    trained = Path(best.user_attrs["model_dir"]) if best is not None else None
    if trained is not None and trial_epochs == args.epochs and trained.is_dir():
        model = load_model_folder(trained)
        metrics = evaluate_model(model, split, args.work / f"row1-fold{fold}-report",
                                 args.cache_dir)
        history = model.card.training
        return {"metrics": metrics, "train_wall_s": history["wall_s"],
                "epochs_run": history["epochs_run"], "best_epoch": history["best_epoch"],
                "tuned_params": tuned_params, "model": model, "best_trial": best.number,
                "tune_wall_s": round(tune_wall - history["wall_s"], 1)}
    started = time.time()
    out = args.work / f"row{row}-fold{fold}"
    result = train_resumable(split, base, out, args.cache_dir)
    model = load_model_folder(out)
    return {"metrics": result.test_metrics, "train_wall_s": round(time.time() - started, 1),
            "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "tuned_params": tuned_params, "model": model,
            **({"tune_wall_s": round(tune_wall, 1)} if tuned else {})}


def extra_data_row(split, fold, args, extra: list) -> dict:
    """Row 5: row 1's recipe with the other corpora's utterances added to the training set."""
    config = recipe_config(args, 5)
    with_extra = replace(split, train=split.train + extra,
                         description=f"{split.description} + {len(extra)} utterances of "
                                     f"{', '.join(sorted({u.corpus for u in extra}))}")
    started = time.time()
    out = args.work / f"row5-fold{fold}"
    result = train_resumable(with_extra, config, out, args.cache_dir)
    return {"metrics": result.test_metrics, "train_wall_s": round(time.time() - started, 1),
            "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "train_utterances": len(with_extra.train)}


def extra_corpora(shared: Path, labels: list[str]) -> list:
    """Every corpus in shared/data but RAVDESS, keeping the utterances of RAVDESS's labels."""
    from callmood.training.corpora.registry import ADAPTERS

    found = [p.name for p in sorted((shared / "data").iterdir())
             if p.is_dir() and p.name != "ravdess" and
             (p.name in ADAPTERS or (p / "manifest.csv").is_file())]
    return [u for name in found for u in load_corpus(name, shared / "data" / name)
            if u.label in labels]


def settings_digest(args) -> str:
    return hashlib.sha1(json.dumps(run_settings(args), sort_keys=True).encode()).hexdigest()[:8]


def run_settings(args, row: int = 1) -> dict:
    """What a row's result depends on; a kept (fold, row) is reused only if these match."""
    settings = {"seed": args.seed, "utterances_per_actor": args.limit or "all"}
    if row == 4:
        return settings
    settings.update(epochs=args.epochs, patience=args.patience, precision=args.precision)
    if row == 2:
        return settings
    recipe = recipe_config(args, row)
    settings["recipe"] = {k: v for k, v in harness.without_added_later(recipe.to_dict()).items()
                          if k not in ("init", "workers")}
    if row == 5:
        return settings
    return {**settings, "trials": args.trials, "trial_epochs": args.trial_epochs or args.epochs,
            "row1_search_space": BENCH_SPACE.to_dict(), "row1_first_trial": first_trial(recipe)}


# ---------------------------------------------------------------- the run
ROW_NAMES = {
    1: "callmood: the bundled model's recipe on RAVDESS, spectrogram-native ViT, DeiT-Tiny "
       "AST-style init",
    2: "image pipeline: mel picture resized to 224x224 RGB, DeiT-Tiny, default fine-tuning",
    3: "callmood recipe (row 1's tuned settings) from random initialisation",
    4: "classical: MFCC + deltas + prosody statistics, RBF SVM",
    5: "row 1 + the other corpora as extra training data (not the EmoBox protocol)",
    6: "raw audio: wav2vec2 (tiny, random init) with row 3's recipe",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_shared_option(parser)
    parser.add_argument("--folds", default="1-6", type=parse_folds)
    parser.add_argument("--rows", default="4,1,2,3,5",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--recipe", default=str(harness.RECIPE),
                        help="training settings of rows 1, 3, 5 and 6 (a --params file)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="most epochs of every ViT row (0: the recipe's)")
    parser.add_argument("--patience", type=int, default=0,
                        help="early-stopping patience of every ViT row (0: the recipe's)")
    parser.add_argument("--trials", type=int, default=0,
                        help="Optuna trials per fold before row 1 (0: the recipe as it is)")
    parser.add_argument("--trial-epochs", type=int, default=0,
                        help="epochs per Optuna trial (0: --epochs, and the best trial is "
                             "row 1's model)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16",
                        help="bf16 autocast for the ViT rows (1.8x faster on CPUs with native "
                             "bf16, slower on others: use fp32 there)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0,
                        help="smoke runs only: keep N utterances per actor (stated in the JSON)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: delete the (fold, row) results kept in --cells and the "
                             "Optuna studies under --out")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_ravdess",
                        help="trainings in progress (checkpoints)")
    parser.add_argument("--cells", type=Path, default=harness.RESULTS / "ravdess_cells",
                        help="finished (fold, row) results, committed so a fresh clone "
                             "reuses them")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    recipe = json.loads(Path(args.recipe).read_text())
    args.epochs = args.epochs or recipe.get("epochs", 16)
    args.patience = args.patience or recipe.get("patience", 6)
    if args.fresh:  # kept results and the studies' trials both go
        harness.CellStore(args.cells).clear()
        shutil.rmtree(args.out / "optuna", ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)

    protocol = ravdess_protocol(args.shared)
    utterances = load_corpus("ravdess", args.shared / "data" / "ravdess")
    utterances = per_speaker_limit(utterances, args.limit)
    labels = ordered_labels({u.label for u in utterances})
    args.extra = per_speaker_limit(extra_corpora(args.shared, labels) if 5 in args.rows else [],
                                   args.limit)
    results = {row: {"name": ROW_NAMES[row], "folds": {}} for row in sorted(args.rows)}
    run_started = time.time()
    for fold in args.folds:
        split = make_split(utterances, fold=fold, shared=args.shared, seed=args.seed)
        print(f"fold {fold}: {split.description}", flush=True)
        for row in args.rows:
            print(f" row {row}: {ROW_NAMES[row]}", flush=True)
            cell = load_cell(args, fold, row)
            if cell is None:
                cell = run_cell(split, labels, fold, row, args)
                save_cell(args, fold, row, cell)
            else:
                print("  kept from an earlier run with the same settings", flush=True)
            results[row]["folds"][fold] = cell
            m = cell["metrics"]
            print(f"  UA {m['ua']:.3f} WA {m['wa']:.3f} macro-F1 {m['macro_f1']:.3f}",
                  flush=True)
            write_results(results, protocol, args, time.time() - run_started)


def per_speaker_limit(utterances: list, limit: int) -> list:
    """Smoke runs: every k-th file of each speaker, so every emotion stays represented."""
    if not limit:
        return utterances
    by_speaker: dict[str, list] = {}
    for u in utterances:
        by_speaker.setdefault(u.speaker, []).append(u)
    return [u for files in by_speaker.values()
            for u in files[::max(1, len(files) // limit)][:limit]]


def run_cell(split, labels, fold, row, args) -> dict:
    """Train and test one row on one fold; inference throughput is measured on the first."""
    measure = fold == args.folds[0]
    if row in (1, 3, 6):
        out = callmood_row(split, fold, args, row, args.out / "optuna")
        model = out.pop("model")
        if measure:
            clips = torch.randn(64, model.mel.rows, model.mel.input_frames)
            out["throughput_cpu"] = throughput(
                lambda x: predict_probabilities(model.model, x, model.mel, model.norm,
                                                bf16=args.precision == "bf16"),
                clips, model.mel.clip_seconds)
    elif row == 5:
        out = extra_data_row(split, fold, args, args.extra)
    elif row == 2:
        out = image_row(split, labels, args)
        predict, test_x = out.pop("predict"), out.pop("test_x")
        if measure:
            out["throughput_cpu"] = throughput(predict, test_x[:64], 3.0)
    else:
        out = classical_row(split, labels, args)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def cell_name(fold: int, row: int) -> str:
    return f"fold{fold}-row{row}"


def load_cell(args, fold: int, row: int) -> dict | None:
    """The kept result of (fold, row) if it was made with this run's settings."""
    return harness.CellStore(args.cells).load_if_same(cell_name(fold, row),
                                                      run_settings(args, row))


def save_cell(args, fold: int, row: int, result: dict) -> None:
    harness.CellStore(args.cells).save_with_settings(cell_name(fold, row),
                                                     run_settings(args, row), result)


def write_results(results, protocol, args, wall_s) -> None:
    """The rows run now, and the committed figures of the rows not run in this invocation."""
    kept = harness.read_json(args.out / "ravdess_si.json", {"rows": {}})
    rows = {key: {"settings": kept.get("settings", {}), **row}
            for key, row in kept["rows"].items() if int(key) not in results}
    for row, data in results.items():
        per_fold = [f["metrics"] for f in data["folds"].values()]
        if not per_fold:
            continue
        summary = aggregate_folds(per_fold)
        rows[str(row)] = {
            "name": data["name"], "folds_run": sorted(data["folds"]),
            "settings": run_settings(args, row),
            **{k: round(100 * summary[k], 2) for k in
               ("ua", "ua_std", "wa", "wa_std", "macro_f1", "macro_f1_std", "weighted_f1",
                "weighted_f1_std")},
            "per_class_f1": {k: round(100 * v["f1"], 1) for k, v in summary["per_class"].items()},
            "per_fold": {str(k): {**{m: round(100 * f["metrics"][m], 2) for m in
                                     ("ua", "wa", "macro_f1", "weighted_f1")},
                                  **{x: y for x, y in f.items()
                                     if x not in ("metrics", "throughput_cpu")}}
                         for k, f in data["folds"].items()},
            "mean_train_wall_s": round(float(np.mean([f["train_wall_s"] for f in
                                                      data["folds"].values()])), 1),
            "mean_tune_wall_s": round(float(np.mean([f.get("tune_wall_s", 0) for f in
                                                     data["folds"].values()])), 1),
            **next(({"throughput_cpu": f["throughput_cpu"]} for f in data["folds"].values()
                    if "throughput_cpu" in f), {}),
        }
        if row == 1:
            plot_confusion(np.array(summary["confusion"]), summary["labels"],
                           args.out / "ravdess_si_row1_confusion.png",
                           f"callmood (row 1), mean over folds {sorted(data['folds'])}")
    report = {
        "protocol": protocol["protocol"], "source": protocol["source"],
        "folds": args.folds,
        "machine": harness.machine("torch"),
        "wall_s_this_invocation": round(wall_s, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
        "rows": dict(sorted(rows.items())),
        "published_same_protocol_not_rerun": protocol["published_results_same_protocol"],
    }
    harness.write_json(args.out / "ravdess_si.json", report)
    harness.write_text(args.out / "ravdess_si.md", markdown_table(report))


def _spread(row: dict, key: str) -> str:
    """Mean ± standard deviation over the folds run; a single fold has no spread to show."""
    many = len(row["folds_run"]) > 1
    return f"{row[key]:.1f}" + (f" ± {row[key + '_std']:.1f}" if many else "")


def markdown_table(report) -> str:
    lines = ["| system | folds | UA % | WA % | macro-F1 % | weighted-F1 % | "
             "train (+ tuning) s/fold | CPU × real time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["rows"].values():
        tp = row.get("throughput_cpu", {}).get("x_real_time", "")
        tune = f" (+ {row['mean_tune_wall_s']:.0f})" if row["mean_tune_wall_s"] else ""
        lines.append(f"| {row['name']} | {','.join(map(str, row['folds_run']))} | "
                     f"{_spread(row, 'ua')} | {_spread(row, 'wa')} | "
                     f"{_spread(row, 'macro_f1')} | "
                     f"{row['weighted_f1']:.1f} | {row['mean_train_wall_s']:.0f}"
                     f"{tune} | {tp} |")
    for name, figures in report["published_same_protocol_not_rerun"].items():
        lines.append(f"| *published (EmoBox), not re-run:* {name} | 1-6 | {figures['UA']:.1f} | "
                     f"{figures['WA']:.1f} | {figures['macro_F1']:.1f} | | | |")
    classes = list(next(iter(report["rows"].values()))["per_class_f1"])
    lines += ["", "Per-class F1 %, mean over the folds run:", "",
              f"| row | {' | '.join(classes)} |", "| --- " * (len(classes) + 1) + "|"]
    for key, row in report["rows"].items():
        f1 = [f"{row['per_class_f1'][c]:.1f}" for c in classes]
        lines.append(f"| {key} | {' | '.join(f1)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
