"""The ablation protocol for unseen voices: one lever, measured cheaply and the same way
every time, against the same-budget baseline.

    .venv/bin/python benchmarks/ablate.py --lever NAME [--set KEY=VALUE ...] [--report]

A lever is a name and the training settings it changes (`--set augment.channel_p=0.4`;
any key of `callmood train --params`); `baseline` changes nothing. Each lever is trained
once per **held-out corpus** (EmoDB German, nEMO Polish, EMOVO Italian: three languages,
none of them heard in training) and **seed** (0 and 1), on the other six corpora with the
same small budget (`--epochs`, `--epoch-size`, at most `--max-per-corpus` utterances per
corpus), and scored on

* the held-out corpus (at most `--max-test` utterances, stratified by label): restricted
  UA and macro-F1, clean and through a telephone line outside every training range
  (`unseen_narrow`: 500-2600 Hz, GSM);
* the call benchmark's **dev** split (benchmarks/callbench/, the first `--dev-calls`
  calls, scored with the nightly job's own code): utterance UA, the customer negative
  share error per call and the escalation F1.

The voices of the call benchmark (the bundled model's test speakers) are never trained on,
so its dev calls stay unseen. A cell is kept in OUT/ablation_cells (OUT: --out, default
benchmarks/results; reused only with the same settings, so a stopped run resumes where it
was, also in a later sitting; never replaced by a run with other settings); an unfinished
training resumes from its checkpoint in --work. Every run rewrites OUT/ablation.{json,md}:
per lever, the mean over held-out corpora of each seed, then the mean and spread over
seeds, and the difference to the same-budget baseline (references(): the baseline, or for
a lever trained at another budget the lever that changes the budget alone to it, e.g.
`--set epochs=12`; the budget includes the precision, since a CPU without native bf16
runs the protocol in fp32 only). Dev-call figures are compared only between cells scored
on the same calls (calls_version). A lever's gain counts only where the t-interval of its
differences, over the held-out corpora, leaves out 0 (interval_over_corpora). It also
draws OUT/ablation_curves.png (validation curves) and OUT/ablation_gains.png (each
lever's difference from its reference, cell by cell).

`--study NAME` runs an Optuna study whose trials are levers drawn from `--space` and whose
objective is the protocol: the mean gain over the `--against` lever's cells
(run_protocol_study).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from callmood.digest import file_sha256
from callmood.model.folder import CARD, default_model_dir, load_model_folder
from callmood.training.checkpoint import has_checkpoint
from callmood.training.evaluate import held_out_corpus_metrics
from callmood.training.labels import parse_mapping
from callmood.training.splits import make_split
from callmood.training.train import TrainConfig, train
from callmood.training.tune import COUNTED_STATES, SearchSpace, open_study, write_study_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/
sys.path.insert(0, str(Path(__file__).resolve().parent / "callbench"))
import eval_calls  # noqa: E402
import harness  # noqa: E402
from bench_transfer import load_all, subsample  # noqa: E402
from generate import held_out_speakers  # noqa: E402

CORPORA = ("ravdess", "emodb", "ased", "nemo", "kored", "emovo", "tess")
HELD_OUT = ("emodb", "nemo", "emovo")
SEEDS = (0, 1)
LINE = "unseen_narrow"  # 500-2600 Hz and GSM: outside every training range


def parse_sets(items: list[str]) -> dict:
    """KEY=VALUE pairs (VALUE as JSON when it parses, else text)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def recipe(args, changes: dict, seed: int) -> TrainConfig:
    values = json.loads(harness.RECIPE.read_text())
    values.update({"init": str(args.shared / harness.DEIT), "epochs": args.epochs,
                   "epoch_size": args.epoch_size, "seed": seed, "precision": args.precision,
                   "device": args.device, "balance": "corpus", "mask_absent_classes": True})
    return TrainConfig().with_overrides(values).with_overrides(changes)


def comparable(settings: dict) -> dict:
    """`settings` as JSON keeps them (tuples are lists), without the training settings
    added after cells were kept where they are off (harness.without_added_later)."""
    out = json.loads(json.dumps(settings, default=str))
    out["config"] = harness.without_added_later(out["config"])
    return out


def kept_cell(store, name: str, wanted: dict, calls: str | None = None) -> dict | None:
    """The kept result of the cell `name` if it was made with the `wanted` settings (and,
    given `calls`, scored on the dev calls of that version)."""
    kept = store.load(name)
    if kept is None or comparable(kept["settings"]) != comparable(wanted) \
            or (calls is not None and cell_calls(kept["result"]) != calls):
        return None
    return kept["result"]


class KeptCellConflict(Exception):
    """A kept cell stands where a run would make one with other settings or calls."""


def refuse_to_replace(store, name: str) -> None:
    """A committed result is never replaced by another protocol's: `name` must be free."""
    if store.has(name):
        raise KeptCellConflict(
            f"{store.path(name)} was made with other settings or scored on other dev calls "
            "than this run's: name the lever anew (--lever), or delete the file to make the "
            "cell again")


def named_by_folder(config: dict) -> dict:
    """A cell's training settings with its init and teachers named by their folders' names,
    not where they lie on this machine (teachers' folders are named by their cells)."""
    return {**config, "init": Path(config["init"]).name,
            "teachers": [Path(t).name for t in config.get("teachers", [])]}


