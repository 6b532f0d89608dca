"""Fit the call analytics (callmood.results.call_summary.CallAnalytics) on the call
benchmark's dev split, from segments scored once.

    .venv/bin/python benchmarks/fit_call_analytics.py runs/callbench/dev \
        --results runs/callbench_results/dev [--out benchmarks/results/call_analytics_fit.json]

The calls are not scored again: every candidate setting recomputes each call's figures from
the stored segment probabilities with `summarize_call`, as `callmood score` would. In order:

1. persistence, evidence weight and the share method: the customers' persistence gives the
   smallest mean absolute error of the customer negative share per call, the agents' the
   smallest agent negative share (agents speak neutral and happy, so any negative share of
   theirs is error); the share method, the smaller mean of the two;
2. the escalation rule's thresholds (rise, evidence, segments): the best F1 among the
   settings with at most 5 % false alarms on calm and happy calls, both averaged over
   bootstrap resamples of the dev calls, so that no choice rests on a few calls (on ties,
   the one that asks for the most evidence);
3. the model's own error of a call's share (`share_error_sd`): the spread the dev residuals
   have beyond what the segment probabilities explain, so the 95 % intervals cover 95 % there;
4. the live alert: the rule read forward only on the call so far, after each customer
   segment, firing once it has held for `confirm_segments` segments in a row; its own
   thresholds (`live_min_rise`, ...) and that count are chosen as in 2 (the best F1 among
   those with at most 5 % false alarms on calm and happy calls), then the earliest alerts.
   A rule that may fire after every segment needs more evidence than the nightly one,
   read once: with the nightly thresholds v4's live alerts fired on 19 % of the calm dev
   calls after 2 segments, 13 % after 6 and 1.9 % only after 12, at F1 0.29 (its own
   thresholds: 3.8 % at F1 0.48).

The results must be the model's own (`callmood score --model DIR`; a fit on another
model's segments is refused). The report lists every candidate's figures and the chosen
setting; `--write-card` also writes the chosen setting into the model folder
(call_analytics.json), and `callmood score`, `callmood live` and eval_calls.py then read
that model's calls with it. CallAnalytics' defaults (for folders without their own) are
the bundled model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from callmood.model.folder import default_model_dir, load_model_folder, write_call_analytics
from callmood.results.call_summary import (
    LIVE_THRESHOLDS,
    CallAnalytics,
    EscalationRule,
    alert_held_counts,
    alert_trend,
    escalation_rule,
    first_alert,
    negative_share_interval,
    smoothed_by_role,
    summarize_call,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/
import eval_calls  # noqa: E402
import harness  # noqa: E402

PERSISTENCE_S = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0)
EVIDENCE_WEIGHTS = (0.5, 0.7, 1.0)
MIN_RISE = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
MIN_EVIDENCE = (0.0, 1.0, 2.0, 3.0, 4.0)
MIN_SEGMENTS = (1, 2, 4, 8)
CONFIRM = (1, 2, 3, 4, 6, 8, 12)
MAX_FALSE_ALARMS = 0.05
BOOTSTRAP = 500  # resamples of the dev calls behind each choice of thresholds


def call_inputs(segments: pd.DataFrame, labels: list[str]) -> dict[str, tuple]:
    """call_id -> (roles, starts, ends, probs) of its stored segments."""
    columns = [f"p_{label}" for label in labels]
    return {call: (group.role.to_numpy(), group.start_s.to_numpy(), group.end_s.to_numpy(),
                   group[columns].to_numpy(np.float64))
            for call, group in segments.sort_values(["call_id", "start_s"]).groupby("call_id")}


def summaries(inputs: dict, durations: pd.Series, labels, valence,
              analytics: CallAnalytics) -> pd.DataFrame:
    rows = {}
    for call, (roles, starts, ends, probs) in inputs.items():
        windows = list(zip(roles, starts, ends, strict=True))
        rows[call] = summarize_call(labels, valence, float(durations[call]), windows, windows,
                                    probs, analytics)
    return pd.DataFrame.from_dict(rows, orient="index")


def customer_trends(inputs: dict, labels, valence) -> dict[str, tuple[np.ndarray, ...]]:
    """call -> (end times, mid times, negative probability) of the rule's segments, in
    time order (alert_trend)."""
    return {call: alert_trend(labels, valence, list(zip(roles, starts, ends, strict=True)),
                              probs)
            for call, (roles, starts, ends, probs) in inputs.items()}


def share_error(table: pd.DataFrame, shown: pd.Series) -> float:
    return eval_calls.share_figures(shown, table.customer_negative_true)["mean_abs_error_points"]


def fit_shares(inputs, table, durations, labels, valence) -> list[dict]:
    """Each share method and persistence, applied to customers and agents alike (the
    choice then takes the best of each role)."""
    rows = []
    negative = {label for label, v in valence.items() if v < 0}
    for shares, persistence, weight in itertools.product(("argmax", "mass"), PERSISTENCE_S,
                                                         EVIDENCE_WEIGHTS):
        if persistence == 0 and weight != 1.0:
            continue  # the weight matters only between segments
        analytics = CallAnalytics(shares=shares, persistence_s=persistence,
                                  agent_persistence_s=persistence, evidence_weight=weight)
        got = summaries(inputs, durations, labels, valence, analytics)
        agent = eval_calls.negative_columns(got.reset_index(names="call_id"), "agent", negative)
        rows.append({"shares": shares, "persistence_s": persistence,
                     "evidence_weight": weight,
                     "customer_error_points": share_error(table, got.customer_negative_share),
                     "agent_negative_points": round(float(np.nanmean(agent)) * 100, 2)})
        print(f"  {rows[-1]}", flush=True)
    return rows


def choose_shares(rows: list[dict]) -> CallAnalytics:
    """Per share method the best customer and the best agent setting; the method whose two
    bests average lower. The evidence weight is the customers' (it matters most there)."""
    best = {}
    for shares in ("argmax", "mass"):
        mine = [r for r in rows if r["shares"] == shares]
        customer = min(mine, key=lambda r: r["customer_error_points"])
        agent = min((r for r in mine if r["evidence_weight"] == customer["evidence_weight"]
                     or r["persistence_s"] == 0), key=lambda r: r["agent_negative_points"])
        best[shares] = (customer["customer_error_points"] + agent["agent_negative_points"],
                        CallAnalytics(shares=shares, persistence_s=customer["persistence_s"],
                                      agent_persistence_s=agent["persistence_s"],
                                      evidence_weight=customer["evidence_weight"]))
    return min(best.values(), key=lambda pair: pair[0])[1]


