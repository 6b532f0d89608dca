"""Is it the voice, the silence or the call? Every turn of a call benchmark split, scored
four times by the same model: as its corpus recorded it (the clean source file, read as
the model reads a file), as that file cut to its speech by the nightly job's detector
(segment.speech_span: what a model with mel.trim_silence reads), as the call generator
cut it before the line (callbench/generate.speech_of at -20 dBFS, read as it is: the
generator's trimming alone), and as the call carries it (cut from the call audio at the
truth's times, on its channel: the generator's trimming, the line profile's band, codecs,
noise, echo and clipping, the other talker's overlaps; read as it is, a short cut
repeated to fill a clip). On the calls the bundled model reads calm speech as negative
(test split: customer share +11.6 points, agents +17.8, whose speech is only neutral or
happy); this says how much of that each step adds. The generator's cut is by its rule of
today; calls made by an older generator (make ablation-calls) may start a take a click
earlier.

    .venv/bin/python benchmarks/line_trace.py [runs/callbench/dev] [--model DIR]

Per group of turns (all, per role, per line profile, per source corpus), each way:
restricted UA, neutral recall, the mean P(negative) of turns whose truth is not negative
(calm speech read as negative: what biases a call's share upwards), of those whose truth
is negative, and the share of neutral turns read as sad. Turns of both roles are traced
(an agent's speech is neutral or happy: any negativity there is error). Read it on dev;
it traces a cause, it fits nothing. Writes OUT/line_trace_<split>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from callmood.model.folder import default_model_dir, load_model_folder
from callmood.signal import segment
from callmood.training.corpora.base import Utterance
from callmood.training.evaluate import corpus_figures, score_utterances

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/
import harness  # noqa: E402
from ablate import pyplot  # noqa: E402
from callbench.generate import SOURCE_RATE, speech_of  # noqa: E402
from valence_readout import cut_turns  # noqa: E402

# the clean file, its speech alone, the generator's cut before the line, as the call has it
HEARD = ("source", "speech", "generator", "call")
LEGEND = {"source": "source (the clean file)",
          "speech": "speech (the clean file cut to its speech)",
          "generator": "generator (the file as the call generator cut it, no line)",
          "call": "call (cut from the call audio)"}
COLOURS = {"source": "#7f7f7f", "speech": "#1f77b4", "generator": "#ff7f0e",
           "call": "#d62728"}
GENERATOR_LEVEL = 10 ** (-20 / 20)  # the generator's mean speaking level, -20 dBFS
# the generator's cuts are kept per rule (its code and constants): a changed rule never
# reuses cuts of the old one
GENERATOR_CUTS = "generator-" + hashlib.sha256("\0".join([
    inspect.getsource(speech_of), inspect.getsource(segment.take_bounds),
    repr((segment.TAKE_FLOOR_DB, segment.TAKE_MIN_RUN_S, GENERATOR_LEVEL))]).encode()
).hexdigest()[:12]


def generator_cuts(sources: list[str], data: Path, work: Path) -> dict[str, str]:
    """Each source file (relative to `data`) as the call generator cuts it before the line,
    written once under WORK/GENERATOR_CUTS/ (atomically: a stopped run leaves no half
    file)."""
    cuts = {}
    for source in sorted(set(sources)):
        cut = (work / GENERATOR_CUTS / source).with_suffix(".wav")
        if not cut.is_file():
            cut.parent.mkdir(parents=True, exist_ok=True)
            try:
                speech = speech_of(str(data / source))
            except (OSError, sf.LibsndfileError, ValueError) as error:  # ValueError: empty
                raise SystemExit(f"{data / source}: the call generator could not read it "
                                 f"({error})") from error
            harness.write_wav(cut, speech * GENERATOR_LEVEL, SOURCE_RATE)
        cuts[source] = str(cut)
    return cuts


def turn_probabilities(model, turns: pd.DataFrame, data: Path, cache_dir, workers: int,
                       work: Path) -> dict[str, np.ndarray]:
    """The model's probabilities of every turn as each of HEARD presents it; a source
    file used by several turns is scored once. A SystemExit names the first file the
    model could not read."""
    sources = [Utterance(str(data / row.source), row.emotion, row.speaker, row.corpus)
               for row in turns.itertuples()]
    cuts = generator_cuts(list(turns.source), data, work)
    whole = harness.reading(model, trim_silence=False)
    heard = {"source": (model, sources),  # as the model reads a file (trimmed if it trims)
             # what the nightly job's detector keeps of it (mel.trim_silence)
             "speech": (harness.reading(model, trim_silence=True), sources),
             # a cut is speech already: read as it is, whatever the model does to a file
             "generator": (whole, [Utterance(cuts[row.source], row.emotion, row.speaker,
                                             row.corpus) for row in turns.itertuples()]),
             "call": (whole, [Utterance(row.cut, row.emotion, f"{row.call_id}:{row.role}",
                                        "calls") for row in turns.itertuples()])}
    out = {}
    for name, (reader, utterances) in heard.items():
        once = list({u.path: u for u in utterances}.values())
        scored = score_utterances(reader, once, "clean", cache_dir, workers)
        if len(scored.utterances) != len(once):
            missed = sorted({u.path for u in once} - {u.path for u in scored.utterances})
            raise SystemExit(f"{missed[0]}: the model could not read it "
                             f"({len(missed)} {name} files unread)")
        row = {u.path: i for i, u in enumerate(scored.utterances)}
        out[name] = scored.probs[[row[u.path] for u in utterances]]
    return out


def group_figures(y: np.ndarray, probs: np.ndarray, labels: list[str],
                  negative: np.ndarray) -> dict:
    """One group's figures: UA restricted to the group's classes, neutral recall and
    neutral read as sad by the argmax of all labels (as the product reads a segment),
    mean P(negative) of the turns whose truth is and is not negative."""
    p_negative = probs[:, negative].sum(1)
    truth_negative = negative[y]
    neutral = y == labels.index("neutral")
    read = probs.argmax(1)
    figures = corpus_figures(y, probs, labels)

    def mean(values):
        return round(float(values.mean()), 4) if len(values) else None
    return {"n": int(len(y)), "ua": round(figures["ua_restricted"], 4),
            "neutral_recall_open": mean(read[neutral] == labels.index("neutral")),
            "p_negative_calm": mean(p_negative[~truth_negative]),
            "p_negative_negative": mean(p_negative[truth_negative]),
            "neutral_as_sad_open": mean(read[neutral] == labels.index("sad"))
            if "sad" in labels else None}


def trace(turns: pd.DataFrame, probs: dict[str, np.ndarray], labels: list[str],
          negative: np.ndarray) -> dict:
    """Figures per group of turns (all, role, line profile, source corpus), for each way
    of HEARD."""
    y = np.array([labels.index(e) for e in turns.emotion])
    groups = {"all": {"all": np.ones(len(turns), bool)}}
    for column in ("role", "line_profile", "corpus"):
        groups[column] = {str(v): (turns[column] == v).to_numpy()
                          for v in sorted(turns[column].unique())}
    return {column: {value: {name: group_figures(y[rows], probs[name][rows], labels,
                                                 negative) for name in HEARD}
                     for value, rows in members.items()}
            for column, members in groups.items()}


FIGURES = {"ua": "UA %", "neutral_recall_open": "neutral recall % (argmax of all labels)",
           "p_negative_calm": "P(negative) of calm turns %",
           "p_negative_negative": "P(negative) of negative turns %",
           "neutral_as_sad_open": "neutral read as sad % (argmax of all labels)"}


def markdown(report: dict) -> str:
    lines = [f"{report['turns']} turns of {report['calls_traced']} calls of "
             f"{report['calls']}, scored by {report['model']}, each figure four ways: "
             "as the corpus recorded the turn (source) / the same file cut to its speech "
             "by the nightly job's detector (speech) / as the call generator cut it before "
             "the line (generator) / as the call carries it (call).", "",
             "| group | turns | " + " | ".join(FIGURES.values()) + " |",
             "| --- | --- | " + " | ".join("---" for _ in FIGURES) + " |"]
    for column, members in report["groups"].items():
        for value, heard in members.items():
            cells = []
            for key in FIGURES:
                values = [heard[name][key] for name in HEARD]
                cells.append("–" if None in values
                             else " / ".join(f"{100 * v:.1f}" for v in values))
            name = value if column == "all" else f"{column}: {value}"
            lines.append(f"| {name} | {heard['call']['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Two panels, each bar group one bar per way of HEARD: UA per source corpus (what the
    silence around a take is worth), and the calm turns' P(negative) per line profile."""
    plt = pyplot()
    groups = report["groups"]
    panels = (("UA %, by the turn's corpus", "ua",
               {"all turns": groups["all"]["all"], **groups["corpus"]}),
              ("P(negative) of calm turns %, by line", "p_negative_calm",
               {"all turns": groups["all"]["all"], **groups["line_profile"]}))
    height = max(len(members) for _, _, members in panels)
    figure, axes = plt.subplots(1, 2, figsize=(11, 1.8 + 0.5 * height))
    bar = 0.8 / len(HEARD)
    for ax, (title, key, members) in zip(axes, panels, strict=True):
        rows = np.arange(len(members))
        for i, heard in enumerate(HEARD):
            ax.barh(rows + (i - (len(HEARD) - 1) / 2) * bar,
                    [100 * m[heard][key] for m in members.values()],
                    height=bar * 0.95, color=COLOURS[heard], label=LEGEND[heard])
        ax.set_yticks(rows, list(members), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    figure.suptitle(f"{report['model_name']} on the {report['split']} calls' turns: the "
                    "clean file, its speech alone, the generator's cut, the call", fontsize=10)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
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
                               args.workers, args.work)
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