def settings(args, changes: dict, held_out: str, seed: int) -> dict:
    config = named_by_folder(recipe(args, changes, seed).to_dict())
    return {"held_out": held_out, "config": config, "max_per_corpus": args.max_per_corpus,
            "max_test": args.max_test, "dev_calls": args.dev_calls, "line": LINE}


def cell_name(lever: str, held_out: str, seed: int) -> str:
    return f"{lever}-{held_out}-s{seed}"


def dev_subset(dev: Path, count: int, work: Path) -> tuple[Path, str]:
    """A folder of the first `count` dev calls (links to their recordings) and their truth,
    and its calls_version, which names the folder: runs on other or regenerated calls never
    share one."""
    calls = pd.read_csv(dev / "calls.csv", dtype=str, keep_default_na=False).head(count)
    tables = {"calls.csv": calls.to_csv(index=False)}
    for table in ("ground_truth.csv", "calls_truth.csv"):
        rows = pd.read_csv(dev / table, dtype=str, keep_default_na=False)
        tables[table] = rows[rows.call_id.isin(calls.call_id)].to_csv(index=False)
    version = calls_version(tables, [dev / name for name in calls.file])
    subset = work / f"dev_subset-{count}-{version}"
    (subset / "audio").mkdir(parents=True, exist_ok=True)
    for name in calls.file:
        if not (subset / name).is_symlink():
            (subset / name).symlink_to((dev / name).resolve())
    for table, text in tables.items():
        harness.write_text(subset / table, text)
    return subset, version


def calls_version(tables: dict[str, str], recordings: list[Path]) -> str:
    """The dev calls' version: the first 12 hex digits of a sha256 over their tables (by
    name) and recordings (in order), so regenerated calls whose audio or truth moved have
    another."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        digest.update(name.encode() + b"\0" + tables[name].encode())
    for path in recordings:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:12]


def dev_call_figures(model_dir: Path, dev: Path, count: int, work: Path,
                     workers: int) -> dict:
    """The first `count` dev calls scored by the cell's model with the nightly job's
    `workers` (one scores them in this process), with eval_calls' figures."""
    from callmood.batch.score import ScoreConfig, score_calls

    subset, version = dev_subset(dev, count, work)
    with tempfile.TemporaryDirectory(prefix="callmood-ablate-") as tmp:
        # the subset's recordings are links into the dev split
        score_calls([str(subset)], tmp, str(model_dir),
                    ScoreConfig(workers=workers, follow_links=True), progress=False)
        report = eval_calls.evaluate_folder(subset, Path(tmp), str(model_dir), live=False,
                                            escalating=[], calm=[])
    return {"calls": report["calls"], "utterance_ua": report["utterances"].get("ua"),
            "customer_share_error_points":
                report["customer_negative_share"]["mean_abs_error_points"],
            "agent_negative_points": report["agent_negative_share"]["mean_abs_error_points"],
            "escalation_f1": report["escalation"]["f1"], "calls_version": version}


# The dev calls every cell kept before cells named theirs (2026-12-07) was scored on: the
# first 30 dev calls of callbench/generate.py as it was before 034aff0 (which moved each
# utterance's start past a click and so changed the calls' audio and truth). Regenerated
# with that generator on 2026-12-07, its test split gave the bundled model the figures
# committed in callbench_test.json again.
CALLS_BEFORE_VERSIONS = "e7cfb41331a4"


def cell_calls(cell: dict) -> str:
    """The version of the dev calls a cell was scored on (calls_version)."""
    return (cell.get("dev_calls") or {}).get("calls_version", CALLS_BEFORE_VERSIONS)


def model_dir(args, lever: str, changes: dict, held_out: str, seed: int) -> Path:
    """Where the cell's training writes its model folder (named by its settings)."""
    key = hashlib.sha1(json.dumps(comparable(settings(args, changes, held_out, seed)),
                                  sort_keys=True).encode()).hexdigest()[:10]
    return args.work / f"{cell_name(lever, held_out, seed)}-{key}"


def run_cell(args, lever: str, changes: dict, held_out: str, seed: int, data: dict,
             unseen: set[str]) -> dict:
    train_utts = [u for name in CORPORA if name != held_out
                  for u in subsample([u for u in data[name] if u.speaker not in unseen],
                                     args.max_per_corpus, seed)]
    test = subsample(data[held_out], args.max_test, seed)
    split = make_split(train_utts + test, test_speakers=sorted({u.speaker for u in test}),
                       shared=args.shared, seed=seed)
    out = model_dir(args, lever, changes, held_out, seed)
    started = time.time()
    if not ((out / CARD).is_file() and not has_checkpoint(out)):  # else trained already
        train(split, recipe(args, changes, seed), out, label_map=parse_mapping("calls", []),
              cache_dir=args.cache_dir, resume=has_checkpoint(out))
    trained = time.time() - started
    model = load_model_folder(out)
    clean = held_out_corpus_metrics(model, test, args.cache_dir, args.workers)
    line = held_out_corpus_metrics(model, test, args.cache_dir, args.workers, LINE)
    calls = dev_call_figures(out, args.calls, args.dev_calls, args.work, args.workers)
    return {"lever": lever, "held_out": held_out, "seed": seed, "changes": changes,
            "ua": clean["ua_restricted"], "macro_f1": clean["macro_f1_restricted"],
            "ua_line": line["ua_restricted"], "neutral_recall": clean["neutral_recall"],
            "test_utterances": clean["n"], "train_utterances": len(split.train),
            "best_epoch": model.card.training["best_epoch"],
            # the validation curve (held-out speakers of the training corpora), per epoch
            "curve": [{key: round(h[key], 4) if key != "epoch" else h[key]
                       for key in ("epoch", "val_ua", "val_macro_f1")}
                      for h in model.card.training["history"]],
            "train_wall_s": round(trained, 1), "wall_s": round(time.time() - started, 1),
            "dev_calls": calls, "machine": harness.machine("torch")}


