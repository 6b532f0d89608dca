"""Cross-corpus transfer: leave one corpus out, train on the others, test on all of it.

Rows, each trained once per held-out corpus with the same recipe and budget:
  a  today's default-model recipe: RAVDESS and EmoDB only (whichever of the two is not
     held out), no channel augmentation;
  b  all the other corpora, no channel augmentation;
  c  all the other corpora with the channel augmentation of training/channel.py;
  si all corpora, speaker-independent: row c's recipe on K speaker-grouped folds over the
     union of every corpus (--si-folds), so every speaker is tested once by a model that
     never heard them; a corpus's figures pool its speakers' predictions over the folds;
and candidate recipes (benchmarks/transfer_rows.json): a row a, b or c with some
training settings changed (`{"c-warp": {"like": "c", "set": {"augment.frequency_warp":
0.1}, "description": "..."}}`), so that a recipe an ablation favours is tested on every
held-out corpus beside the rows it would replace.

Per cell: UA and macro-F1 over the classes the held-out corpus has (argmax restricted to
them) and open (over all labels), neutral recall, the confusion matrix, and chance level
(1 / classes). Training data are balanced by corpus and class (`balance: corpus`) and each
example's loss weighs only its corpus's classes. Validation speakers come from the
training corpora (10 % of each corpus's speakers); the held-out corpus is never looked at
before its test.

    .venv/bin/python benchmarks/bench_transfer.py [--rows a,b,c,si,c-warp] [--held-out ased,...]
        [--corpora ...] [--epochs N] [--epoch-size N] [--si-folds K] [--max-per-corpus N]
        [--candidates FILE] [--device cuda] [--report]

Resumable: each finished cell is kept in --cells (default benchmarks/results/transfer_cells,
committed, so a fresh clone reuses them; a cell is reused only with the same settings), and
an unfinished training continues from its checkpoint in --work. Writes
benchmarks/results/transfer.{json,md} and a transfer_row_<row>_confusion.png per row with
every cell finished so far, whichever invocation ran it (so rows can run side by side);
--report only rewrites them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from callmood.model.folder import CARD, load_model_folder
from callmood.training.checkpoint import has_checkpoint
from callmood.training.corpora.registry import load_corpus
from callmood.training.evaluate import (
    corpus_figures,
    held_out_corpus_metrics,
    plot_confusion_grid,
    score_utterances,
)
from callmood.training.labels import apply_mapping, parse_mapping
from callmood.training.splits import make_split
from callmood.training.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

CORPORA = ("ravdess", "emodb", "ased", "nemo", "kored", "emovo", "tess")
ROWS = {"a": "RAVDESS + EmoDB (today's recipe), no channel augmentation",
        "b": "all other corpora, no channel augmentation",
        "c": "all other corpora + channel augmentation",
        "si": "all corpora + channel augmentation, speaker-independent folds over the union"}
CANDIDATES = Path(__file__).resolve().parent / "transfer_rows.json"


# what every row shares (recipe()): a candidate that changed them would not be comparable
SHARED_BY_EVERY_ROW = ("init", "epochs", "epoch_size", "seed", "precision", "device",
                       "balance", "mask_absent_classes")


def load_candidates(path: Path, required: bool = False) -> dict[str, dict]:
    """The candidate rows of `path` ({} if it is missing and not `required`), checked for
    their form: each is like row a, b or c, has a description, and sets settings other than
    those every row shares (check_candidates() checks their values)."""
    if not path.is_file():
        if required:
            raise ValueError(f"{path}: no such file")
        return {}
    try:
        candidates = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(candidates, dict):
        raise ValueError(f"{path}: expected an object of rows by name")
    for name, row in candidates.items():
        problem = None
        if name in ROWS or not name.replace("-", "").replace("_", "").isalnum():
            problem = "the name is taken or not a plain name"
        elif not isinstance(row, dict) or row.get("like") not in ("a", "b", "c") \
                or not row.get("description"):
            problem = 'needs "like": "a", "b" or "c" and a "description"'
        elif unknown := sorted(set(row) - {"like", "set", "description"}):
            problem = f"unknown keys {unknown}"
        elif not isinstance(row.get("set", {}), dict):
            problem = '"set" must be an object of training settings'
        elif shared := sorted(set(row.get("set", {})) & set(SHARED_BY_EVERY_ROW)):
            problem = f"sets {shared}, which every row shares (the command line sets them)"
        if problem:
            raise ValueError(f"{path}: row {name!r}: {problem}")
    return candidates


def check_candidates(args: argparse.Namespace, path: Path) -> None:
    """Each candidate's recipe built with this run's options: a wrong setting or value is
    a ValueError naming `path` and the row, before anything trains."""
    for name in args.candidates:
        try:
            recipe(args, name)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: row {name!r}: {error}") from None


def row_names(args: argparse.Namespace) -> dict[str, str]:
    """Every row's description: the fixed rows, then the candidates."""
    return ROWS | {name: row["description"] for name, row in args.candidates.items()}


