"""What a manager would read, against the truth: score a folder of calls with `callmood score`
exactly as a user would, then compare per-call and per-agent figures with the calls' truth.

    .venv/bin/python benchmarks/eval_calls.py runs/callbench/test [--live] [--model DIR]
        [--out benchmarks/results/callbench_test.json] [-- options of `callmood score`]

The folder holds calls.csv, the audio, ground_truth.csv (one row per utterance: call_id,
channel, role, start_s, end_s, emotion) and optionally calls_truth.csv (one row per call:
story, escalates, language, line_profile; benchmarks/callbench/generate.py writes both).
Without calls_truth.csv (sample_calls/), the per-call truth comes from ground_truth.csv and
`--escalating` / `--calm` name the calls that should and should not be flagged.

Reported: the customer negative share error per call (mean absolute, in points, with a
bootstrap 95 % interval over calls), escalation precision / recall / F1 and the false-alarm
rate on calm and happy calls, utterance UA / WA / neutral recall and the confusion matrix,
the agents' negative share (agents speak neutral and happy: any negative share is error),
each broken down by language and line profile where the truth has them. With --live every
call is also streamed through live scoring (`StreamScorer`, faster than real time): alert
precision / recall / F1 and the seconds from the customer's first negative utterance to
the alert.

Segments take the label of the truth utterance they overlap most on their channel when that
covers at least half the segment; an utterance's prediction is the mean probability of its
segments.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from callmood.dashboard import connect
from callmood.model.folder import default_model_dir, load_model_folder
from callmood.results.call_summary import CallAnalytics
from callmood.training.evaluate import classification_metrics, plot_confusion

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

BOOTSTRAP = 2000
CALM_STORIES = ("calm", "happy")


# ------------------------------------------------------------------ scoring as a user would
def callmood_command() -> list[str]:
    """The `callmood` of this environment (the venv's script), else the module."""
    script = Path(sys.executable).parent / "callmood"
    return [str(script)] if script.exists() else [sys.executable, "-m", "callmood.cli"]


def score_folder(calls: Path, results: Path, model: str, extra: list[str]) -> None:
    command = [*callmood_command(), "score", str(calls), "--out", str(results),
               "--model", model, *extra]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def read_results(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    con = connect(results)
    return con.sql("SELECT * FROM segments").df(), con.sql("SELECT * FROM calls").df()


# ------------------------------------------------------------------ truth
def overlap(a_start, a_end, b_start, b_end) -> np.ndarray:
    return np.clip(np.minimum(a_end, b_end) - np.maximum(a_start, b_start), 0, None)


def match_segments(segments: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Truth label and utterance index of each segment (None / -1 when unmatched)."""
    segments = segments.copy()
    segments["true_emotion"], segments["utterance"] = None, -1
    for (call, channel), group in segments.groupby(["call_id", "channel"]):
        utterances = truth[(truth.call_id == call) & (truth.channel == channel)]
        if utterances.empty:
            continue
        shared = overlap(group.start_s.values[:, None], group.end_s.values[:, None],
                         utterances.start_s.values[None, :], utterances.end_s.values[None, :])
        best = shared.argmax(axis=1)
        enough = shared[np.arange(len(group)), best] >= 0.5 * (group.end_s - group.start_s)
        segments.loc[group.index[enough], "true_emotion"] = \
            utterances.emotion.values[best[enough]]
        segments.loc[group.index[enough], "utterance"] = utterances.index.values[best[enough]]
    return segments


def role_negative_share(utterances: pd.DataFrame, negative, role: str) -> pd.Series:
    """Per call: the share of `role`'s speech time in `utterances` that `negative` (one flag
    per row) marks."""
    rows = utterances.assign(seconds=utterances.end_s - utterances.start_s,
                             negative=np.asarray(negative))
    rows = rows[rows.role == role]
    return rows.groupby("call_id").apply(
        lambda t: (t.seconds * t.negative).sum() / t.seconds.sum(), include_groups=False)


def call_truth(calls_dir: Path, truth: pd.DataFrame, negative: set[str],
               escalating: list[str], calm: list[str]) -> pd.DataFrame:
    """One row per call: true customer / agent negative share, escalates, calm, language,
    line profile (from calls_truth.csv when the folder has one)."""
    is_negative = truth.emotion.isin(negative)
    table = pd.DataFrame({"customer_negative_true": role_negative_share(truth, is_negative,
                                                                        "customer"),
                          "agent_negative_true": role_negative_share(truth, is_negative,
                                                                     "agent")})
    table.index.name = "call_id"
    path = calls_dir / "calls_truth.csv"
    if path.exists():
        given = pd.read_csv(path).set_index("call_id")
        table = table.join(given[["story", "escalates", "language", "line_profile", "mono"]],
                           how="outer")
        table["calm"] = table.story.isin(CALM_STORIES)
    else:
        table["escalates"] = table.index.isin(escalating)
        table["calm"] = table.index.isin(calm)
        table["judged"] = table.escalates | table.calm  # the others are not claimed either way
    return table


# ------------------------------------------------------------------ figures
def bootstrap_interval(values: np.ndarray, seed: int = 0) -> list[float] | None:
    """95 % percentile interval of the mean, resampling calls."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(len(values), size=(BOOTSTRAP, len(values)))].mean(axis=1)
    return [round(float(x), 4) for x in np.percentile(means, [2.5, 97.5])]


def flag_figures(flagged: pd.Series, table: pd.DataFrame) -> dict:
    """Precision / recall / F1 of `flagged` (per call) against table.escalates, and the
    false-alarm rate on calm calls."""
    judged = table[table.get("judged", True)] if "judged" in table else table
    flags = flagged.reindex(judged.index).fillna(False).astype(bool)
    truth = judged.escalates.astype(bool)
    tp = int((flags & truth).sum())
    fp, fn = int((flags & ~truth).sum()), int((~flags & truth).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else None
    calm = judged.calm.astype(bool)
    return {"escalating_calls": int(truth.sum()), "flagged": int(flags.sum()),
            "true_positives": tp, "precision": precision, "recall": recall, "f1": f1,
            "calm_calls": int(calm.sum()),
            "false_alarm_rate_calm": float(flags[calm].mean()) if calm.any() else None,
            "missed": sorted(truth.index[truth & ~flags]),
            "false_alarms": sorted(truth.index[flags & ~truth])}


def share_figures(shown: pd.Series, true: pd.Series) -> dict:
    """Mean absolute error in points of a per-call share, with its bootstrap interval."""
    both = pd.concat([shown.rename("shown"), true.rename("true")], axis=1).dropna()
    errors = (both.shown - both.true).abs().to_numpy() * 100
    interval = bootstrap_interval(errors)
    return {"calls": int(len(both)),
            "mean_abs_error_points": round(float(errors.mean()), 2) if len(both) else None,
            "interval_95": interval,
            "mean_bias_points": round(float((both.shown - both.true).mean() * 100), 2)
            if len(both) else None}


def utterance_predictions(matched: pd.DataFrame, labels: list[str]) -> pd.Series:
    """Per truth utterance heard in the calls (indexed as the truth): the label id that
    the mean probabilities of its matched segments choose."""
    scored = matched[matched.true_emotion.isin(labels)]
    probs = scored.groupby("utterance")[[f"p_{label}" for label in labels]].mean()
    return pd.Series(probs.to_numpy().argmax(axis=1), index=probs.index, dtype=int)


def utterance_figures(matched: pd.DataFrame, truth: pd.DataFrame, labels: list[str]) -> dict:
    predicted = utterance_predictions(matched, labels)
    if predicted.empty:
        return {"n": 0}
    label_id = {label: i for i, label in enumerate(labels)}
    y_true = truth.emotion.loc[predicted.index].map(label_id).to_numpy()
    metrics = classification_metrics(y_true, predicted.to_numpy(), labels)
    neutral = metrics["per_class"].get("neutral", {})
    return {"n": metrics["n"], "ua": round(metrics["ua"], 4), "wa": round(metrics["wa"], 4),
            "macro_f1": round(metrics["macro_f1"], 4),
            "neutral_recall": round(neutral["recall"], 4) if neutral.get("support") else None,
            "confusion": metrics["confusion"], "labels": labels}


def negative_columns(frame: pd.DataFrame, role: str, negative: set[str]) -> pd.Series:
    columns = [c for c in frame.columns
               if c.startswith(f"{role}_share_") and c.split("_share_", 1)[1] in negative]
    shares = frame[columns]
    return shares.sum(axis=1).where(shares.notna().any(axis=1))


def figures(segments: pd.DataFrame, calls: pd.DataFrame, truth: pd.DataFrame,
            table: pd.DataFrame, labels: list[str], negative: set[str],
            confusion: bool = True) -> dict:
    """Every figure of one group of calls (all, or one language / line profile)."""
    calls = calls.set_index("call_id").reindex(table.index)
    matched = match_segments(segments, truth)
    shares = share_figures(calls.customer_negative_share, table.customer_negative_true)
    if "customer_negative_share_low" in calls:  # how often the stored 95 % interval holds
        both = pd.concat([calls.customer_negative_share_low, calls.customer_negative_share_high,
                          table.customer_negative_true], axis=1).dropna()
        shares["interval_coverage"] = round(float(
            ((both.iloc[:, 0] <= both.iloc[:, 2]) & (both.iloc[:, 2] <= both.iloc[:, 1])).mean()
        ), 4) if len(both) else None
    out = {
        "calls": int(len(table)),
        "customer_negative_share": shares,
        "agent_negative_share": share_figures(negative_columns(calls, "agent", negative),
                                              table.agent_negative_true.fillna(0.0)),
        "escalation": flag_figures(calls.escalated, table),
        "utterances": utterance_figures(matched, truth, labels),
    }
    if not confusion:
        out["utterances"].pop("confusion", None)
        out["utterances"].pop("labels", None)
        out["escalation"].pop("missed")
        out["escalation"].pop("false_alarms")
    return out


def breakdowns(segments, calls, truth, table, labels, negative) -> dict:
    out = {}
    for key in ("language", "line_profile", "story"):
        if key not in table:
            continue
        out[key] = {}
        for value, group in table.groupby(key):
            ids = set(group.index)
            out[key][str(value)] = figures(segments[segments.call_id.isin(ids)],
                                           calls[calls.call_id.isin(ids)],
                                           truth[truth.call_id.isin(ids)], group, labels,
                                           negative, confusion=False)
    return out


def classifier_limit(truth: pd.DataFrame, table: pd.DataFrame, confusion: list,
                     labels: list[str], negative: set[str], durations: pd.Series,
                     analytics, draws: int = 20) -> dict:
    """What the measured confusion alone costs: each truth utterance takes a label drawn
    from its true label's row of the utterance confusion, and the product's share and
    escalation rule run on those labels (one per utterance, certain). Per-call errors near
    the measured ones say the classifier, not the aggregation, limits them."""
    from callmood.results.call_summary import escalation_rule

    rates = np.array(confusion, dtype=float)
    rates = rates / np.where(rates.sum(axis=1, keepdims=True) > 0,
                             rates.sum(axis=1, keepdims=True), 1)
    label_id = {label: i for i, label in enumerate(labels)}
    customer = truth[(truth.role == "customer") & truth.emotion.isin(labels)]
    true_ids = customer.emotion.map(label_id).to_numpy()
    known = rates[true_ids].sum(axis=1) > 0  # classes the run had utterances of
    customer, true_ids = customer[known], true_ids[known]
    is_negative = np.array([label in negative for label in labels])
    rng = np.random.default_rng(0)
    errors, f1s = [], []
    for _ in range(draws):
        drawn = np.array([rng.choice(len(labels), p=rates[t]) for t in true_ids])
        rows = customer.assign(negative=is_negative[drawn])
        shares = role_negative_share(rows, rows.negative, "customer")
        errors.append(share_figures(shares, table.customer_negative_true)
                      ["mean_abs_error_points"])
        flags = pd.Series({
            call: escalation_rule(((g.start_s + g.end_s) / 2).to_numpy(),
                                  g.negative.to_numpy(float), float(durations[call]),
                                  analytics.nightly_rule)
            for call, g in rows.groupby("call_id")})
        f1s.append(flag_figures(flags, table)["f1"] or 0.0)
    return {"draws": draws,
            "customer_negative_share_error_points": round(float(np.mean(errors)), 2),
            "escalation_f1": round(float(np.mean(f1s)), 3),
            "note": "the product's figures if each utterance were labelled by the measured "
                    "confusion, independently; perfect labels give 0 points and F1 1"}


# ------------------------------------------------------------------ live alerts
def live_alerts(calls_dir: Path, model, analytics, chunk_s: float = 1.0) -> pd.DataFrame:
    """Stream every call of calls.csv through StreamScorer; per call the alert time (NaN
    when none) and whether the final summary flags it."""
    from callmood.live.stream import StreamScorer
    from callmood.results.meta import CallMeta
    from callmood.signal.audio import read_channels

    rows = []
    listed = pd.read_csv(calls_dir / "calls.csv", dtype=str).fillna("")
    for done, call in enumerate(listed.itertuples()):
        if done % 25 == 0:
            print(f"live: {done}/{len(listed)} calls streamed", flush=True)
        meta = CallMeta(call.call_id, call.agent_id, call.queue,
                        datetime.fromisoformat(call.started_at),
                        int(call.customer_channel) if call.customer_channel else None)
        audio, rate = read_channels(calls_dir / call.file)
        scorer = StreamScorer(model, meta, audio.shape[0], rate, analytics=analytics)
        step = int(chunk_s * rate)
        alert = np.nan
        for start in range(0, audio.shape[1], step):
            for event in scorer.feed(audio[:, start:start + step]):
                if event["type"] == "alert":
                    alert = event["at_s"]
        summary = scorer.finish()[-1]
        rows.append({"call_id": meta.call_id, "alert_at_s": alert,
                     "flagged_at_end": bool(summary["escalated"])})
    return pd.DataFrame(rows).set_index("call_id")


def alert_figures(alerts: pd.DataFrame, table: pd.DataFrame, truth: pd.DataFrame,
                  negative: set[str]) -> dict:
    fired = alerts.alert_at_s.notna()
    out = flag_figures(fired, table)
    customer = truth[(truth.role == "customer") & truth.emotion.isin(negative)]
    first_negative = customer.groupby("call_id").start_s.min()
    hits = alerts[fired & alerts.index.isin(table.index[table.escalates.astype(bool)])]
    delays = (hits.alert_at_s - first_negative.reindex(hits.index)).dropna()
    out["seconds_from_first_negative_utterance"] = {
        "median": round(float(delays.median()), 1) if len(delays) else None,
        "p90": round(float(delays.quantile(0.9)), 1) if len(delays) else None,
        "n": int(len(delays))}
    return out


# ------------------------------------------------------------------ the report
def used_analytics(results: Path, model) -> CallAnalytics:
    """The call analytics the scoring of `results` used (its score_config.json; the
    model's own where none is recorded), so that the live alerts and the classifier's
    limit read the calls as their stored figures were made."""
    recorded = results / "score_config.json"
    settings = json.loads(recorded.read_text()).get("analytics") if recorded.is_file() else None
    return CallAnalytics.from_fitted(settings, str(recorded)) if settings \
        else CallAnalytics.of_model(model)


def evaluate_folder(calls_dir: Path, results: Path, model_dir: str, *, live: bool,
                    escalating: list[str], calm: list[str]) -> dict:
    """Every figure of a scored folder."""
    model = load_model_folder(model_dir)
    analytics = used_analytics(results, model)
    negative = {label for label, v in model.card.valence.items() if v < 0}
    truth = pd.read_csv(calls_dir / "ground_truth.csv")
    table = call_truth(calls_dir, truth, negative, escalating, calm)
    segments, calls = read_results(results)
    report = {"model": model.name, "model_version": model.version,
              "calls_folder": str(calls_dir), "negative": sorted(negative),
              **figures(segments, calls, truth, table, model.labels, negative),
              "by": breakdowns(segments, calls, truth, table, model.labels, negative)}
    if "story" in table and "confusion" in report["utterances"]:
        report["classifier_limit"] = classifier_limit(
            truth, table, report["utterances"]["confusion"], model.labels, negative,
            calls.set_index("call_id").duration_s, analytics)
    if live:
        report["live_alerts"] = alert_figures(live_alerts(calls_dir, model, analytics), table,
                                              truth, negative)
    return report


def headline(report: dict) -> str:
    share, esc = report["customer_negative_share"], report["escalation"]
    utt = report["utterances"]
    line = (f"{report['calls']} calls: customer negative share error "
            f"{share['mean_abs_error_points']} points {share['interval_95']}; escalation "
            f"P {fmt(esc['precision'])} R {fmt(esc['recall'])} F1 {fmt(esc['f1'])}, "
            f"false alarms on calm calls {fmt(esc['false_alarm_rate_calm'])}; utterances UA "
            f"{fmt(utt.get('ua'))} WA {fmt(utt.get('wa'))} neutral recall "
            f"{fmt(utt.get('neutral_recall'))}; agents' negative share "
            f"{report['agent_negative_share']['mean_abs_error_points']} points")
    if "classifier_limit" in report:
        limit = report["classifier_limit"]
        line += (f"; with the measured confusion alone: share error "
                 f"{limit['customer_negative_share_error_points']} points, escalation F1 "
                 f"{limit['escalation_f1']}")
    if "live_alerts" in report:
        live = report["live_alerts"]
        line += (f"; live alerts P {fmt(live['precision'])} R {fmt(live['recall'])} F1 "
                 f"{fmt(live['f1'])}, median "
                 f"{live['seconds_from_first_negative_utterance']['median']} s after the "
                 "first negative utterance")
    return line


def fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="Options after -- go to `callmood score`.")
    parser.add_argument("calls", type=Path, help="a folder of calls with ground_truth.csv")
    parser.add_argument("--model", default=str(default_model_dir()))
    parser.add_argument("--results", type=Path,
                        help="score into this folder and keep it (None: a temporary one)")
    parser.add_argument("--reuse", action="store_true",
                        help="use --results as it is, without scoring again")
    parser.add_argument("--live", action="store_true", help="also stream every call live")
    parser.add_argument("--escalating", default="",
                        help="comma-separated calls that escalate (without calls_truth.csv)")
    parser.add_argument("--calm", default="",
                        help="comma-separated calm calls (without calls_truth.csv)")
    parser.add_argument("--out", type=Path, help="the JSON report (None: printed only)")
    parser.add_argument("--confusion-png", type=Path, help="a picture of the confusion")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    extra = argv[cut + 1:]  # after --: options passed to `callmood score`
    temporary = None
    results = args.results
    if results is None:
        temporary = tempfile.mkdtemp(prefix="callmood-eval-")
        results = Path(temporary) / "results"
    try:
        if not args.reuse:
            if results.exists():
                shutil.rmtree(results)
            score_folder(args.calls, results, args.model, extra)
        report = evaluate_folder(args.calls, results, args.model, live=args.live,
                                 escalating=[c for c in args.escalating.split(",") if c],
                                 calm=[c for c in args.calm.split(",") if c])
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    report["score_options"] = extra
    report["machine"] = harness.machine("torch")
    print(headline(report))
    if args.out:
        harness.write_json(args.out, report)
    if args.confusion_png:
        plot_confusion(np.array(report["utterances"]["confusion"]), report["utterances"]["labels"],
                       args.confusion_png, f"{report['model']} on {args.calls.name} (utterances)")


if __name__ == "__main__":
    main()
