"""Is it the voice or the call? Every turn of a call benchmark split, scored twice by the
same model: as its corpus recorded it (the clean source file) and as the call carries it
(cut from the call audio at the truth's times, on its channel: the line profile's band,
codecs, noise, echo and clipping). On the calls the bundled model reads calm speech as
negative (test split: customer share +11.6 points, agents +17.8, whose speech is only
neutral or happy); this says how much of that the call adds to what the voice alone gives.

    .venv/bin/python benchmarks/line_trace.py [runs/callbench/dev] [--model DIR]

Per group of turns (all, per role, per line profile, per source corpus), source -> call:
restricted UA, neutral recall, the mean P(negative) of turns whose truth is not negative
(calm speech read as negative: what biases a call's share upwards), of those whose truth
is negative, and the share of neutral turns read as sad. Turns of both roles are traced
(an agent's speech is neutral or happy: any negativity there is error). Read it on dev;
it traces a cause, it fits nothing. Writes OUT/line_trace_<split>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from callmood.model.folder import default_model_dir, load_model_folder
from callmood.training.corpora.base import Utterance
from callmood.training.evaluate import corpus_figures, score_utterances

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/
import harness  # noqa: E402
from ablate import pyplot  # noqa: E402
from valence_readout import cut_turns  # noqa: E402

HEARD = ("source", "call")  # the clean source file, the turn as the call carries it
LEGEND = {"source": "source (the clean file)", "call": "call (cut from the call audio)"}


def turn_probabilities(model, turns: pd.DataFrame, data: Path, cache_dir,
                       workers: int) -> dict[str, np.ndarray]:
    """The model's probabilities of every turn, as its source file and as cut from the
    call; a SystemExit naming the first file the model could not read."""
    heard = {"source": [Utterance(str(data / row.source), row.emotion, row.speaker,
                                  row.corpus) for row in turns.itertuples()],
             "call": [Utterance(row.cut, row.emotion, f"{row.call_id}:{row.role}", "calls")
                      for row in turns.itertuples()]}
    out = {}
    for name, utterances in heard.items():
        scored = score_utterances(model, utterances, "clean", cache_dir, workers)
        if len(scored.utterances) != len(utterances):
            missed = sorted({u.path for u in utterances} - {u.path for u in scored.utterances})
            raise SystemExit(f"{missed[0]}: the model could not read it "
                             f"({len(missed)} {name} files unread)")
        out[name] = scored.probs
    return out


def group_figures(y: np.ndarray, probs: np.ndarray, labels: list[str],
                  negative: np.ndarray) -> dict:
    """One group's figures: restricted UA, neutral recall, mean P(negative) of the turns
    whose truth is and is not negative, neutral turns read as sad."""
    p_negative = probs[:, negative].sum(1)
    truth_negative = negative[y]
    neutral = y == labels.index("neutral")
    read = probs.argmax(1)
    figures = corpus_figures(y, probs, labels)

    def mean(values):
        return round(float(values.mean()), 4) if len(values) else None
    return {"n": int(len(y)), "ua": round(figures["ua_restricted"], 4),
            "neutral_recall": mean(read[neutral] == labels.index("neutral")),
            "p_negative_calm": mean(p_negative[~truth_negative]),
            "p_negative_negative": mean(p_negative[truth_negative]),
            "neutral_as_sad": mean(read[neutral] == labels.index("sad"))
            if "sad" in labels else None}


def trace(turns: pd.DataFrame, probs: dict[str, np.ndarray], labels: list[str],
          negative: np.ndarray) -> dict:
    """Figures per group of turns (all, role, line profile, source corpus), source and
    call side by side."""
    y = np.array([labels.index(e) for e in turns.emotion])
    groups = {"all": {"all": np.ones(len(turns), bool)}}
    for column in ("role", "line_profile", "corpus"):
        groups[column] = {str(v): (turns[column] == v).to_numpy()
                          for v in sorted(turns[column].unique())}
    return {column: {value: {name: group_figures(y[rows], probs[name][rows], labels,
                                                 negative) for name in HEARD}
                     for value, rows in members.items()}
            for column, members in groups.items()}


FIGURES = {"ua": "UA %", "neutral_recall": "neutral recall %",
           "p_negative_calm": "P(negative) of calm turns %",
           "p_negative_negative": "P(negative) of negative turns %",
           "neutral_as_sad": "neutral read as sad %"}


def markdown(report: dict) -> str:
    lines = [f"{report['turns']} turns of {report['calls_traced']} calls of "
             f"{report['calls']}, scored by {report['model']}: as the corpus recorded "
             "them (source) → as the call carries them (call).", "",
             "| group | turns | " + " | ".join(FIGURES.values()) + " |",
             "| --- | --- | " + " | ".join("---" for _ in FIGURES) + " |"]
    for column, members in report["groups"].items():
        for value, heard in members.items():
            cells = []
            for key in FIGURES:
                a, b = heard["source"][key], heard["call"][key]
                cells.append("–" if a is None or b is None
                             else f"{100 * a:.1f} → {100 * b:.1f}")
            name = value if column == "all" else f"{column}: {value}"
            lines.append(f"| {name} | {heard['call']['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Calm turns' P(negative), source against call, per line profile (and all turns)."""
    plt = pyplot()
    members = {"all turns": report["groups"]["all"]["all"],
               **{f"line: {k}": v for k, v in report["groups"]["line_profile"].items()},
               **{f"role: {k}": v for k, v in report["groups"]["role"].items()}}
    names = list(members)
    figure, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(names)))
    rows = np.arange(len(names))
    for offset, heard, colour in ((-0.2, "source", "#7f7f7f"), (0.2, "call", "#d62728")):
        ax.barh(rows + offset, [100 * members[n][heard]["p_negative_calm"] for n in names],
                height=0.38, color=colour, label=LEGEND[heard])
    ax.set_yticks(rows, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean P(negative) of turns whose truth is not negative, %")
    ax.set_title(f"Calm speech read as negative: {report['split']} calls, {report['model_name']}",
                 fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("calls", type=Path, nargs="?",
                        default=harness.ROOT / "runs" / "callbench" / "dev",
                        help="a split of the call benchmark (benchmarks/callbench/generate.py)")
    harness.add_shared_option(parser)
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--count", type=int, default=10 ** 6, help="the first COUNT calls")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--work", type=Path, default=harness.ROOT / "runs" / "line_trace")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    for name in ("calls.csv", "calls_truth.csv", "ground_truth.csv"):
        if not (args.calls / name).is_file():
            parser.error(f"{args.calls}: no {name} (not a split of the call benchmark; run "
                         "benchmarks/callbench/generate.py)")
    model = load_model_folder(args.model)
    turns = cut_turns(args.calls, args.count, model.mel.sample_rate, args.work,
                      roles=("customer", "agent"))
    profiles = pd.read_csv(args.calls / "calls_truth.csv")[["call_id", "line_profile"]]
    turns = turns[turns.emotion.isin(model.labels)].merge(profiles, on="call_id",
                                                          validate="many_to_one")
    probs = turn_probabilities(model, turns, args.shared / "data", args.cache_dir,
                               args.workers)
    negative = np.array([model.card.valence[label] < 0 for label in model.labels])
    report = {"calls": str(args.calls), "split": args.calls.name, "model": str(args.model),
              "model_name": model.name, "model_version": model.version, "turns": len(turns),
              "calls_traced": int(turns.call_id.nunique()),
              "groups": trace(turns, probs, model.labels, negative),
              "machine": harness.machine("torch")}
    name = f"line_trace_{args.calls.name}"
    harness.write_json(args.out / f"{name}.json", report)
    harness.write_text(args.out / f"{name}.md", markdown(report))
    plot(report, args.out / f"{name}.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