def base_row(args: argparse.Namespace, row: str) -> str:
    """The fixed row a candidate is like (a fixed row is its own)."""
    return args.candidates[row]["like"] if row in args.candidates else row


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
    if base_row(args, row) in ("a", "b"):
        values.setdefault("augment", {})["channel_p"] = 0.0
    config = TrainConfig().with_overrides(values)
    return config.with_overrides(args.candidates[row].get("set", {})) \
        if row in args.candidates else config


def cell_key(args: argparse.Namespace, row: str, held_out: str) -> str:
    """`held_out`: a corpus, or for row si the fold ("fold3of5")."""
    return _digest({"row": row, "held_out": held_out, "corpora": args.corpora,
                    **_training_settings(args, row)})


def _training_settings(args: argparse.Namespace, row: str) -> dict:
    """The cell's training settings as its key holds them: the settings added after the
    cells were kept are left out where they are off, so that adding one keeps them."""
    config = harness.without_added_later(recipe(args, row).to_dict())
    config["init"] = Path(config["init"]).name  # the same cell wherever the checkout lies
    return {"config": config, "max_per_corpus": args.max_per_corpus}


def _digest(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()
                        ).hexdigest()[:12]


def training_folder(args: argparse.Namespace, row: str, train_names: list[str]) -> Path:
    """Where a cell's model trains: named by what it learns from, so that the cells of row a
    that hold out ASED, nEMO, KorEmo, EMOVO or TESS (all trained on RAVDESS + EmoDB, with
    validation speakers drawn from those two alone) share one training."""
    key = _digest({"row": row, "trained_on": train_names, **_training_settings(args, row)})
    return args.work / f"{row}-on-{'+'.join(train_names)}-{key}"


def has_finished_model(folder: Path) -> bool:
    """Whether `folder` holds a finished training's model (not one still to resume)."""
    return (folder / CARD).is_file() and not has_checkpoint(folder)


def training_corpora(row: str, held_out: str, names: list[str]) -> list[str]:
    """What the fixed row `row` (a candidate: its base_row) trains on."""
    if row == "a":
        return [n for n in ("ravdess", "emodb") if n != held_out]
    return [n for n in names if n != held_out]


def run_cell(args, row: str, held_out: str, data: dict[str, list]) -> dict:
    """Train without `held_out` (resuming a stopped training) and test on all of it."""
    train_names = training_corpora(base_row(args, row), held_out, args.corpora)
    train_utts = [u for n in train_names
                  for u in subsample(data[n], args.max_per_corpus, args.seed)]
    test = data[held_out]
    split = make_split(train_utts + test, test_speakers=sorted({u.speaker for u in test}),
                       shared=args.shared, seed=args.seed)
    out = training_folder(args, row, train_names)
    started = time.time()
    trains = not has_finished_model(out)
    if trains:
        train(split, recipe(args, row), out, label_map=parse_mapping("calls", []),
              cache_dir=args.cache_dir, resume=has_checkpoint(out))
    model = load_model_folder(out)
    cell = held_out_corpus_metrics(model, test, args.cache_dir, args.workers)
    return add_channels(args, cell, model, test) | {
        "row": row, "held_out": held_out, "trained_on": train_names,
        "train_utterances": len(split.train), "train_wall_s": round(time.time() - started, 1),
        "training_shared_with_an_earlier_cell": not trains,
        "best_epoch": model.card.training["best_epoch"],
        "epochs_run": model.card.training["epochs_run"]}