def bootstrap_flags(flags: pd.Series, table: pd.DataFrame, draws: np.ndarray) -> tuple:
    """Mean F1 and false-alarm rate of per-call `flags` over resamples of the calls (`draws`:
    rows of call positions), so that a choice rests on more than one lucky split."""
    truth = table.escalates.reindex(flags.index).astype(bool).to_numpy()
    calm = table.calm.reindex(flags.index).astype(bool).to_numpy()
    flag = flags.to_numpy(bool)
    tp = (flag & truth)[draws].sum(axis=1)
    fp = (flag & ~truth)[draws].sum(axis=1)
    fn = (~flag & truth)[draws].sum(axis=1)
    f1 = np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    false_alarms = (flag & calm)[draws].sum(axis=1) / np.maximum(calm[draws].sum(axis=1), 1)
    return float(f1.mean()), float(false_alarms.mean())


def flag_row(settings: dict, flags: pd.Series, table: pd.DataFrame, draws: np.ndarray) -> dict:
    """A candidate's `settings` with its flags' figures on the dev calls and over the
    bootstrap resamples."""
    figures = eval_calls.flag_figures(flags, table)
    f1, false_alarms = bootstrap_flags(flags, table, draws)
    return {**settings, **{k: figures[k] for k in ("precision", "recall", "f1",
                                                  "false_alarm_rate_calm")},
            "bootstrap_f1": round(f1, 4), "bootstrap_false_alarms": round(false_alarms, 4)}


def candidate_rules() -> list[EscalationRule]:
    return [EscalationRule(rise, evidence, count)
            for rise, evidence, count in itertools.product(MIN_RISE, MIN_EVIDENCE, MIN_SEGMENTS)]


def fit_rule(trends: dict, table: pd.DataFrame, durations: pd.Series,
             draws: np.ndarray) -> list[dict]:
    """Every nightly rule's figures: the rule read once on the whole call."""
    return [flag_row(dataclasses.asdict(rule),
                     pd.Series({call: escalation_rule(mids, neg, float(durations[call]), rule)
                                for call, (_, mids, neg) in trends.items()}), table, draws)
            for rule in candidate_rules()]