def protocol_order(args) -> list[tuple[str, int]]:
    """The cells (held-out corpus, seed) in the order they are made: seed by seed, so that a
    study's first cells span the three languages."""
    return [(held_out, seed) for seed in map(int, args.seeds.split(","))
            for held_out in args.held_out.split(",")]


def lever_plan(args, store, lever: str, changes: dict,
               teachers: list[str]) -> list[tuple[str, int, dict, dict, dict | None]]:
    """(held-out corpus, seed, the settings the cell changes, its settings, its kept result
    or None) of each cell of `lever` in protocol order, found without loading any corpus.
    A distilled lever's cell is left out while one of its teachers' cells is missing.
    Refuses (KeptCellConflict) where a kept cell of other settings or calls stands."""
    _, calls = dev_subset(args.calls, args.dev_calls, args.work)
    plan = []
    for held_out, seed in protocol_order(args):
        name = cell_name(lever, held_out, seed)
        mine = changes
        if teachers:  # the teachers' models of this cell
            found = ensemble_members(args, teachers, held_out, seed, store)
            if found is None:
                continue
            mine = {**changes, "teachers": [str(d) for d in found[0]]}
        wanted = settings(args, mine, held_out, seed)
        if (kept := kept_cell(store, name, wanted, calls)) is None:
            refuse_to_replace(store, name)
        plan.append((held_out, seed, mine, wanted, kept))
    return plan


def lever_cells(args, store, lever: str, changes: dict, teachers: list[str], plan: list,
                data: dict, unseen: set[str], study: str | None = None) -> Iterator[dict]:
    """Each cell of `lever`'s `plan` (lever_plan), kept or trained and scored now (and
    kept), in protocol order. A study's trial names its study in its cells (the report
    marks them)."""
    for held_out, seed, mine, wanted, kept in plan:
        name = cell_name(lever, held_out, seed)
        if kept is not None:
            print(f"{name}: kept", flush=True)
            yield kept
            continue
        print(f"{name}: training", flush=True)
        cell = run_cell(args, lever, mine, held_out, seed, data, unseen)
        cell["changes"] = {**changes, **({"teachers": teachers} if teachers else {})}
        if study:
            cell["study"] = study
        store.save_with_settings(name, wanted, cell)
        print(f"{name}: UA {cell['ua']:.3f}, via the line {cell['ua_line']:.3f}, dev "
              f"calls {cell['dev_calls']} ({cell['wall_s']:.0f} s)", flush=True)
        yield cell


STUDY_SCORE = ("ua", "ua_line", "dev_calls.utterance_ua")


def protocol_score(cell: dict) -> float:
    """A cell's figure for a study: the mean of its held-out UA (clean and through the
    unseen line) and its dev calls' utterance UA."""
    return float(np.mean([metric(cell, name) for name in STUDY_SCORE]))


def study_lever(study: str, changes: dict) -> str:
    """A trial's lever is named by its settings, so a trial tried again (its worker died)
    finds the cells and checkpoints it had made."""
    return f"{study}-" + hashlib.sha1(json.dumps(changes, sort_keys=True).encode()
                                      ).hexdigest()[:8]


def against_scores(args, store, base: dict) -> dict[tuple[str, int], float]:
    """protocol_score of each of the --against lever's cells, which must have been made
    with this run's protocol (test sizes, dev calls) and at the budget of the trials (the
    protocol's and `base`'s), or the gains are unpaired or buy the budget's gain."""
    scores = {}
    _, calls = dev_subset(args.calls, args.dev_calls, args.work)
    for held_out, seed in protocol_order(args):
        name = cell_name(args.against, held_out, seed)
        kept = store.load(name)
        if kept is None:
            raise SystemExit(f"the study is scored against {args.against}'s cells and {name} "
                             f"is missing: run ablate.py --lever {args.against} first")
        changes = kept["result"]["changes"]
        if "ensemble" in changes or "teachers" in changes:
            raise SystemExit(f"--against {args.against}: a study is scored against a lever "
                             "trained by ablate.py --set, not an ensemble or a distilled one")
        if kept_cell(store, name, settings(args, changes, held_out, seed)) is None:
            raise SystemExit(f"{name} was made with another protocol than this run's "
                             "(--epochs, --epoch-size, --max-per-corpus, --max-test, "
                             "--dev-calls, --precision, --device): run the study with its "
                             "settings")
        if (version := cell_calls(kept["result"])) != calls:
            raise SystemExit(f"{name} was scored on other dev calls (version {version}) than "
                             f"{args.calls} ({calls}): regenerate the calls its cells were "
                             f"scored on, or make --against's cells again on these (under "
                             "another --lever name)")
        trials = budget({"config": recipe(args, base, seed).to_dict()})
        if budget(kept["settings"]) != trials:
            raise SystemExit(f"--against {args.against} was trained at "
                             f"{json.dumps(budget(kept['settings']))} {BUDGET_WORDS} and the "
                             f"trials would be at {json.dumps(trials)}: score them against a "
                             "lever of their budget (ablate.py --lever NAME --set epochs=N "
                             "or precision=P)")
        scores[held_out, seed] = protocol_score(kept["result"])
    return scores