def add_channels(args, cell: dict, model, test: list) -> dict:
    """The cell's figures with the held-out corpus heard through each of --channels too: a
    call is not a studio take, and row a never heard a telephone line."""
    channels = cell.setdefault("channels", {})
    for name in args.channels:
        if name not in channels:
            figures = held_out_corpus_metrics(model, test, args.cache_dir, args.workers, name)
            channels[name] = {k: v for k, v in figures.items() if k != "labels"}
    return cell


def complete_channels(args, row: str, held_out: str, cell: dict, data: dict) -> bool:
    """Score a kept cell through the --channels it lacks, if its model is still here;
    whether it changed."""
    out = training_folder(args, row, training_corpora(base_row(args, row), held_out,
                                                      args.corpora))
    missing = [c for c in args.channels if c not in cell.get("channels", {})]
    if not missing or not has_finished_model(out):
        return False
    print(f"  scoring {held_out} through {', '.join(missing)}", flush=True)
    add_channels(args, cell, load_model_folder(out), data[held_out])
    return True


def run_si_fold(args, fold: int, data: dict[str, list]) -> dict:
    """Row si, one fold: train on the other folds' speakers of every corpus, then keep the
    test speakers' utterance probabilities per corpus (pooled over the folds later)."""
    union = [u for n in args.corpora for u in subsample(data[n], args.max_per_corpus, args.seed)]
    split = make_split(union, fold=fold, n_folds=args.si_folds, seed=args.seed)
    out = args.work / f"si-{si_fold(args, fold)}"
    started = time.time()
    train(split, recipe(args, "si"), out, label_map=parse_mapping("calls", []),
          cache_dir=args.cache_dir, resume=has_checkpoint(out))
    model = load_model_folder(out)
    per_corpus = {}
    for name in args.corpora:
        test = [u for u in split.test if u.corpus == name and u.label in model.labels]
        if test:
            scored = score_utterances(model, test, cache_dir=args.cache_dir,
                                      workers=args.workers)
            per_corpus[name] = {"targets": scored.targets.tolist(),
                                "probs": np.round(scored.probs, 5).tolist()}
    return {"fold": fold, "folds": args.si_folds, "labels": model.labels,
            "test_speakers": len({u.speaker for u in split.test}),
            "train_utterances": len(split.train), "per_corpus": per_corpus,
            "train_wall_s": round(time.time() - started, 1),
            "best_epoch": model.card.training["best_epoch"]}


def si_fold(args: argparse.Namespace, fold: int) -> str:
    """Row si's name for a fold, in its work folder and kept cell ("fold3of5")."""
    return f"fold{fold}of{args.si_folds}"


def pool_si_folds(folds: list[dict], corpora: list[str]) -> dict[str, dict]:
    """Per corpus, the figures of every fold's predictions on its speakers together."""
    cells = {}
    for name in corpora:
        parts = [f["per_corpus"][name] for f in folds if name in f["per_corpus"]]
        if parts:
            targets = np.concatenate([p["targets"] for p in parts])
            probs = np.concatenate([np.array(p["probs"]) for p in parts])
            cells[f"si-{name}"] = corpus_figures(targets, probs, folds[0]["labels"]) | {
                "row": "si", "held_out": name, "folds": len(parts)}
    return cells


def markdown(results: dict) -> str:
    if not results["rows"]:  # a table begun at new settings, before its first cell
        return "No cell is finished with these settings yet.\n"
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
            folds = f", pooled over {results['si_folds_done']} folds" if r == "si" else ""
            name = (ROWS | results.get("row_names", {}))[r]
            lines.append(f"\nRow {r} ({name}{folds}): mean restricted UA "
                         f"{100 * np.mean(done):.1f} over {len(done)} held-out corpora.")
    return "\n".join(lines + channel_table(results)) + "\n"