def fit_live(trends: dict, table: pd.DataFrame, draws: np.ndarray,
             first_negative: pd.Series) -> list[dict]:
    """Every live rule's figures (thresholds and confirmation count), read as live scoring
    reads it, with the median seconds from the customer's first negative utterance to the
    alerts on escalating calls."""
    rows = []
    for rule in candidate_rules():
        thresholds = dict(zip(LIVE_THRESHOLDS, dataclasses.astuple(rule), strict=True))
        counts = held_counts(trends, CallAnalytics(**thresholds))
        for confirm in CONFIRM:
            fired = fire_times(counts, confirm)
            hits = fired[fired.notna() & table.escalates.reindex(fired.index).astype(bool)]
            delay = (hits - first_negative.reindex(hits.index)).median()
            rows.append(flag_row(thresholds | {"confirm_segments": confirm}, fired.notna(),
                                 table, draws)
                        | {"median_s_after_first_negative":
                           None if math.isnan(delay) else round(float(delay), 1)})
    return rows


def best_flags(rows: list[dict], prefix: str = "") -> dict:
    """The best bootstrap F1 among the rows with at most MAX_FALSE_ALARMS (all rows when
    none has so few, said in `within_false_alarm_cap`), on ties the earliest alerts, then
    the most evidence asked for."""
    allowed = [r for r in rows if r["bootstrap_false_alarms"] <= MAX_FALSE_ALARMS]

    def rank(r: dict) -> tuple:
        delay = r.get("median_s_after_first_negative", 0.0)  # nightly rows have none
        return (r["bootstrap_f1"], -(math.inf if delay is None else delay),
                r[f"{prefix}min_evidence"], r[f"{prefix}min_segments"], r[f"{prefix}min_rise"])

    return max(allowed or rows, key=rank) | {"within_false_alarm_cap": bool(allowed)}


def held_counts(trends: dict, analytics: CallAnalytics) -> dict[str, tuple]:
    """call -> (end times of the rule's segments, alert_held_counts)."""
    return {call: (ends, alert_held_counts(ends, mids, neg, analytics))
            for call, (ends, mids, neg) in trends.items()}


def fire_times(counts: dict, confirm: int) -> pd.Series:
    """call -> the time the live alert fires with `confirm` segments' confirmation (NaN:
    never), from held_counts."""
    return pd.Series({call: first_alert(ends, held, confirm)
                      for call, (ends, held) in counts.items()}, dtype=float)


def live_alerts(trends: dict, analytics: CallAnalytics) -> pd.Series:
    """call -> the time the live alert fires (NaN: never)."""
    return fire_times(held_counts(trends, analytics), analytics.confirm_segments)


def customer_negatives(inputs, labels, valence, analytics: CallAnalytics):
    """call -> (customer segment durations, smoothed negative probabilities), for the calls
    with a customer channel."""
    negative = np.array([valence.get(label, 0) < 0 for label in labels])
    for call, (roles, starts, ends, probs) in inputs.items():
        customer = roles == "customer"
        if customer.any():
            smoothed = smoothed_by_role(roles, (starts + ends) / 2, probs, analytics)
            yield call, (ends - starts)[customer], smoothed[customer][:, negative].sum(axis=1)


def interval_sd(inputs, table, labels, valence, analytics: CallAnalytics) -> dict:
    """share_error_sd such that the dev residuals' variance = sampling + sd**2 on average."""
    got, sampling = {}, []
    for call, weights, neg in customer_negatives(inputs, labels, valence, analytics):
        got[call] = float(weights @ neg / weights.sum())
        sampling.append(float((weights ** 2 * neg * (1 - neg)).sum() / weights.sum() ** 2))
    residual = pd.Series(got) - table.customer_negative_true.reindex(list(got))
    sd = math.sqrt(max(0.0, float((residual ** 2).mean()) - float(np.mean(sampling))))
    return {"share_error_sd": round(sd, 3), "residual_rms": round(float(
        np.sqrt((residual ** 2).mean())), 4), "mean_sampling_sd": round(float(
            np.sqrt(np.mean(sampling))), 4)}