def run_protocol_study(args, store, base: dict, space: SearchSpace, data: dict,
                       unseen: set[str]) -> None:
    """An Optuna study whose objective is the protocol: each trial is a lever (`base`'s
    settings plus the trial's from `space`), scored by its mean gain in protocol_score over
    the --against lever's cells, reported cell by cell so the median pruner stops a trial
    that trails after one seed. The study (SQLite, in --work) resumes in a later sitting,
    with the same protocol only; a trial interrupted there (killed, or Ctrl-C) is tried
    again with its settings. Each sitting runs at most --trials trials. Its summary goes to
    OUT/study-NAME."""
    against = against_scores(args, store, base)
    order = protocol_order(args)
    study = open_study(args.work / "studies" / args.study, args.study, None, "median",
                       epochs=len(order), seed=0)
    protocol = json.loads(json.dumps(
        {"against": args.against, "base": base, "space": space.to_dict(), "cells": order,
         **{k: getattr(args, k) for k in ("epochs", "epoch_size", "max_per_corpus",
                                          "max_test", "dev_calls", "precision")}}))
    if study.user_attrs.setdefault("protocol", protocol) != protocol:
        raise SystemExit(f"study {args.study} was made with another protocol "
                         f"({study.user_attrs['protocol']}); give the same options or a "
                         "new --study name")
    study.set_user_attr("protocol", protocol)
    retry_interrupted(study)

    def objective(trial: optuna.Trial) -> float:
        gains = []
        try:
            changes = {**base, **space.suggest(trial)}
            lever = study_lever(args.study, changes)
            trial.set_user_attr("overrides", changes)
            trial.set_user_attr("lever", lever)
            plan = lever_plan(args, store, lever, changes, [])
            for step, cell in enumerate(lever_cells(args, store, lever, changes, [], plan,
                                                    data, unseen, study=args.study)):
                gains.append(protocol_score(cell) - against[cell["held_out"], cell["seed"]])
                trial.report(float(np.mean(gains)), step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"{lever}: {np.mean(gains):+.3f} after "
                                             f"{step + 1} cells")
        except KeyboardInterrupt:  # tried again in the next sitting (retry_interrupted)
            trial.set_user_attr("interrupted", True)
            raise
        except optuna.TrialPruned:
            raise
        except Exception as error:  # its own failure (e.g. settings that cannot go
            trial.set_user_attr("error", str(error))  # together): not tried again
            raise
        return float(np.mean(gains))

    if len(study.get_trials(deepcopy=False, states=COUNTED_STATES)) < args.trials:
        study.optimize(objective, n_trials=args.trials, catch=(ValueError,), callbacks=[
            optuna.study.MaxTrialsCallback(args.trials, states=COUNTED_STATES)])
    out = args.out / f"study-{args.study}"
    best = write_study_summary(study, recipe(args, base, 0), out,
                               objective=f"gain over {args.against} (mean UA)",
                               whole=True)
    if best is not None:
        print(f"best trial {best.number}: {best.value:+.3f} over {args.against} "
              f"({best.user_attrs['lever']}); {out / 'best_params.json'}", flush=True)


def retry_interrupted(study: optuna.Study) -> None:
    """Queue again the settings of trials stopped by Ctrl-C, unless a later trial of the
    same lever is queued, running or finished. (A killed worker's trial is queued again by
    the storage's heartbeat callback, open_study.)"""
    trials = study.get_trials(deepcopy=False)
    done = {t.user_attrs.get("lever") for t in trials
            if t.state != optuna.trial.TrialState.FAIL}
    for trial in trials:
        lever = trial.user_attrs.get("lever")
        if trial.state == optuna.trial.TrialState.FAIL and \
                trial.user_attrs.get("interrupted") and lever not in done:
            study.enqueue_trial(trial.params, user_attrs={"lever": lever})
            done.add(lever)


def ensemble_members(args, members: list[str], held_out: str, seed: int,
                     store) -> tuple[list[Path], dict] | None:
    """The model folders of the kept levers' cells for (held_out, seed), and the ensemble
    cell's settings (its members'); None while a member's cell is missing."""
    dirs, wanted = [], []
    for lever in members:
        kept = store.load(cell_name(lever, held_out, seed))
        if kept is None:
            print(f"  no kept cell of {lever} for {held_out}, seed {seed}", flush=True)
            return None
        dirs.append(trained_model(args, lever, held_out, seed, kept["settings"]))
        wanted.append(comparable(kept["settings"]))
    sizes = {member["max_test"] for member in wanted}
    if len(sizes) > 1:
        raise SystemExit(f"the members of {ensemble_name(members)} were tested on different "
                         f"numbers of utterances ({sorted(sizes)})")
    return dirs, {"config": {}, "held_out": held_out, "max_test": sizes.pop(),
                  "members": wanted}


