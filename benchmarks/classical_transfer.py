"""Leave-one-corpus-out with a classical model: does a linear model of a few statistics
per utterance transfer to an unseen corpus better or worse than the ViT, and does
normalising each corpus or speaker by its own statistics help it?

The features are RAVDESS row 4's (benchmarks/baselines.py): MFCC + deltas, energy and
pitch statistics; the classifier is multinomial logistic regression (a linear model a
model folder could carry as weights). Rows, each trained on every corpus but the held-out
one, balanced by corpus and class as the ViT's rows are:
  k          features standardised over the training corpora;
  k-corpus   every corpus standardised by its own mean and spread, the held-out corpus
             too (by its unlabelled statistics: the classic cross-corpus normalisation,
             Schuller et al. 2010);
  k-speaker  every speaker standardised by their own statistics;
  k-speaker-calls(-skewed, -shrunk)  k-speaker's model, each held-out speaker read in
             pseudo-calls (random, or with a skewed emotion mix; -shrunk: each call's
             statistics steadied by the held-out corpus's pooled ones).
Nothing is tuned (scikit-learn's default regularisation). Figures are bench_transfer's:
UA and macro-F1 with the argmax restricted to the held-out corpus's classes, on clean
audio, beside the ViT rows named by --vit, and for the held-out corpora of the ViT models
given with --average-with, the two models' probabilities averaged.

An acted corpus gives every speaker every emotion in equal measure, which flatters
per-speaker statistics. `--calls DIR` (a split of benchmarks/callbench/) measures them as
the product would meet them: the customer utterances of the calls, cut where the truth
puts them, each call's customer channel standardised over that call, scored by k-speaker
trained on every corpus less the benchmark's voices, by the ViT model of --model, and by
the two averaged with each classical weight of WEIGHTS (choose it on dev, read it on
test): utterance UA and the customer negative share's error per call.

    .venv/bin/python benchmarks/classical_transfer.py [--held-out ...] [--vit TABLE.json:ROW]
    .venv/bin/python benchmarks/classical_transfer.py --calls runs/callbench/dev

Features are computed once per corpus and kept in --work; writes
benchmarks/results/classical_transfer.{json,md} (classical_calls_<split>.{json,md}).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from callmood.model.folder import default_model_dir, load_model_folder
from callmood.progress import progress
from callmood.signal.audio import load_mono
from callmood.signal.features import MelConfig
from callmood.training.cache import condition_variant, extract
from callmood.training.evaluate import corpus_figures, score_utterances

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402
from baselines import classical_features  # noqa: E402
from bench_transfer import CORPORA, load_all  # noqa: E402
from eval_default_model import loco_row  # noqa: E402
from valence_readout import call_utterances, share_errors  # noqa: E402

CALL_TURNS = 26  # about a customer's mean number of turns per call in the call benchmark
SKEW = 0.5  # Dirichlet concentration of a pseudo-call's emotion mix (lower: more skewed)
ROWS = {"k": "classical (MFCC + prosody statistics, logistic regression), standardised "
             "over training",
        "k-corpus": "classical, every corpus standardised by its own statistics",
        "k-speaker": "classical, every speaker standardised by their own statistics",
        "k-speaker-calls": "k-speaker, the held-out speakers standardised per pseudo-call "
                           f"(their utterances dealt at random into groups of {CALL_TURNS})",
        "k-speaker-calls-skewed": "k-speaker, the held-out speakers standardised per "
                                  f"pseudo-call of {CALL_TURNS} whose emotion mix is drawn "
                                  "from a Dirichlet of concentration --skew",
        "k-speaker-calls-shrunk": "k-speaker-calls-skewed, each pseudo-call's statistics "
                                  "shrunk towards the held-out corpus's pooled ones "
                                  f"(weight n / (n + {CALL_TURNS}) for n turns)"}
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the classical model's share of an average


def corpus_features(name: str, utterances: list, work: Path, cache_dir, workers: int,
                    channel: str = "clean") -> np.ndarray:
    """classical_features of every utterance of one corpus, in order, heard through
    `channel` (a condition of training/channel.py), kept in `work`."""
    digest = hashlib.sha1("|".join(u.path for u in utterances).encode()).hexdigest()[:12]
    kept = work / (f"features-{name}-{digest}.npy" if channel == "clean" else
                   f"features-{name}-{channel}-{digest}.npy")
    if kept.is_file():
        return np.load(kept)
    variant = condition_variant(channel)
    features = extract(utterances, MelConfig(), (variant,), cache_dir, workers)
    if features.failures:
        raise SystemExit(f"{name}: {len(features.failures)} unreadable files, the first "
                         f"{features.failures[0]}")
    mels = features.mels[variant.name]
    rows = [classical_features(mel, variant.audio(load_mono(u.path, 16000), u, 16000))
            for mel, u in zip(progress(mels, desc=f"{name}: classical features", unit="file"),
                              utterances, strict=True)]
    work.mkdir(parents=True, exist_ok=True)
    np.save(kept, np.stack(rows))
    return np.load(kept)


def standardise(x: np.ndarray, groups: np.ndarray, shrink: float = 0.0) -> np.ndarray:
    """Every group's rows by the group's own mean and spread; with `shrink` > 0, a group of
    n rows by its statistics weighted n / (n + shrink) against those of all of `x` (a
    short call's own statistics are partly its emotions, so the pool steadies them)."""
    out = np.empty_like(x)
    pooled_mean, pooled_var = x.mean(0), x.var(0)
    for group in np.unique(groups):
        rows = groups == group
        own = rows.sum() / (rows.sum() + shrink)
        mean = own * x[rows].mean(0) + (1 - own) * pooled_mean
        var = own * x[rows].var(0) + (1 - own) * pooled_var
        out[rows] = (x[rows] - mean) / (np.sqrt(var) + 1e-8)
    return out


def balance_weights(corpus: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Every corpus weighs the same, and within it every class it has."""
    weights = np.empty(len(label))
    for c in np.unique(corpus):
        in_corpus = corpus == c
        classes = np.unique(label[in_corpus])
        for k in classes:
            rows = in_corpus & (label == k)
            weights[rows] = 1.0 / (len(classes) * rows.sum())
    return weights * len(label) / weights.sum()


def fit(x: np.ndarray, y: np.ndarray, corpus: np.ndarray):
    """Logistic regression at scikit-learn's default strength (C = 1; nothing is chosen
    on the corpora), balanced by corpus and class."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=3000).fit(x, y, sample_weight=balance_weights(corpus, y))


def probabilities(model, x: np.ndarray, n_labels: int) -> np.ndarray:
    """One column per label index (0 for a label the model never saw)."""
    p = np.zeros((len(x), n_labels))
    p[:, model.classes_] = model.predict_proba(x)
    return p


def pseudo_calls(speaker: np.ndarray, y: np.ndarray, size: int, alpha: float | None,
                 seed: int = 0) -> np.ndarray:
    """A group per utterance: each speaker's utterances dealt into groups of `size` (the
    last smaller), at random (alpha None) or with each group's emotion mix drawn from
    Dirichlet(alpha) over the speaker's classes, as a call's script skews it."""
    rng = np.random.default_rng(seed)
    groups = np.empty(len(y), dtype=object)
    for who in np.unique(speaker):
        left = {k: list(rng.permutation(np.flatnonzero((speaker == who) & (y == k))))
                for k in np.unique(y[speaker == who])}
        classes = sorted(left)
        call = 0
        while any(left.values()):
            mix = rng.dirichlet([alpha] * len(classes)) if alpha else None
            for _ in range(size):
                weights = np.array([len(left[k]) if mix is None else mix[i] * bool(left[k])
                                    for i, k in enumerate(classes)], dtype=float)
                if weights.sum() == 0:  # the mix's classes are used up: any left
                    weights = np.array([len(left[k]) for k in classes], dtype=float)
                if weights.sum() == 0:
                    break
                pick = classes[rng.choice(len(classes), p=weights / weights.sum())]
                groups[left[pick].pop()] = f"{who}/{call}"
            call += 1
    return groups


def normalised(row: str, table: dict) -> dict[str, np.ndarray]:
    """Every corpus's features as `row` normalises them (row k: as they are; the
    pseudo-call rows: per speaker, as their training corpora are)."""
    if row == "k-corpus":
        return {n: standardise(t["x"], np.zeros(len(t["x"]))) for n, t in table.items()}
    if row.startswith("k-speaker"):
        return {n: standardise(t["x"], t["speaker"]) for n, t in table.items()}
    return {n: t["x"] for n, t in table.items()}


def train_on(row: str, names: list[str], table: dict, keep=None):
    """A row's model trained on the corpora `names` (of each, the rows `keep[name]` where
    given); returns it and the function that prepares other features for it."""
    x = normalised(row, table)
    rows = {n: keep[n] if keep and n in keep else slice(None) for n in names}
    x_train = np.concatenate([x[n][rows[n]] for n in names])
    y_train = np.concatenate([table[n]["y"][rows[n]] for n in names])
    corpus = np.concatenate([np.full(len(table[n]["y"][rows[n]]), n) for n in names])
    if row == "k":  # standardised over the training corpora, other features by the same
        mean, std = x_train.mean(0), x_train.std(0) + 1e-8
        x_train = (x_train - mean) / std
        return fit(x_train, y_train, corpus), lambda v: (v - mean) / std
    return fit(x_train, y_train, corpus), lambda v: v


def held_out_features(row: str, corpus: dict, prepare, skew: float = SKEW) -> np.ndarray:
    """The held-out corpus's features (as heard through --channel) normalised as `row`
    reads them; `prepare` is train_on's, `skew` the skewed pseudo-calls' Dirichlet
    concentration."""
    test = {**corpus, "x": corpus.get("x_heard", corpus["x"])}
    if row.startswith("k-speaker-calls"):
        alpha = None if row == "k-speaker-calls" else skew
        return standardise(test["x"], pseudo_calls(test["speaker"], test["y"], CALL_TURNS,
                                                   alpha),
                           shrink=CALL_TURNS if row.endswith("shrunk") else 0.0)
    return prepare(normalised(row, {"held_out": test})["held_out"])


def run_row(row: str, held_out: str, table: dict, labels: list[str], skew: float = SKEW,
            models: dict | None = None) -> dict:
    """One cell; `models` keeps the trained models by (normalisation, held-out corpus), so
    that the pseudo-call rows reuse k-speaker's instead of training it again."""
    train = [n for n in table if n != held_out]
    started = time.time()
    trained_as = "k-speaker" if row.startswith("k-speaker") else row
    models = {} if models is None else models
    if (trained_as, held_out) not in models:
        models[trained_as, held_out] = train_on(trained_as, train, table)
    model, prepare = models[trained_as, held_out]
    p = probabilities(model, held_out_features(row, table[held_out], prepare, skew),
                      len(labels))
    cell = corpus_figures(table[held_out]["y"], p, labels)
    return cell | {"row": row, "held_out": held_out, "trained_on": train,
                   "fit_s": round(time.time() - started, 1), "probs": p}


def averaged(cell: dict, vit_probs: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    """UA of the classical and ViT probabilities averaged, for each classical weight."""
    return {str(w): corpus_figures(y, w * cell["probs"] + (1 - w) * vit_probs,
                                   labels)["ua_restricted"] for w in WEIGHTS}


def heard_through(row: dict, channel: str) -> dict[str, float]:
    """A ViT row's restricted UA per held-out corpus through `channel`, where its cells
    were scored so (loco_row gives the clean figures)."""
    cells = harness.read_json(Path(row["table"]))["cells"]
    return {corpus: cell["channels"][channel]["ua_restricted"] for corpus in row["ua"]
            if channel in (cell := cells[f"{row['row']}-{corpus}"]).get("channels", {})}


def held_out_of(model) -> str:
    """The corpus a leave-one-corpus-out model never heard (from its card)."""
    heard = model.card.training.get("corpora", {})
    unheard = [n for n in CORPORA if n not in heard]
    if len(unheard) != 1:
        raise ValueError(f"{model.name}: trained on {sorted(heard)}, not on all corpora "
                         "but one")
    return unheard[0]


# ---------------------------------------------------------------- the calls
def without_call_voices(data: dict, split_file: Path) -> dict[str, np.ndarray]:
    """Per corpus, which utterances are not spoken by a voice of the call benchmark (the
    speakers of every split in its split.json)."""
    split = json.loads(split_file.read_text())
    voices = {s for part in split["speakers"].values() for s in part}
    return {n: np.array([u.speaker not in voices for u in part])
            for n, part in data.items()}


def calls_check(args, table: dict, data: dict, table_labels: list[str]) -> dict:
    """k-speaker (trained on `table`'s corpora less the benchmark's voices), the ViT of
    --model and their averages on the customer utterances of --calls; see the docstring."""
    model = load_model_folder(args.model)
    labels = model.labels
    keep = without_call_voices(data, args.calls.parent / "split.json")
    classical, _ = train_on("k-speaker", list(table), table, keep)
    cut = call_utterances(args.calls, 10 ** 6, 16000, args.work)
    utterances = [u for u, _, _ in cut if u.label in labels]
    x = corpus_features(f"calls-{args.calls.name}", utterances, args.work, args.cache_dir,
                        args.workers)
    x = standardise(x, np.array([u.speaker for u in utterances]))  # one channel of a call
    label_id = {label: i for i, label in enumerate(labels)}
    y = np.array([label_id[u.label] for u in utterances])
    scored = score_utterances(model, utterances, "clean", args.cache_dir, args.workers)
    if [u.path for u in scored.utterances] != [u.path for u in utterances]:
        raise SystemExit(f"{args.model} could not read every cut utterance")
    p_classical = probabilities(classical, x, len(table_labels))[
        :, [table_labels.index(label) for label in labels]]
    negative = {label: model.card.valence[label] < 0 for label in labels}
    negative_columns = [label_id[label] for label in labels if negative[label]]
    by_weight = {}
    for w in WEIGHTS:
        p = w * p_classical + (1 - w) * scored.probs
        errors = share_errors(utterances, cut, negative,
                              {"negative": p[:, negative_columns].sum(1)})
        by_weight[str(w)] = {"utterance_ua": corpus_figures(y, p, labels)["ua_restricted"],
                             "share_error_points": errors["negative"]}
    return {"calls": str(args.calls), "split": args.calls.name, "model": str(args.model),
            "utterances": len(utterances), "calls_scored": errors["calls"],
            "by_classical_weight": by_weight,
            "machine": harness.machine("scikit-learn", "torch")}


def calls_markdown(report: dict) -> str:
    lines = [f"Customer utterances of {report['calls_scored']} calls of {report['calls']} "
             f"({report['utterances']} utterances), cut at the truth's times; the ViT is "
             f"{report['model']}.", "",
             "| classical weight | utterance UA % | customer negative share error, points |",
             "| --- | --- | --- |"]
    for w, figures in report["by_classical_weight"].items():
        name = {"0.0": "0 (the ViT alone)", "1.0": "1 (k-speaker alone)"}.get(w, w)
        lines.append(f"| {name} | {100 * figures['utterance_ua']:.1f} | "
                     f"{figures['share_error_points']:.1f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the table
def markdown(report: dict) -> str:
    rows, vit = list(report["rows"]), report.get("vit", {})
    averages = report.get("averaged", {})
    lines = ["| held-out corpus | " + " | ".join(f"{r} UA / macro-F1 %" for r in rows)
             + "".join(f" | ViT {name} UA %" for name in vit)
             + (" | k-speaker and ViT averaged (classical weight 0.5) UA %" if averages
                else "") + " |",
             "| --- |" + " --- |" * (len(rows) + len(vit) + bool(averages))]
    for corpus in report["corpora"]:
        cells = [report["cells"].get(f"{r}-{corpus}") for r in rows]
        lines.append(f"| {corpus} | " + " | ".join(
            "not run" if c is None else
            f"{100 * c['ua_restricted']:.1f} / {100 * c['macro_f1_restricted']:.1f}"
            for c in cells) + "".join(
            f" | {100 * v['per_corpus'][corpus]:.1f}" if corpus in v["per_corpus"] else " | "
            for v in vit.values())
            + (f" | {100 * averages[corpus]['0.5']:.1f}" if corpus in averages else
               " | " if averages else "") + " |")
    means = []
    for r in rows:
        done = [report["cells"][f"{r}-{c}"]["ua_restricted"] for c in report["corpora"]
                if f"{r}-{c}" in report["cells"]]
        means.append(f"{100 * np.mean(done):.1f} ({len(done)})" if done else "")
    lines.append("| mean (corpora) | " + " | ".join(means) + "".join(
        f" | {100 * np.mean(list(v['per_corpus'].values())):.1f} ({len(v['per_corpus'])})"
        for v in vit.values()) + (" | " if averages else "") + " |")
    lines.append("")
    lines += [f"- {r}: {ROWS[r]}" + (f" ({report['skew']})" if r.endswith("skewed") else "")
              for r in rows]
    lines += [f"- ViT {name}: {v['table']}" for name, v in vit.items()]
    if averages:
        lines.append("- averaged: k-speaker's and a ViT model's probabilities (the models "
                     "are named in the JSON's averaged_with, and every classical weight's "
                     "UA in averaged)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_shared_option(parser)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--held-out", default=",".join(CORPORA))
    parser.add_argument("--vit", action="append", default=[],
                        help="a ViT row to show beside, TABLE.json:ROW (repeatable; "
                             "default: row c of benchmarks/results/transfer.json)")
    parser.add_argument("--average-with", type=Path, action="append", default=[],
                        metavar="MODEL",
                        help="a ViT model folder of bench_transfer trained on all corpora "
                             "but one: that corpus is also scored with its probabilities and "
                             "k-speaker's averaged (repeatable)")
    parser.add_argument("--channel", default="clean",
                        help="the held-out corpus heard through this condition of "
                             "training/channel.py (e.g. unseen_narrow; training stays clean); "
                             "writes classical_transfer_<channel>.{json,md}")
    parser.add_argument("--skew", type=float, default=SKEW,
                        help="the Dirichlet concentration of the skewed and shrunk rows' "
                             "pseudo-calls (0.1-0.2 gives the call benchmark's 2.7 emotions "
                             "per customer, the commonest 65 %% of turns)")
    parser.add_argument("--calls", type=Path, default=None,
                        help="a split of the call benchmark (e.g. runs/callbench/dev)")
    parser.add_argument("--model", type=Path, default=default_model_dir(),
                        help="the ViT model the calls are scored with")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work", type=Path,
                        default=harness.ROOT / "runs" / "classical_transfer")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    rows = args.rows.split(",")
    if unknown := sorted(set(rows) - set(ROWS)):
        parser.error(f"--rows: unknown {', '.join(unknown)}; the rows are {', '.join(ROWS)}")
    if args.calls and not (args.calls / "ground_truth.csv").is_file():
        parser.error(f"--calls {args.calls}: no call benchmark split there (run "
                     "benchmarks/callbench/generate.py)")
    vit = {}
    for spec in args.vit or [f"{harness.RESULTS / 'transfer.json'}:c"]:
        try:
            row = loco_row(spec)
        except ValueError as error:
            parser.error(f"--vit {spec}: {error}")
        vit[f"{Path(row['table']).parent.name}/{Path(row['table']).name}:{row['row']}"] = {
            "table": spec, "per_corpus": row["ua"] if args.channel == "clean" else
            heard_through(row, args.channel)}
    data = load_all(args.shared, list(CORPORA))
    labels = sorted({u.label for part in data.values() for u in part})
    label_id = {label: i for i, label in enumerate(labels)}
    table = {name: {"x": corpus_features(name, part, args.work, args.cache_dir, args.workers),
                    "y": np.array([label_id[u.label] for u in part]),
                    "speaker": np.array([u.speaker for u in part])}
             for name, part in data.items()}
    if args.channel != "clean":
        for name in args.held_out.split(","):
            table[name]["x_heard"] = corpus_features(name, data[name], args.work,
                                                     args.cache_dir, args.workers, args.channel)
    if args.calls:
        report = calls_check(args, table, data, labels)
        name = f"classical_calls_{args.calls.name}"
        harness.write_json(args.out / f"{name}.json", report)
        harness.write_text(args.out / f"{name}.md", calls_markdown(report))
        print(calls_markdown(report))
        return
    average_with, averaged_with = {}, {}
    for path in args.average_with:
        try:
            model = load_model_folder(path)
            corpus = held_out_of(model)
        except ValueError as error:
            parser.error(f"--average-with {path}: {error}")
        if corpus in average_with:
            parser.error(f"--average-with: {averaged_with[corpus]} and {path} both hold out "
                         f"{corpus}")
        average_with[corpus], averaged_with[corpus] = model, str(path)
    report = {"corpora": list(CORPORA), "channel": args.channel, "skew": args.skew,
              "rows": rows,
              "labels": labels, "cells": {}, "vit": vit, "averaged": {},
              "averaged_with": averaged_with,
              "machine": harness.machine("scikit-learn")}
    models = {}
    for held_out in args.held_out.split(","):
        for row in rows:
            cell = run_row(row, held_out, table, labels, args.skew, models)
            if row == "k-speaker" and (model := average_with.get(held_out)) is not None:
                scored = score_utterances(model, data[held_out], args.channel,
                                          args.cache_dir, args.workers)
                if [u.path for u in scored.utterances] != [u.path for u in data[held_out]]:
                    raise SystemExit(f"{averaged_with[held_out]} could not read every "
                                     f"utterance of {held_out}")
                report["averaged"][held_out] = averaged(
                    cell, scored.probs[:, [model.labels.index(label) for label in labels]],
                    table[held_out]["y"], labels)
            report["cells"][f"{row}-{held_out}"] = {k: v for k, v in cell.items()
                                                    if k != "probs"}
            print(f"row {row}, held-out {held_out}: restricted UA "
                  f"{100 * cell['ua_restricted']:.1f}", flush=True)
    name = "classical_transfer" + ("" if args.channel == "clean" else f"_{args.channel}")
    harness.write_json(args.out / f"{name}.json", report)
    harness.write_text(args.out / f"{name}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
