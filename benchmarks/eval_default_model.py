"""A candidate default model on the figures its card reports, beside the bundled model.

Per corpus, the candidate's held-out speakers (the test speakers in its callmood.json:
RAVDESS fold-1 actors and a speaker group of every other corpus), scored with
training.evaluate.held_out_corpus_metrics: UA and macro-F1 over the classes the corpus
has, open UA over all labels, neutral recall, chance level. A compared model is scored on
the same utterances; where it trained on some of those speakers, its figure is marked
"seen" and is not a held-out result. Then sample_calls/ through
benchmarks/eval_sample_calls.py, once per model.

    .venv/bin/python benchmarks/eval_default_model.py --model runs/default_model \\
        --compare bundled=callmood/default_model --out runs/default_model_eval

writes OUT/held_out.{json,md}, OUT/<corpus>_confusion.png (candidate) and
OUT/sample_calls_<name>/.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "runs" / "default_model"))
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=DIR")
    harness.add_shared_option(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "default_model_eval")
    args = parser.parse_args()
    models = {"candidate": args.model} | dict(spec.split("=", 1) for spec in args.compare)
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
            row[name] = figures | {"seen_in_training": trained_on(model, corpus, speakers)}
            print(f"{corpus:>8} {name:>10}: restricted UA {100 * figures['ua_restricted']:.1f}"
                  f" (chance {100 * figures['chance']:.0f}), open UA "
                  f"{100 * figures['ua_open']:.1f}", flush=True)
        candidate = row["candidate"]
        plot_confusion(np.array(candidate["confusion_restricted"]), candidate["labels"],
                       args.out / f"{corpus}_confusion.png",
                       f"{loaded['candidate'].name}, held-out {corpus} speakers")
        report["corpora"][corpus] = row
    harness.write_json(args.out / "held_out.json", report)
    harness.write_text(args.out / "held_out.md", markdown(report))
    print(markdown(report))
    for name, folder in models.items():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_sample_calls.py"),
                        "--model", folder, "--out", str(args.out / f"sample_calls_{name}")],
                       check=True)


def markdown(report: dict) -> str:
    names = list(report["models"])
    lines = ["| held-out corpus (speakers) | n | classes (chance %) | " + " | ".join(
        f"{n} UA / macro-F1 (open UA) | {n} neutral recall" for n in names) + " |",
        "| --- | --- | --- |" + " --- | --- |" * len(names)]
    for corpus, row in report["corpora"].items():
        first = row[names[0]]
        cells = []
        for name in names:
            c = row[name]
            seen = " (seen)" if c["seen_in_training"] else ""
            neutral = "" if c["neutral_recall"] is None else f"{100 * c['neutral_recall']:.1f}"
            cells += [f"{100 * c['ua_restricted']:.1f} / {100 * c['macro_f1_restricted']:.1f} "
                      f"({100 * c['ua_open']:.1f}){seen}", neutral]
        speakers = ", ".join(s.split(":", 1)[1] for s in report["held_out_speakers"][corpus])
        lines.append(f"| {corpus} ({speakers}) | {first['n']} | {len(first['classes'])} "
                     f"({100 * first['chance']:.0f}) | " + " | ".join(cells) + " |")
    for name in names:
        unseen = [row[name]["ua_restricted"] for row in report["corpora"].values()
                  if not row[name]["seen_in_training"]]
        if unseen:
            lines.append(f"\n{name}: mean restricted UA {100 * np.mean(unseen):.1f} over "
                         f"{len(unseen)} held-out groups it never heard.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