def trained_model(args, lever: str, held_out: str, seed: int, kept: dict) -> Path:
    """The model folder a kept cell was scored with: the one under --work whose training
    settings are the cell's (a cell kept by older code may name its folder otherwise)."""
    wanted = harness.without_added_later(kept["config"])
    for folder in sorted(args.work.glob(f"{cell_name(lever, held_out, seed)}-*")):
        if not (folder / CARD).is_file():
            continue
        config = named_by_folder(json.loads((folder / CARD).read_text())["training"]["config"])
        if harness.without_added_later(config) == wanted:
            return folder
    raise SystemExit(f"no model folder of {cell_name(lever, held_out, seed)} under {args.work} "
                     "was trained with its kept settings")


def ensemble_cell(args, members: list[str], dirs: list[Path], held_out: str, seed: int,
                  data: dict, max_test: int) -> dict:
    """An ensemble of kept levers' models for (held_out, seed): their probabilities
    averaged on the cell's held-out utterances, clean and through the line. No dev-call
    figures: the nightly job scores one model (an ensemble reaches it distilled)."""
    started = time.time()
    models = [load_model_folder(d) for d in dirs]
    test = subsample(data[held_out], max_test, seed)  # the members' own test utterances
    clean = held_out_corpus_metrics(models, test, args.cache_dir, args.workers)
    line = held_out_corpus_metrics(models, test, args.cache_dir, args.workers, LINE)
    return {"lever": ensemble_name(members), "held_out": held_out, "seed": seed,
            "changes": {"ensemble": members}, "ua": clean["ua_restricted"],
            "macro_f1": clean["macro_f1_restricted"], "ua_line": line["ua_restricted"],
            "neutral_recall": clean["neutral_recall"], "test_utterances": clean["n"],
            "wall_s": round(time.time() - started, 1), "dev_calls": None}


def ensemble_name(members: list[str]) -> str:
    return "ensemble-" + "+".join(members)


METRICS = {"ua": "held-out UA", "ua_line": f"held-out UA via {LINE}",
           "dev_calls.utterance_ua": "dev calls utterance UA",
           "dev_calls.customer_share_error_points": "dev calls share error (points)",
           "dev_calls.escalation_f1": "dev calls escalation F1"}


def metric(cell: dict, name: str) -> float | None:
    value = cell
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def cells_by_pair(cells: list[dict], lever: str | None) -> dict[tuple[str, int], dict]:
    """A lever's cells by (held-out corpus, seed), the pairs of other levers' cells."""
    return {(c["held_out"], c["seed"]): c for c in cells if c["lever"] == lever}


# the settings that make a training's budget: how many examples it learns from, and in
# which arithmetic (bf16 changes the numbers, and costs 18 times fp32 on a CPU without
# native bf16, so a machine may run the protocol in fp32 only)
BUDGET = ("epochs", "epoch_size", "precision")
BUDGET_WORDS = "[epochs, examples an epoch, precision]"


def budget(settings: dict) -> list[list[int | str]]:
    """The budgets ([epochs, epoch_size, precision]) a kept cell's model was trained with,
    or each of an ensemble's members, from the settings kept with it."""
    configs = [m["config"] for m in settings["members"]] if "members" in settings \
        else [settings["config"]]
    return [list(b) for b in sorted({tuple(config[key] for key in BUDGET)
                                     for config in configs})]


def references(cells: list[dict]) -> dict[str, str | None]:
    """Each lever's reference, the same-budget baseline its cells are compared with (cells
    carry their `budget`): the baseline for a lever trained at the baseline's budget; for
    a lever that changes the budget alone, the baseline in its own precision (the
    baseline, or the lever that changes the precision alone: `budget-12-epochs` and
    `budget-12-epochs-fp32` say what 12 epochs buy against `baseline` and `baseline-fp32`);
    for another lever at another budget, the lever that changes the budget alone to that
    budget (the warp at `epochs=12` against `budget-12-epochs`; of several, the first by
    name), or None where there is none (then it is compared with nothing)."""
    budgets = {c["lever"]: c["budget"] for c in cells}
    alone = {c["lever"] for c in cells if c["changes"] and set(c["changes"]) <= set(BUDGET)}
    budget_only: dict[str, str] = {}
    for lever in sorted(alone):
        budget_only.setdefault(json.dumps(budgets[lever]), lever)
    base = budgets.get("baseline")
    precision = BUDGET.index("precision")

    def reference(lever: str, spent: list) -> str | None:
        if lever in alone:
            if base and len(base) == len(spent) == 1:  # the baseline in the lever's precision
                own = budget_only.get(json.dumps([[*base[0][:precision],
                                                   spent[0][precision]]]), lever)
                return own if own != lever else "baseline"
            return "baseline"
        return "baseline" if spent == base else budget_only.get(json.dumps(spent))
    return {lever: reference(lever, spent) for lever, spent in budgets.items()}


def paired_differences(mine: list[dict], base: dict, name: str) -> list[tuple[dict, float]]:
    """(cell, its metric minus the reference's cell's on the same held-out corpus and seed)
    for each of `mine` whose reference cell `base` (cells_by_pair) holds, both with the
    metric, and for a dev-calls metric both scored on the same calls (cell_calls)."""
    return [(c, v - b) for c in mine
            if (other := base.get((c["held_out"], c["seed"])))
            and (v := metric(c, name)) is not None
            and (b := metric(other, name)) is not None
            and (not name.startswith("dev_calls.") or cell_calls(c) == cell_calls(other))]