def channel_table(results: dict) -> list[str]:
    """Restricted UA of each cell with the held-out corpus clean and through each channel,
    and per row the means over the corpora that have every condition."""
    conditions = ["clean"] + sorted({name for c in results["cells"].values()
                                     for name in c.get("channels", {})})
    # row si scores its folds clean only: a row that never heard a line has no column here
    rows = [r for r in results["rows"] if any(
        results["cells"].get(f"{r}-{corpus}", {}).get("channels")
        for corpus in results["corpora"])]
    if len(conditions) == 1:
        return []

    def ua(cell: dict, condition: str) -> float | None:
        figures = cell if condition == "clean" else cell.get("channels", {}).get(condition)
        return None if figures is None else 100 * figures["ua_restricted"]

    lines = ["", "Heard through a channel (restricted UA %, " + " / ".join(conditions) + "; "
             "– where the cell's model was gone before the channel was added):", "",
             "| held-out corpus | " + " | ".join(f"row {r}" for r in rows) + " |",
             "| --- |" + " --- |" * len(rows)]
    for corpus in results["corpora"]:
        row = []
        for cell in (results["cells"].get(f"{r}-{corpus}") for r in rows):
            row.append("" if cell is None else " / ".join(
                "–" if (x := ua(cell, c)) is None else f"{x:.1f}" for c in conditions))
        lines.append(f"| {corpus} | " + " | ".join(row) + " |")
    # rows compared on the same corpora: those where every row has every condition
    common = [corpus for corpus in results["corpora"] if all(
        (cell := results["cells"].get(f"{r}-{corpus}")) is not None
        and all(ua(cell, c) is not None for c in conditions) for r in rows)]
    if common:
        means = [" / ".join(f"{x:.1f}" for x in np.mean(
            [[ua(results["cells"][f"{r}-{corpus}"], c) for c in conditions]
             for corpus in common], axis=0)) for r in rows]
        lines.append(f"| mean over {', '.join(common)} | " + " | ".join(means) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_shared_option(parser)
    parser.add_argument("--rows", default="a,b,c")
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--report", action="store_true",
                        help="only write the table of the cells finished so far")
    parser.add_argument("--held-out", default="",
                        help="the held-out corpora to run now (default: every one of --corpora)")
    parser.add_argument("--params", default=str(harness.RECIPE))
    parser.add_argument("--init", default=None,
                        help=f"default: the shared DeiT-Tiny ({harness.DEIT})")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--epoch-size", type=int, default=1500,
                        help="examples per epoch, the same in every cell: every row gets the "
                             "same number of training steps whatever its data")
    parser.add_argument("--max-per-corpus", type=int, default=0,
                        help="train on at most N utterances of each corpus (0: all)")
    parser.add_argument("--si-folds", type=int, default=5,
                        help="speaker-grouped folds over the union (row si)")
    parser.add_argument("--channels", default="telephone,unseen_narrow",
                        help="conditions of training/channel.py the held-out corpus is also "
                             "heard through (unseen_*: outside every training range)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work", type=Path, default=harness.ROOT / "runs" / "bench_transfer",
                        help="trainings in progress (checkpoints)")
    parser.add_argument("--cells", type=Path,
                        default=harness.RESULTS / "transfer_cells",
                        help="finished cells, one JSON each")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    parser.add_argument("--candidates", type=Path, default=None,
                        help="the candidate rows' recipes (JSON, see the module's docstring; "
                             f"default {CANDIDATES.relative_to(harness.ROOT)})")
    args = parser.parse_args()
    args.corpora = args.corpora.split(",")
    args.channels = [c for c in args.channels.split(",") if c]
    held_out_now = args.held_out.split(",") if args.held_out else args.corpora
    args.init = args.init or str(args.shared / harness.DEIT)
    candidates = args.candidates or CANDIDATES
    try:
        args.candidates = load_candidates(candidates, required=args.candidates is not None)
        check_candidates(args, candidates)
    except ValueError as error:
        parser.error(str(error))
    rows = args.rows.split(",")
    if unknown := [r for r in rows if r not in row_names(args)]:
        parser.error(f"--rows: unknown {', '.join(unknown)}; the rows are "
                     f"{', '.join(row_names(args))}")
    needed = args.corpora + [n for n in ("ravdess", "emodb")
                             if any(base_row(args, r) == "a" for r in rows)
                             and n not in args.corpora]
    data = {} if args.report else load_all(args.shared, needed)
    results = {"corpora": args.corpora,
               "settings": {k: str(v) for k, v in vars(args).items()
                            if k not in ("rows", "held_out", "candidates")},
               "machine": harness.machine("torch")}
    if args.report:
        write(results, args)
        print(markdown(results))
        return
    loco_rows = [r for r in rows if r != "si"]
    total = len(loco_rows) * len(held_out_now)
    # corpus by corpus, so that a stopped run leaves whole rows of the table
    for done, (held_out, row) in enumerate(((c, r) for c in held_out_now for r in loco_rows),
                                           1):
        name = cell_name(args, row, held_out)
        cell = cells(args).load(name)
        if cell is None:
            print(f"[{done}/{total}] row {row}, held-out {held_out}: training", flush=True)
            cell = run_cell(args, row, held_out, data)
            cells(args).save(name, cell)
        if complete_channels(args, row, held_out, cell, data):
            cells(args).save(name, cell)
        print(f"[{done}/{total}] row {row}, held-out {held_out}: restricted UA "
              f"{100 * cell['ua_restricted']:.1f} (chance {100 * cell['chance']:.0f})",
              flush=True)
        write(results, args)
    for fold in range(1, args.si_folds + 1 if "si" in rows else 1):
        name = cell_name(args, "si", si_fold(args, fold))
        if not si_cells(args).has(name):
            print(f"[si {fold}/{args.si_folds}] training", flush=True)
            si_cells(args).save(name, run_si_fold(args, fold, data))
        write(results, args)
    print(markdown(results))


