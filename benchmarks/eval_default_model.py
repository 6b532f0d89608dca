"""A candidate default model on the figures its card reports, beside the bundled model.

Per corpus, the candidate's held-out speakers (the test speakers in its callmood.json:
RAVDESS fold-1 actors and a speaker group of every other corpus), scored with
training.evaluate.held_out_corpus_metrics: UA and macro-F1 over the classes the corpus
has, open UA over all labels, neutral recall, chance level, each read twice: from the file
as the corpus recorded it and from its speech alone (the file cut by the nightly job's
detector, mel.trim_silence), since the silence around a corpus's takes carries up to 30
points of UA that a call's turns do not have (benchmarks/line_trace.py; a model trained
with mel.trim_silence reads a file as its speech, so its two readings are one). A
compared model is scored on the same utterances; where it trained on some of those
speakers, its figure is marked "seen" and is not a held-out result. Then sample_calls/ through
benchmarks/eval_sample_calls.py, once per model.

    .venv/bin/python benchmarks/eval_default_model.py --model runs/default_model \\
        --compare bundled=callmood/default_model --out runs/default_model_eval

writes OUT/held_out.{json,md}, OUT/<corpus>_confusion.png (candidate) and
OUT/sample_calls_<name>/.

Whether a candidate replaces the bundled model (the rule of issue 23): with `--calls
runs/callbench/test` every model is also scored on the call benchmark's test split
(benchmarks/eval_calls.py, OUT/callbench_<name>.json), and with `--loco
TABLE.json:ROW` (the candidate's recipe in leave-one-corpus-out, bench_transfer.py's
table) the candidate is adopted only if, against the first `--compare` model,
leave-one-corpus-out improves on `--loco-reference` (default: row c of
benchmarks/results/transfer.json, the bundled model's recipe at that benchmark's
budget), the call benchmark's
utterance UA and customer negative share error both improve, and no corpus's held-out
speakers drop by more than 3 points, read from the file or from its speech alone:
OUT/adoption.{json,md} (adoption()).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from callmood.model.folder import load_model_folder
from callmood.training.corpora.registry import load_corpus
from callmood.training.evaluate import held_out_corpus_metrics, plot_confusion
from callmood.training.labels import apply_mapping, parse_mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

ROOT = harness.ROOT


def held_out_speakers(model) -> dict[str, list[str]]:
    """The model's test speakers by corpus, as its training recorded them."""
    by_corpus: dict[str, list[str]] = {}
    for speaker in model.card.training["split"]["test_speakers"]:
        by_corpus.setdefault(speaker.split(":", 1)[0], []).append(speaker)
    return by_corpus


def trained_on(model, corpus: str, speakers: list[str]) -> bool:
    """Whether `model` may have heard any of `speakers`: it trained on `corpus` and did not
    hold these speakers out."""
    training = model.card.training
    return corpus in training.get("corpora", {}) and not set(speakers) <= set(
        training["split"]["test_speakers"])