def against_reference(cells: list[dict], lever: str, reference: str | None,
                      name: str) -> list[tuple[dict, float]]:
    """paired_differences of `lever`'s cells with its reference's (references()[lever])."""
    return paired_differences([c for c in cells if c["lever"] == lever],
                              cells_by_pair(cells, reference), name)


def interval_over_corpora(paired: list[tuple[dict, float]]) -> dict:
    """The interval of a lever's mean difference with its reference (paired_differences),
    over the held-out corpora, each the mean of its seeds' differences
    (harness.paired_interval; from three corpora on). The corpora, not the cells, are the
    independent draws: the seeds of one corpus share its voices, and a lever is wanted for
    corpora it has never heard, so the corpora's disagreement is the noise it must beat."""
    by_corpus: dict[str, list[float]] = {}
    for cell, difference in paired:
        by_corpus.setdefault(cell["held_out"], []).append(difference)
    return harness.paired_interval([float(np.mean(d)) for d in by_corpus.values()])


def summarise(cells: list[dict]) -> dict:
    """Per lever and metric: the mean over held-out corpora per seed, then the mean and
    spread (sample sd) over the seeds, and how many cells it rests on; and against its
    reference (references()), the mean difference over the cells (held-out corpus, seed)
    both have, so that a lever stopped early is compared with the same corpora and seeds,
    not all six, and its interval over the corpora (interval_over_corpora)."""
    reference = references(cells)
    levers: dict[str, dict] = {}
    for lever in sorted({c["lever"] for c in cells}):
        mine = [c for c in cells if c["lever"] == lever]
        row = {"cells": len(mine), "changes": mine[0]["changes"], "budget": mine[0]["budget"],
               # the versions of the dev calls its cells were scored on
               "calls": sorted({cell_calls(c) for c in mine if c.get("dev_calls")}),
               **({"reference": reference[lever]} if lever != "baseline" else {}),
               **({"study": study} if (study := next((c["study"] for c in mine
                                                        if "study" in c), None)) else {})}
        for name in METRICS:
            values = [[v for c in mine if c["seed"] == seed
                       if (v := metric(c, name)) is not None]
                      for seed in sorted({c["seed"] for c in mine})]
            per_seed = [float(np.mean(v)) for v in values if v]
            row[name] = {"mean": round(float(np.mean(per_seed)), 4) if per_seed else None,
                         "sd": round(float(np.std(per_seed, ddof=1)), 4)
                         if len(per_seed) > 1 else None, "seeds": len(per_seed)}
            paired = (against_reference(cells, lever, reference[lever], name)
                      if lever != "baseline" else [])
            row[name]["vs_reference"] = {
                "mean": round(float(np.mean([d for _, d in paired])), 4),
                "cells": len(paired), **interval_over_corpora(paired)} if paired else None
        levers[lever] = row
    return levers


def markdown(levers: dict) -> str:
    lines = ["| lever | changes | cells | against | " + " | ".join(METRICS.values()) + " |",
             "| --- | --- | --- | --- |" + " --- |" * len(METRICS)]
    other_calls = False
    for lever, row in levers.items():
        base = levers.get(row.get("reference", ""))
        # dev-call figures on other calls than the reference's are not compared
        calls_mark = " ‡" if base and base["calls"] and row["calls"] and \
            row["calls"] != base["calls"] else ""
        other_calls |= bool(calls_mark)
        cells = []
        for name in METRICS:
            m = row[name]
            if m["mean"] is None:
                cells.append("–")
                continue
            text = f"{m['mean']:.3f}" + (f" ± {m['sd']:.3f}" if m["sd"] is not None else "")
            text += calls_mark if name.startswith("dev_calls.") else ""
            if m["vs_reference"]:
                change, paired = m["vs_reference"]["mean"], m["vs_reference"]["cells"]
                low, high = m["vs_reference"].get("interval") or (None, None)
                interval = f" [{low:+.3f}, {high:+.3f}]" if low is not None else ""
                text += f" ({change:+.3f}{interval})" \
                    if base and paired == row["cells"] == base["cells"] \
                    else f" ({change:+.3f}{interval} on {paired} paired cells)"
            cells.append(text)
        mark = " †" if "study" in row else ""
        against = "–" if lever == "baseline" else row["reference"] or \
            f"nothing (no lever of {json.dumps(row['budget'])} {BUDGET_WORDS} alone)"
        lines.append(f"| {lever}{mark} | "
                     f"{json.dumps(row['changes']) if row['changes'] else '–'} "
                     f"| {row['cells']} | {against} | "
                     + " | ".join(cells) + " |")
    if any(m["vs_reference"] and "interval" in m["vs_reference"]
           for row in levers.values() for name in METRICS if (m := row[name])):
        lines += ["", "(difference [95 % interval]): the mean paired difference with the "
                      "reference's cells of the same held-out corpus and seed, and its "
                      "t-interval over the held-out corpora (each the mean of its seeds); "
                      "a lever moves a figure only where the interval leaves out 0, and of "
                      "the table's many intervals one in twenty does so by chance."]
    if any("study" in row for row in levers.values()):
        lines += ["", "† a trial of an Optuna study (`--study`) that chose among its trials "
                      "on these cells: the best trial's figures here are biased upward. Its "
                      "test: leave-one-corpus-out on the other corpora and the call "
                      "benchmark's test split."]
    if other_calls:
        lines += ["", "‡ cells scored on other dev calls (`calls` in ablation.json) than "
                      "the reference's: their dev-call figures are not compared."]
    return "\n".join(lines) + "\n"