def cell_name(args: argparse.Namespace, row: str, held_out: str) -> str:
    """A kept cell's name: its row, held-out corpus (or si fold) and settings digest."""
    return f"{row}-{held_out}-{cell_key(args, row, held_out)}"


def cells(args: argparse.Namespace) -> harness.CellStore:
    """The leave-one-corpus-out cells (indented)."""
    return harness.CellStore(args.cells)


def si_cells(args: argparse.Namespace) -> harness.CellStore:
    """Row si's folds, in the same folder; unindented (every utterance's probabilities)."""
    return harness.CellStore(args.cells, indent=None)


def write(results: dict, args: argparse.Namespace) -> None:
    """The table of every cell finished with these settings, whichever invocation ran it."""
    names = row_names(args)
    kept = {f"{row}-{corpus}": cell for row in names if row != "si" for corpus in args.corpora
            if (cell := cells(args).load(cell_name(args, row, corpus))) is not None}
    folds = [fold for k in range(1, args.si_folds + 1)
             if (fold := si_cells(args).load(cell_name(args, "si", si_fold(args, k))))
             is not None]
    kept.update(pool_si_folds(folds, args.corpora))
    results.update(cells=kept, rows=[r for r in names if any(f"{r}-{corpus}" in kept
                                                             for corpus in args.corpora)],
                   si_folds_done=f"{len(folds)} of {args.si_folds}")
    results["row_names"] = {r: names[r] for r in results["rows"]}
    harness.write_json(args.out / "transfer.json", results)
    harness.write_text(args.out / "transfer.md", markdown(results))
    for row in results["rows"]:
        plot_row_confusions(results, row, args.out / f"transfer_row_{row}_confusion.png")


def plot_row_confusions(results: dict, row: str, path: Path) -> None:
    """One row's held-out corpora, each over the classes it has (the restricted argmax)."""
    panels = []
    for corpus in results["corpora"]:
        cell = results["cells"].get(f"{row}-{corpus}")
        if cell is None:
            continue
        keep = [cell["labels"].index(label) for label in cell["classes"]]
        confusion = np.array(cell["confusion_restricted"])[np.ix_(keep, keep)]
        panels.append((confusion, cell["classes"], f"{corpus}: UA {100 * cell['ua_restricted']:.1f}"
                       f" (chance {100 * cell['chance']:.0f}), n = {cell['n']}"))
    plot_confusion_grid(panels, path, f"Row {row}: {results['row_names'][row]}; clean audio")


if __name__ == "__main__":
    main()