SPEECH_ONLY_FIGURES = ("ua_restricted", "macro_f1_restricted", "ua_open", "neutral_recall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "runs" / "default_model"))
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=DIR")
    harness.add_shared_option(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "default_model_eval")
    parser.add_argument("--calls", type=Path, default=None,
                        help="the call benchmark's test split (runs/callbench/test), "
                             "scored with every model")
    parser.add_argument("--loco", default=None, metavar="TABLE.json:ROW",
                        help="the candidate's recipe in leave-one-corpus-out "
                             "(bench_transfer.py's transfer.json and its row)")
    parser.add_argument("--loco-reference", default=str(LOCO_REFERENCE),
                        metavar="TABLE.json:ROW",
                        help="the compared model's recipe there (default: %(default)s)")
    args = parser.parse_args()
    if args.loco and not (args.calls and args.compare):
        parser.error("--loco decides on adoption, which also needs --calls and --compare")
    if args.calls and not (args.calls / "ground_truth.csv").is_file():
        parser.error(f"--calls {args.calls}: no ground_truth.csv there (a split of the call "
                     "benchmark, e.g. runs/callbench/test, holds one)")
    try:
        loco = {"candidate": loco_row(args.loco), "reference": loco_row(args.loco_reference)} \
            if args.loco else None
    except ValueError as error:
        parser.error(str(error))
    compared = dict(spec.split("=", 1) for spec in args.compare)
    if "candidate" in compared:
        parser.error("--compare: 'candidate' names --model; give the compared model another "
                     "name")
    models = {"candidate": args.model} | compared
    loaded = {name: load_model_folder(folder) for name, folder in models.items()}
    groups = held_out_speakers(loaded["candidate"])
    mapping = parse_mapping("calls", [])
    report = {"models": {name: {"folder": folder, "model": loaded[name].name,
                                "version": loaded[name].version} for name, folder in
                         models.items()},
              "held_out_speakers": groups,
              "machine": harness.machine("torch"),
              "corpora": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for corpus, speakers in groups.items():
        utterances = [u for u in apply_mapping(
            load_corpus(corpus, args.shared / "data" / corpus), mapping)
            if u.speaker in set(speakers)]
        row = {}
        for name, model in loaded.items():
            figures = held_out_corpus_metrics(model, utterances, workers=args.workers)
            speech = held_out_corpus_metrics(harness.reading(model, trim_silence=True),
                                             utterances, workers=args.workers)
            row[name] = figures | {
                "speech_only": {key: speech[key] for key in SPEECH_ONLY_FIGURES},
                "seen_in_training": trained_on(model, corpus, speakers)}
            print(f"{corpus:>8} {name:>10}: restricted UA {100 * figures['ua_restricted']:.1f}"
                  f" (speech only {100 * speech['ua_restricted']:.1f}, chance "
                  f"{100 * figures['chance']:.0f}), open UA {100 * figures['ua_open']:.1f}",
                  flush=True)
        candidate = row["candidate"]
        plot_confusion(np.array(candidate["confusion_restricted"]), candidate["labels"],
                       args.out / f"{corpus}_confusion.png",
                       f"{loaded['candidate'].name}, held-out {corpus} speakers")
        report["corpora"][corpus] = row
    harness.write_json(args.out / "held_out.json", report)
    harness.write_text(args.out / "held_out.md", markdown(report))
    print(markdown(report))
    for name, folder in models.items():
        step(["eval_sample_calls.py", "--model", folder, "--out",
              str(args.out / f"sample_calls_{name}")], f"sample_calls/ with {name}", args.out)
    calls = {}
    for name, folder in models.items() if args.calls else ():
        out = args.out / f"callbench_{name}.json"
        # the calls may be links (ablate.py's dev subset): the nightly job follows them
        step(["eval_calls.py", str(args.calls), "--model", folder, "--out", str(out),
              "--results", str(args.out / f"callbench_{name}_results"),
              "--", "--workers", str(args.workers), "--follow-links"],
             f"the call benchmark {args.calls} with {name}", args.out)
        calls[name] = harness.read_json(out)
    if loco:
        incumbent = list(models)[1]  # the first --compare
        verdict = adoption(report, calls, loco, incumbent)
        harness.write_json(args.out / "adoption.json", verdict)
        harness.write_text(args.out / "adoption.md", adoption_markdown(verdict))
        print(adoption_markdown(verdict))


def step(command: list[str], what: str, out: Path) -> None:
    """Run a benchmark script of benchmarks/ (its own output shows); if it fails, stop
    with a message that names the step and keeps what is already written in `out`."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / command[0]),
                           *command[1:]])
    if done.returncode:
        written = ", ".join(sorted(p.name for p in out.iterdir())) or "nothing"
        raise SystemExit(f"eval_default_model.py: scoring {what} failed ({command[0]} "
                         f"exited {done.returncode}, its output above); kept in {out}: "
                         f"{written}")


# the bundled model's recipe in leave-one-corpus-out, at the transfer benchmark's budget:
# row c (all other corpora, channel simulation)
LOCO_REFERENCE = f"{harness.RESULTS / 'transfer.json'}:c"  # whatever the working folder
LOCO_BUDGET = ("epochs", "epoch_size", "precision", "seed")  # a table's, kept in its settings
HELD_OUT_DROP = 0.03  # the most a corpus's held-out speakers may lose against the incumbent


def loco_row(spec: str) -> dict:
    """`TABLE.json:ROW`: the row of bench_transfer.py's table ({"table", "row", "corpora":
    the table's held-out corpora, "ua": {corpus: restricted UA} of the row's cells,
    "settings": the table's budget}); a ValueError naming the table otherwise."""
    table, _, row = spec.rpartition(":")
    results = harness.read_json(Path(table)) if table else None
    if results is None:
        raise ValueError(f"{spec}: expected TABLE.json:ROW, TABLE an existing table of "
                         "benchmarks/bench_transfer.py")
    if not isinstance(results, dict) or not {"corpora", "cells"} <= set(results):
        raise ValueError(f"{table}: not a table of benchmarks/bench_transfer.py (no "
                         "corpora and cells)")
    ua = {corpus: cell["ua_restricted"] for corpus in results["corpora"]
          if (cell := results["cells"].get(f"{row}-{corpus}")) is not None
          and "ua_restricted" in cell}
    if not ua:
        raise ValueError(f"{table} has no cell of row {row!r}")
    budget = {key: results.get("settings", {}).get(key) for key in LOCO_BUDGET}
    return {"table": table, "row": row, "corpora": results["corpora"], "ua": ua,
            "settings": budget}


def leave_one_corpus_out_test(loco: dict) -> dict:
    """The candidate's row against the reference's, paired by held-out corpus: it passes
    when both rows have every corpus of the reference's table and the mean gains; a gain
    whose interval holds 0 passes but is marked as within the cells' noise. The tables'
    budgets are recorded: a difference other than the recipe's own is the reader's to
    weigh (fp32 against bf16 moved ablation cells by up to 0.12)."""
    candidate, reference = loco["candidate"], loco["reference"]
    missing = {name: sorted(set(reference["corpora"]) - set(row["ua"]))
               for name, row in loco.items()}
    common = [c for c in reference["corpora"] if c in candidate["ua"] and c in reference["ua"]]
    differences = [candidate["ua"][c] - reference["ua"][c] for c in common]
    gain = float(np.mean(differences)) if differences else None
    interval = harness.paired_interval(differences).get("interval")
    problem = (f"cells missing: {missing}" if any(missing.values()) else
               None if gain > 0 else "no gain")
    return {"candidate": candidate, "reference": reference, "corpora": common,
            "mean_gain": gain, "interval_95": interval,
            "within_noise": interval is not None and interval[0] <= 0 <= interval[1],
            "budgets_differ": sorted(k for k in LOCO_BUDGET if candidate["settings"][k]
                                     != reference["settings"][k]),
            "passed": problem is None, **({"why": problem} if problem else {})}


def call_benchmark_test(calls: dict[str, dict], incumbent: str) -> dict:
    """Utterance UA up and the customer negative share error down on the call benchmark's
    test split (eval_calls.py's reports); a figure a report lacks fails the test."""
    def figures(report: dict) -> tuple[float | None, float | None]:
        return (report.get("utterances", {}).get("ua"),
                report.get("customer_negative_share", {}).get("mean_abs_error_points"))

    (ua, share), (their_ua, their_share) = figures(calls["candidate"]), figures(calls[incumbent])
    problem = ("a report lacks utterance UA or the share error"
               if None in (ua, share, their_ua, their_share) else
               None if ua > their_ua and share < their_share else
               "utterance UA or share error not better")
    return {"utterance_ua": {"candidate": ua, incumbent: their_ua},
            "customer_share_error_points": {"candidate": share, incumbent: their_share},
            "calls": calls["candidate"].get("calls"), "passed": problem is None,
            **({"why": problem} if problem else {})}


def held_out_speakers_test(report: dict, incumbent: str) -> dict:
    """No corpus's held-out speakers lose more than HELD_OUT_DROP of restricted UA, read
    from the file or from its speech alone, on the corpora whose speakers neither model
    heard (the others are listed as seen)."""
    rows = report["corpora"]
    seen = sorted(c for c, row in rows.items() if row["candidate"]["seen_in_training"]
                  or row[incumbent]["seen_in_training"])

    def change(reading):
        return {c: round(float(reading(row["candidate"]) - reading(row[incumbent])), 4)
                for c, row in rows.items() if c not in seen}
    as_recorded = change(lambda figures: figures["ua_restricted"])
    speech = change(lambda figures: figures["speech_only"]["ua_restricted"])
    dropped = sorted(c for c in as_recorded
                     if min(as_recorded[c], speech[c]) < -HELD_OUT_DROP)
    problem = ("no corpus whose speakers both models held out" if not as_recorded else
               f"dropped by more than {100 * HELD_OUT_DROP:.0f} points: {dropped}"
               if dropped else None)
    return {"change_by_corpus": as_recorded, "change_by_corpus_speech_only": speech,
            "seen_by_a_model": seen, "dropped": dropped,
            "most_allowed_drop": HELD_OUT_DROP, "passed": problem is None,
            **({"why": problem} if problem else {})}


def adoption(report: dict, calls: dict[str, dict], loco: dict, incumbent: str) -> dict:
    """Issue 23's rule for a new default model, against `incumbent`: leave-one-corpus-out
    and the call benchmark's test split both improve, and no corpus's held-out speakers
    drop by more than HELD_OUT_DROP; each test says its figures, whether it passed, and
    why not."""
    tests = {"leave_one_corpus_out": leave_one_corpus_out_test(loco),
             "call_benchmark_test": call_benchmark_test(calls, incumbent),
             "held_out_speakers": held_out_speakers_test(report, incumbent)}
    return {"candidate": report["models"]["candidate"], "incumbent": incumbent,
            "tests": tests, "adopt": all(t["passed"] for t in tests.values())}


def adoption_markdown(verdict: dict) -> str:
    tests, incumbent = verdict["tests"], verdict["incumbent"]
    loco, calls, held = (tests["leave_one_corpus_out"], tests["call_benchmark_test"],
                         tests["held_out_speakers"])

    def result(test: dict, note: str = "") -> str:
        return "passed" + note if test["passed"] else f"failed: {test['why']}"

    def percent(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}"

    def points(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    def mean(row: dict) -> float | None:  # over the corpora both rows have
        return float(np.mean([row["ua"][c] for c in loco["corpora"]])) if loco["corpora"] \
            else None

    interval = f" [{100 * loco['interval_95'][0]:+.1f}, {100 * loco['interval_95'][1]:+.1f}]" \
        if loco["interval_95"] else ""
    gain = "–" if loco["mean_gain"] is None else f"{100 * loco['mean_gain']:+.1f}{interval}"
    lines = [f"**{'Adopt' if verdict['adopt'] else 'Keep'}**: {verdict['candidate']['model']}"
             f" against {incumbent} (issue 23's rule: every test must pass).", "",
             "| test | candidate | " + incumbent + " | change | result |",
             "| --- | --- | --- | --- | --- |",
             f"| leave-one-corpus-out, mean restricted UA over {len(loco['corpora'])} corpora "
             f"(row {loco['candidate']['row']} of {loco['candidate']['table']} against row "
             f"{loco['reference']['row']} of {loco['reference']['table']}) | "
             f"{percent(mean(loco['candidate']))} | {percent(mean(loco['reference']))} | "
             f"{gain} | "
             + result(loco, " (within the cells' noise)" if loco["within_noise"] else "")
             + " |"]
    ua, share = calls["utterance_ua"], calls["customer_share_error_points"]
    change = "–" if None in (ua["candidate"], ua[incumbent]) else \
        f"{100 * (ua['candidate'] - ua[incumbent]):+.1f}"
    share_change = "–" if None in (share["candidate"], share[incumbent]) else \
        f"{share['candidate'] - share[incumbent]:+.1f}"
    lines += [f"| call benchmark test split ({calls['calls']} calls), utterance UA | "
              f"{percent(ua['candidate'])} | {percent(ua[incumbent])} | {change} | "
              f"{result(calls)} |",
              f"| same, customer negative share error (points) | {points(share['candidate'])} "
              f"| {points(share[incumbent])} | {share_change} | |"]
    for corpus, difference in held["change_by_corpus"].items():
        speech = held["change_by_corpus_speech_only"][corpus]
        lines.append(f"| held-out speakers of {corpus}, change of restricted UA (from the "
                     f"file / its speech alone) | | | {100 * difference:+.1f} / "
                     f"{100 * speech:+.1f} | "
                     f"{'failed' if corpus in held['dropped'] else 'passed'} |")
    if not held["change_by_corpus"]:
        lines.append(f"| held-out speakers | | | | {result(held)} |")
    notes = []
    if held["seen_by_a_model"]:
        notes.append("Not compared, a model heard their speakers: "
                     + ", ".join(held["seen_by_a_model"]) + ".")
    if loco["budgets_differ"]:
        notes.append("The leave-one-corpus-out tables differ in "
                     + ", ".join(f"{k} ({loco['candidate']['settings'][k]} against "
                                 f"{loco['reference']['settings'][k]})"
                                 for k in loco["budgets_differ"]) + ".")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def markdown(report: dict) -> str:
    names = list(report["models"])
    lines = ["| held-out corpus (speakers) | n | classes (chance %) | " + " | ".join(
        f"{n} UA / macro-F1 (open UA) | {n} speech only | {n} neutral recall"
        for n in names) + " |",
        "| --- | --- | --- |" + " --- | --- | --- |" * len(names)]
    for corpus, row in report["corpora"].items():
        first = row[names[0]]
        cells = []
        for name in names:
            c = row[name]
            seen = " (seen)" if c["seen_in_training"] else ""
            neutral = "" if c["neutral_recall"] is None else f"{100 * c['neutral_recall']:.1f}"
            speech = c["speech_only"]
            cells += [f"{100 * c['ua_restricted']:.1f} / {100 * c['macro_f1_restricted']:.1f} "
                      f"({100 * c['ua_open']:.1f}){seen}",
                      f"{100 * speech['ua_restricted']:.1f} / "
                      f"{100 * speech['macro_f1_restricted']:.1f}", neutral]
        speakers = ", ".join(s.split(":", 1)[1] for s in report["held_out_speakers"][corpus])
        lines.append(f"| {corpus} ({speakers}) | {first['n']} | {len(first['classes'])} "
                     f"({100 * first['chance']:.0f}) | " + " | ".join(cells) + " |")
    for name in names:
        unseen = [(row[name]["ua_restricted"], row[name]["speech_only"]["ua_restricted"])
                  for row in report["corpora"].values()
                  if not row[name]["seen_in_training"]]
        if unseen:
            recorded, speech = np.mean(unseen, axis=0)
            lines.append(f"\n{name}: mean restricted UA {100 * recorded:.1f} (speech only "
                         f"{100 * speech:.1f}) over {len(unseen)} held-out groups it never "
                         "heard.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