# the figures of ablation_gains.png, and whether higher is better
GAINS = {"ua": True, "ua_line": True, "dev_calls.utterance_ua": True,
         "dev_calls.customer_share_error_points": False}


def pyplot():
    """matplotlib's pyplot on the file-only backend (benchmarks run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_gains(cells: list[dict], path: Path) -> None:
    """Each lever's difference from its reference (references()), cell by cell (held-out
    corpus by colour, seed by marker), their mean (a bar) and its interval
    (interval_over_corpora, a grey band): whether a lever moves every
    cell one way or its mean rests on one cell, which a table's mean and spread do not
    show."""
    plt = pyplot()
    reference = references(cells)
    levers = sorted({c["lever"] for c in cells} - {"baseline"})
    corpora = sorted({c["held_out"] for c in cells})
    colours = dict(zip(corpora, plt.get_cmap("tab10").colors, strict=False))
    markers = "os^Dv"
    figure, axes = plt.subplots(1, len(GAINS), figsize=(4 * len(GAINS), 1 + 0.45 *
                                                         max(len(levers), 2)), sharey=True)
    for ax, (name, higher_is_better) in zip(axes, GAINS.items(), strict=True):
        for row, lever in enumerate(levers):
            paired = against_reference(cells, lever, reference[lever], name)
            if not paired:
                ax.text(0, row, "no cells", ha="center", va="center", fontsize=7,
                        color="grey")
                continue
            differences = [d for _, d in paired]
            if interval := interval_over_corpora(paired).get("interval"):
                ax.plot(interval, [row, row], color="black", linewidth=6, alpha=0.15,
                        solid_capstyle="butt")
            ax.plot([np.mean(differences)] * 2, [row - 0.3, row + 0.3],
                    color="black", linewidth=2)
            for cell, difference in paired:
                ax.scatter(difference, row, s=18, color=colours[cell["held_out"]],
                           marker=markers[cell["seed"] % len(markers)], zorder=3)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_title(METRICS[name], fontsize=9)
        ax.set_xlabel("against the reference's cell, " +
                      ("better →" if higher_is_better else "← better"))
        ax.grid(axis="x", alpha=0.3)
    counts = {lever: sum(c["lever"] == lever for c in cells) for lever in levers}
    axes[0].set_yticks(range(len(levers)), [
        f"{shorten(lever)} ({counts[lever]})" + (
            "" if reference[lever] == "baseline"
            else f"\nagainst {shorten(reference[lever] or 'nothing')}")
        for lever in levers], fontsize=7)
    axes[0].invert_yaxis()
    handles = [plt.Line2D([], [], linestyle="", marker="o", color=colours[corpus],
                          label=f"held out: {corpus}") for corpus in corpora]
    handles += [plt.Line2D([], [], linestyle="", marker=markers[seed % len(markers)],
                           color="grey", label=f"seed {seed}")
                for seed in sorted({c["seed"] for c in cells})]
    handles.append(plt.Line2D([], [], color="black", linewidth=2, label="mean of the cells"))
    handles.append(plt.Line2D([], [], color="black", linewidth=6, alpha=0.15,
                              label="its 95 % interval"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)
    figure.suptitle("Ablation levers against the same-budget baseline (the baseline unless "
                    "named), cell by cell (in brackets: a lever's cells)")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def shorten(name: str, width: int = 40) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def plot_curves(cells: list[dict], path: Path) -> None:
    """Each lever's validation UA per epoch (held-out speakers of its training corpora):
    the mean over its cells, and each cell faintly, so a budget's curve shows whether it
    had stopped rising."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(8, 5))
    levers = sorted({c["lever"] for c in cells if c.get("curve")})
    colours = plt.get_cmap("tab20" if len(levers) > 10 else "tab10")
    for number, lever in enumerate(levers):
        curves = [[h["val_ua"] for h in c["curve"]] for c in cells
                  if c["lever"] == lever and c.get("curve")]
        longest = max(map(len, curves))
        padded = np.full((len(curves), longest), np.nan)
        for row, curve in zip(padded, curves, strict=True):
            row[:len(curve)] = curve
        epochs = np.arange(1, longest + 1)
        colour = colours(number % colours.N)
        ax.plot(epochs, np.nanmean(padded, axis=0), marker="o", markersize=3, color=colour,
                label=f"{lever} ({len(curves)} cells)")
        for row in padded:
            ax.plot(epochs, row, color=colour, alpha=0.15, linewidth=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation UA (held-out speakers of the training corpora)")
    ax.set_title("Ablation levers: validation curves, mean over cells")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_shared_option(parser)
    parser.add_argument("--lever", default="baseline")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting the lever changes (repeatable)")
    parser.add_argument("--held-out", default=",".join(HELD_OUT))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--epoch-size", type=int, default=800)
    parser.add_argument("--max-per-corpus", type=int, default=800)
    parser.add_argument("--max-test", type=int, default=400)
    parser.add_argument("--dev-calls", type=int, default=30)
    parser.add_argument("--calls", type=Path, default=harness.ROOT / "runs" / "callbench" / "dev",
                        help="the call benchmark's dev split (callbench/generate.py)")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes that extract features and score the dev calls")
    parser.add_argument("--work", type=Path, default=harness.ROOT / "runs" / "ablation")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=harness.RESULTS,
                        help="where ablation.{json,md} and ablation_cells/ go")
    parser.add_argument("--ensemble", metavar="LEVER,LEVER,...",
                        help="score an ensemble of these levers' kept models (averaged "
                             "probabilities) instead of training a lever")
    parser.add_argument("--teachers", metavar="LEVER,LEVER,...",
                        help="distil these levers' kept models of each cell (their averaged "
                             "probabilities as soft targets, teacher_weight) into the lever")
    parser.add_argument("--study", metavar="NAME",
                        help="run an Optuna study NAME over --space whose objective is the "
                             "protocol (its trials are levers NAME-<settings hash>)")
    parser.add_argument("--trials", type=int, default=12, help="the study's number of trials")
    parser.add_argument("--space", type=Path, default=harness.ROOT / "benchmarks" /
                        "protocol_space.json", help="the study's search space (JSON)")
    parser.add_argument("--against", default="baseline",
                        help="the lever whose cells a study's trials are scored against")
    parser.add_argument("--report", action="store_true", help="only rewrite the summary")
    args = parser.parse_args(argv)
    store = harness.CellStore(args.out / "ablation_cells")
    changes = parse_sets(args.set)
    if args.study and (args.ensemble or args.teachers or args.lever != "baseline"):
        parser.error("--study names its own levers; it takes --set (the settings every trial "
                     "shares), not --lever, --ensemble or --teachers")
    if args.study:
        try:
            space = SearchSpace.from_file(args.space)
        except (OSError, ValueError) as error:
            parser.error(f"--space: {error}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.study):
            parser.error(f"--study {args.study!r}: letters, digits, '_', '.' and '-' only "
                         "(it names a folder and the trials' levers)")
        flat = {f"{key}.{inner}" if isinstance(value, dict) else key
                for key, value in changes.items()
                for inner in (value if isinstance(value, dict) else [None])}
        if clash := sorted(flat & space.keys()):
            parser.error(f"--set {', '.join(clash)}: the study's trials set these "
                         f"({args.space}); leave them to the space or take them out of it")
    if args.lever == "baseline" and not args.study and (changes or args.teachers):
        parser.error("the baseline changes nothing; name the lever")
    if args.teachers and args.lever in args.teachers.split(","):
        parser.error(f"{args.lever} cannot be its own teacher")
    if not args.report and recipe(args, changes, 0).precision == "auto":
        parser.error("precision auto: name bf16 or fp32 (levers are paired by the precision "
                     "they trained in, and auto means either, by device)")
    try:
        if args.ensemble and not args.report:
            members = args.ensemble.split(",")
            data = load_all(args.shared, list(HELD_OUT))
            for held_out, seed in protocol_order(args):
                name = cell_name(ensemble_name(members), held_out, seed)
                found = ensemble_members(args, members, held_out, seed, store)
                if found is None or kept_cell(store, name, found[1]) is not None:
                    continue
                refuse_to_replace(store, name)
                cell = ensemble_cell(args, members, found[0], held_out, seed, data,
                                     found[1]["max_test"])
                store.save_with_settings(name, found[1], cell)
                print(f"{name}: UA {cell['ua']:.3f}, via the line {cell['ua_line']:.3f} "
                      f"({cell['wall_s']:.0f} s)", flush=True)
        elif not args.report:
            if not (args.calls / "calls_truth.csv").exists():
                parser.error(f"{args.calls}: no call benchmark; `make ablation-calls` makes "
                             "the one the kept cells were scored on")
            teachers = args.teachers.split(",") if args.teachers else []
            plan = [] if args.study else lever_plan(args, store, args.lever, changes,
                                                    teachers)
            if args.study or any(kept is None for *_, kept in plan):
                data = load_all(args.shared, list(CORPORA))
                unseen = set(held_out_speakers(default_model_dir()))
                if args.study:
                    run_protocol_study(args, store, changes, space, data, unseen)
                else:
                    for _ in lever_cells(args, store, args.lever, changes, teachers, plan,
                                         data, unseen):
                        pass
    except KeptCellConflict as conflict:  # from a study's trial too, which Optuna failed
        raise SystemExit(str(conflict)) from None
    cells = [kept["result"] | {"budget": budget(kept["settings"])}
             for kept in map(store.load, sorted(p.stem for p in store.folder.glob("*.json")))]
    levers = summarise(cells)
    harness.write_json(args.out / "ablation.json",
                       {"protocol": {"held_out": list(HELD_OUT), "seeds": list(SEEDS),
                                     "line": LINE}, "levers": levers, "cells": cells,
                        "machine": harness.machine("torch")})
    harness.write_text(args.out / "ablation.md", markdown(levers))
    plot_curves(cells, args.out / "ablation_curves.png")
    plot_gains(cells, args.out / "ablation_gains.png")
    print(markdown(levers))


if __name__ == "__main__":
    main()