def coverage(inputs, table, labels, valence, analytics: CallAnalytics) -> float:
    """The share of calls whose true negative share lies in their 95 % interval."""
    inside = []
    for call, weights, neg in customer_negatives(inputs, labels, valence, analytics):
        low, high = negative_share_interval(weights, neg, float(weights @ neg / weights.sum()),
                                            analytics)
        inside.append(low <= table.customer_negative_true[call] <= high)
    return float(np.mean(inside))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("calls", type=Path, help="the dev split (calls_truth.csv, ...)")
    parser.add_argument("--results", type=Path, required=True,
                        help="`callmood score` results of those calls")
    parser.add_argument("--model", help="the model folder that scored the results "
                                         "(default: the bundled model)")
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "call_analytics_fit.json")
    parser.add_argument("--write-card", action="store_true",
                        help="write the chosen setting into the model folder (call_analytics.json)")
    args = parser.parse_args()
    if args.write_card and not args.model:
        parser.error("--write-card needs --model DIR: the folder the settings go into")
    args.model = args.model or str(default_model_dir())
    if args.write_card and not os.access(args.model, os.W_OK):
        parser.error(f"--write-card: {args.model} cannot be written")
    model = load_model_folder(args.model)
    labels, valence = model.labels, model.card.valence
    negative = {label for label, v in valence.items() if v < 0}
    truth = pd.read_csv(args.calls / "ground_truth.csv")
    table = eval_calls.call_truth(args.calls, truth, negative, [], [])
    segments, calls = eval_calls.read_results(args.results)
    scored_by = set(segments.model_version)
    if not scored_by:
        raise SystemExit(f"{args.results}: no scored segments")
    if scored_by != {model.version}:
        raise SystemExit(f"{args.results}: scored by model version(s) {sorted(scored_by)}, "
                         f"not by {args.model} ({model.version}); fit with the model that "
                         "scored the calls")
    durations = calls.set_index("call_id").duration_s
    inputs = call_inputs(segments, labels)

    print("1. persistence and shares", flush=True)
    share_rows = fit_shares(inputs, table, durations, labels, valence)
    chosen = choose_shares(share_rows)

    print("2. the escalation rule", flush=True)
    trends = customer_trends(inputs, labels, valence)
    draws = np.random.default_rng(0).integers(len(trends), size=(BOOTSTRAP, len(trends)))
    rule_rows = fit_rule(trends, table, durations, draws)
    rule = best_flags(rule_rows)
    chosen = dataclasses.replace(chosen, min_rise=rule["min_rise"],
                                 min_evidence=rule["min_evidence"],
                                 min_segments=rule["min_segments"])

    print("3. the share interval", flush=True)
    spread = interval_sd(inputs, table, labels, valence, chosen)
    chosen = dataclasses.replace(chosen, share_error_sd=spread["share_error_sd"])
    spread["coverage_dev"] = coverage(inputs, table, labels, valence, chosen)

    print("4. the live alert", flush=True)
    first_negative = truth[(truth.role == "customer") & truth.emotion.isin(negative)] \
        .groupby("call_id").start_s.min()
    live_rows = fit_live(trends, table, draws, first_negative)
    live = best_flags(live_rows, prefix="live_")
    chosen = dataclasses.replace(chosen, **{key: live[key] for key in (
        *LIVE_THRESHOLDS, "confirm_segments")})
    for name, row in (("escalation rule", rule), ("live alert", live)):
        if not row["within_false_alarm_cap"]:
            print(f"warning: no {name} keeps the false alarms on calm calls at or under "
                  f"{MAX_FALSE_ALARMS:.0%}; chosen: the best F1 of all", flush=True)

    report = {"model": model.name, "model_version": model.version,
              "calls": str(args.calls), "n_calls": len(inputs),
              "chosen": dataclasses.asdict(chosen),
              "shares": share_rows, "rule": rule_rows, "chosen_rule": rule,
              "interval": spread, "live": live_rows, "chosen_live": live,
              "machine": harness.machine()}
    harness.write_json(args.out, report)
    if args.write_card:
        write_call_analytics(args.model, report["chosen"],
                             f"{len(inputs)} calls of {args.calls}, fit_call_analytics.py "
                             f"({args.out.name})")
    print(f"chosen: {dataclasses.asdict(chosen)}\nrule on dev: {rule}\nlive on dev: {live}\n"
          f"interval: {spread}")


if __name__ == "__main__":
    main()
