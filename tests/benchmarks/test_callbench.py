"""benchmarks/callbench: the call benchmark's generator on the real corpora (a few short
calls), its line profiles, and eval_calls.py's figures on calls heard perfectly."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from batch_fixtures import make_model_folder
from click.testing import CliRunner
from conftest import REPO_DIR, load_benchmark

from callmood.cli import main
from callmood.model.folder import default_model_dir, load_model_folder
from callmood.results.call_summary import CallAnalytics
from callmood.signal.audio import probe
from callmood.training.corpora.base import Utterance
from callmood.training.evaluate import score_utterances


@pytest.fixture(scope="module")
def generate():
    return load_benchmark("callbench/generate")


@pytest.fixture(scope="module")
def bench_calls(generate, shared_dir, tmp_path_factory):
    """Four calls (two per split) from the bundled model's held-out speakers."""
    out = tmp_path_factory.mktemp("callbench")
    generate.generate(shared_dir, default_model_dir(), out, count=4, seed=7, workers=1)
    return out


def test_the_splits_share_no_speaker_and_use_only_voices_the_model_never_heard(
        generate, bench_calls):
    split = json.loads((bench_calls / "split.json").read_text())
    dev, test = set(split["speakers"]["dev"]), set(split["speakers"]["test"])
    held_out = set(generate.held_out_speakers(default_model_dir()))
    assert dev and test and not dev & test and dev | test == held_out
    for name, members in (("dev", dev), ("test", test)):
        truth = pd.read_csv(bench_calls / name / "ground_truth.csv")
        assert set(truth.speaker) <= members
        calls = pd.read_csv(bench_calls / name / "calls_truth.csv")
        assert set(calls.split) == {name} and len(calls) == 2


def test_the_truth_matches_the_audio(bench_calls):
    """Each utterance is where the truth says, on its channel, and the call's negative share
    is its customer's negative speech time."""
    calls = pd.read_csv(bench_calls / "test" / "calls.csv")
    truth = pd.read_csv(bench_calls / "test" / "ground_truth.csv")
    meta = pd.read_csv(bench_calls / "test" / "calls_truth.csv").set_index("call_id")
    for call in calls.itertuples():
        path = bench_calls / "test" / call.file
        info = probe(path)  # callmood reads what the generator writes
        audio, rate = sf.read(path, always_2d=True)
        assert info.channels == audio.shape[1] == (1 if meta.mono[call.call_id] else 2)
        assert 60 <= len(audio) / rate <= 260
        rows = truth[truth.call_id == call.call_id]
        for role in ("customer", "agent"):
            mine = rows[rows.role == role]
            channel = int(mine.channel.iloc[0])
            inside = np.zeros(len(audio), bool)
            for u in mine.itertuples():
                inside[int(u.start_s * rate):int(u.end_s * rate)] = True
            power = audio[:, channel] ** 2
            if not meta.mono[call.call_id]:
                assert power[inside].mean() > 10 * power[~inside].mean()
        customer = rows[rows.role == "customer"]
        seconds = customer.end_s - customer.start_s
        negative = customer.emotion.isin(["angry", "sad", "fearful", "disgust"])
        expected = float((seconds * negative).sum() / seconds.sum())
        if not meta.mono[call.call_id]:
            assert meta.customer_negative_share[call.call_id] == pytest.approx(expected, abs=1e-3)


def test_the_same_seed_makes_the_same_calls(generate, shared_dir, bench_calls, tmp_path):
    generate.generate(shared_dir, default_model_dir(), tmp_path, count=4, seed=7, workers=1)
    for name in ("dev/calls_truth.csv", "test/ground_truth.csv", "dev/calls.csv"):
        assert (tmp_path / name).read_bytes() == (bench_calls / name).read_bytes()
    first = pd.read_csv(tmp_path / "dev" / "calls.csv").file.iloc[0]
    assert (tmp_path / "dev" / first).read_bytes() == (bench_calls / "dev" / first).read_bytes()


@pytest.fixture(scope="module")
def lines(generate):
    import lines  # benchmarks/callbench/lines.py, on sys.path once generate.py is loaded

    return lines


def test_packet_loss_loses_its_share_in_bursts(lines):
    rng = np.random.default_rng(0)
    x = np.ones(8000 * 600)
    y = lines.lose_packets(x, 8000, 0.08, rng)
    frames = y.reshape(-1, 160)[:, 0]
    silent = frames == 0.0
    concealed = frames == 0.5
    assert 0.06 < (silent.sum() + concealed.sum()) / len(frames) < 0.10
    # bursts: most lost packets follow a lost one, and each burst starts concealed
    lost = silent | concealed
    assert (lost[1:] & lost[:-1]).sum() > 0.4 * lost.sum()
    assert not (silent[1:] & ~lost[:-1]).any()


@pytest.mark.parametrize("name", ["g711_ulaw", "gsm", "tandem", "opus_low", "wideband",
                                  "echo", "noisy"])
def test_every_line_keeps_the_speech_where_it_was(lines, name):
    """A tone burst in the customer channel stays at its time through the line (no codec or
    filter delay is left), and the agent's side stays silent without echo."""
    rate = lines.SOURCE_RATE
    t = np.arange(rate * 4) / rate
    customer = np.where((t > 1) & (t < 2), 0.1 * np.sin(2 * np.pi * 440 * t), 0.0)
    agent = np.zeros_like(customer)
    profile = replace(lines.LineProfile(name), codecs=("gsm",) if name in ("gsm", "tandem")
                      else (), store="opus" if name == "opus_low" else "ulaw",
                      wideband=name == "wideband", noise="babble" if name == "noisy" else None,
                      snr_db=30.0)
    babble = np.random.default_rng(1).standard_normal(rate) * 0.01
    out = lines.render_line(customer, agent, profile, babble, np.random.default_rng(0))
    rate_out = profile.rate
    envelope = np.abs(out[0])
    active = envelope > 0.5 * envelope.max()
    first, last = np.flatnonzero(active)[[0, -1]] / rate_out
    assert first == pytest.approx(1.0, abs=0.03) and last == pytest.approx(2.0, abs=0.03)
    assert np.abs(out[1]).max() < 0.01


def test_eval_calls_figures_are_exact_when_every_segment_is_heard_right(bench_calls):
    eval_calls = load_benchmark("eval_calls")
    folder = bench_calls / "dev"
    truth = pd.read_csv(folder / "ground_truth.csv")
    labels = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    negative = {"sad", "angry", "fearful", "disgust"}
    table = eval_calls.call_truth(folder, truth, negative, [], [])
    segments = truth[["call_id", "channel", "role", "start_s", "end_s"]].copy()
    for label in labels:
        segments[f"p_{label}"] = (truth.emotion == label).astype(float)
    shown = (truth.assign(s=truth.end_s - truth.start_s, n=truth.emotion.isin(negative))
             .query("role == 'customer'").groupby("call_id")
             .apply(lambda g: (g.s * g.n).sum() / g.s.sum(), include_groups=False))
    calls = pd.DataFrame({"call_id": table.index,
                          "customer_negative_share": shown.reindex(table.index).to_numpy(),
                          "escalated": table.escalates.to_numpy()})
    got = eval_calls.figures(segments, calls, truth, table, labels, negative)
    assert got["customer_negative_share"]["mean_abs_error_points"] == 0.0
    assert got["utterances"]["ua"] == 1.0 and got["utterances"]["wa"] == 1.0
    escalation = got["escalation"]
    assert escalation["false_alarm_rate_calm"] in (0.0, None)
    assert escalation["recall"] in (1.0, None)
    # every flag wrong: no escalating call found, every calm call flagged
    wrong = calls.assign(escalated=~table.escalates.to_numpy())
    escalation = eval_calls.figures(segments, wrong, truth, table, labels, negative)["escalation"]
    calm, escalating = table.calm.any(), table.escalates.any()
    assert escalation["false_alarm_rate_calm"] == (1.0 if calm else None)
    assert escalation["recall"] == (0.0 if escalating else None)
    assert escalation["true_positives"] == 0


def test_the_fit_writes_its_settings_into_the_model_that_scored_the_calls(bench_calls,
                                                                         tmp_path):
    """fit_call_analytics.py --write-card: the chosen settings go into the model folder
    (call_analytics.json); results scored by another model are refused, that model's
    folder untouched."""
    dev, results = bench_calls / "dev", tmp_path / "results"
    model, other = (make_model_folder(tmp_path / name, seed=seed)
                    for name, seed in (("model", 0), ("other", 1)))
    scored = CliRunner().invoke(main, ["score", str(dev), "--out", str(results), "--model",
                                       str(model), "--workers", "1", "--no-progress"])
    assert scored.exit_code == 0, scored.output

    def fit(folder):
        return subprocess.run([sys.executable, str(REPO_DIR / "benchmarks" /
                                                    "fit_call_analytics.py"), str(dev),
                               "--results", str(results), "--model", str(folder),
                               "--out", str(tmp_path / "fit.json"), "--write-card"],
                              capture_output=True, text=True)

    done = fit(model)
    assert done.returncode == 0, done.stderr
    chosen = json.loads((tmp_path / "fit.json").read_text())["chosen"]
    fitted = load_model_folder(model)
    assert CallAnalytics.of_model(fitted) == CallAnalytics.from_dict(chosen)
    assert "calls of" in fitted.analytics["fitted_on"]
    refused = fit(other)
    assert refused.returncode != 0 and "scored by model version" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert load_model_folder(other).analytics == {}


def test_the_classical_check_keeps_the_benchmarks_voices_out_and_reads_each_model(
        bench_calls, shared_dir, tmp_path, monkeypatch):
    """benchmarks/classical_transfer.py --calls on the two dev calls: k-speaker trains on
    no voice of the benchmark, the average with classical weight 0 is the ViT's own
    reading of the cut utterances, and weight 1 is k-speaker's, its labels put in the
    ViT's order (the two models list them differently)."""
    import argparse

    from callmood.training.evaluate import corpus_figures

    bench = load_benchmark("classical_transfer")
    split = json.loads((bench_calls / "split.json").read_text())
    voices = {s for part in split["speakers"].values() for s in part}
    names = ["ravdess", "emodb", "kored"]
    # a few utterances of each corpus, the benchmark's voices among them
    data = {n: part[::25] for n, part in bench.load_all(shared_dir, names).items()}
    assert any(u.speaker in voices for part in data.values() for u in part)
    labels = sorted({u.label for part in data.values() for u in part})
    table = {n: {"x": bench.corpus_features(n, part, tmp_path, None, 1),
                 "y": np.array([labels.index(u.label) for u in part]),
                 "speaker": np.array([u.speaker for u in part])} for n, part in data.items()}
    trained = []

    def train_on(row, corpora, table, keep=None):  # records what k-speaker trains on
        trained.append(keep)
        return real_train_on(row, corpora, table, keep)
    real_train_on = bench.train_on
    monkeypatch.setattr(bench, "train_on", train_on)
    args = argparse.Namespace(model=default_model_dir(), calls=bench_calls / "dev",
                              work=tmp_path, cache_dir=None, workers=1)
    report = bench.calls_check(args, table, data, labels)
    ((keep),) = trained
    for name in names:
        heard = {u.speaker for u, k in zip(data[name], keep[name], strict=True) if k}
        assert heard and not heard & voices
    assert set(report["by_classical_weight"]) == {str(w) for w in bench.WEIGHTS}
    assert report["calls_scored"] == 2

    model = load_model_folder(default_model_dir())
    assert model.labels != labels  # the reordering is exercised
    cut = [u for u, _, _ in bench.call_utterances(bench_calls / "dev", 2, 16000, tmp_path)
           if u.label in model.labels]
    assert report["utterances"] == len(cut)
    scored = score_utterances(model, cut, workers=1)
    alone = corpus_figures(scored.targets, scored.probs, model.labels)["ua_restricted"]
    assert report["by_classical_weight"]["0.0"]["utterance_ua"] == pytest.approx(alone)
    classical, _ = real_train_on("k-speaker", names, table, keep)
    x = bench.standardise(bench.corpus_features(f"calls-{args.calls.name}", cut, tmp_path,
                                                None, 1), np.array([u.speaker for u in cut]))
    by_name = dict(zip(labels, bench.probabilities(classical, x, len(labels)).T, strict=True))
    p = np.stack([by_name[label] for label in model.labels], axis=1)
    alone = corpus_figures(scored.targets, p, model.labels)["ua_restricted"]
    assert report["by_classical_weight"]["1.0"]["utterance_ua"] == pytest.approx(alone)
    assert "| 0 (the ViT alone) |" in bench.calls_markdown(report)


def test_the_line_trace_scores_each_turn_as_recorded_and_as_carried(bench_calls, shared_dir,
                                                                    tmp_path):
    trace = load_benchmark("line_trace")
    model = load_model_folder(default_model_dir())
    calls = bench_calls / "dev"
    only = trace.cut_turns(calls, 2, 16000, tmp_path)
    both = trace.cut_turns(calls, 2, 16000, tmp_path, roles=("customer", "agent"))
    assert set(both.role) == {"customer", "agent"} and set(only.role) == {"customer"}
    # a customer turn's cut has one name whichever roles are cut (the cuts are kept)
    assert list(both[both.role == "customer"].cut) == list(only.cut)
    truth = pd.read_csv(calls / "ground_truth.csv")
    row = both.iloc[-1]
    audio, rate = sf.read(row.cut)
    assert rate == 16000 and abs(len(audio) / rate - (row.end_s - row.start_s)) < 0.01
    assert len(both) == len(truth[truth.call_id.isin(both.call_id)])

    turns = both[both.emotion.isin(model.labels)].reset_index(drop=True)
    probs = trace.turn_probabilities(model, turns, shared_dir / "data", None, 1, tmp_path)
    first = turns.iloc[0]
    # the generator's cut of a source is the turn the call placed, before the line
    cut, rate = sf.read((tmp_path / trace.GENERATOR_CUTS / first.source).with_suffix(".wav"))
    assert abs(len(cut) / rate - (first.end_s - first.start_s)) < 0.01
    assert np.sqrt(np.mean(cut ** 2)) == pytest.approx(0.1, rel=0.01)  # -20 dBFS
    assert not np.allclose(probs["generator"], probs["call"])  # the line still changes it
    alone = score_utterances(model, [Utterance(str(shared_dir / "data" / first.source),
                                               first.emotion, first.speaker, first.corpus)],
                             workers=1)
    assert np.allclose(probs["source"][0], alone.probs[0], atol=1e-5)
    assert not np.allclose(probs["source"], probs["call"])  # the call changes what is heard
    trimmed = load_model_folder(default_model_dir())
    trimmed.mel = replace(trimmed.mel, trim_silence=True)
    assert np.allclose(probs["speech"][0], score_utterances(trimmed, alone.utterances,
                                                            workers=1).probs[0], atol=1e-5)
    assert not np.allclose(probs["speech"], probs["source"])

    turns["line_profile"] = "one"
    negative = np.array([model.card.valence[label] < 0 for label in model.labels])
    report = trace.trace(turns, probs, model.labels, negative)
    assert sum(g["call"]["n"] for g in report["role"].values()) == len(turns)
    calm = ~np.isin(turns.emotion, np.array(model.labels)[negative])
    expected = probs["call"][calm][:, negative].sum(1).mean()
    assert report["all"]["all"]["call"]["p_negative_calm"] == pytest.approx(expected, abs=1e-4)
    agents = report["role"]["agent"]["source"]
    assert agents["p_negative_negative"] is None  # agents speak no negative turn
    written = {"calls": str(calls), "split": "dev", "model": "m", "model_name": model.name,
               "turns": len(turns), "calls_traced": 2, "groups": report}
    table = trace.markdown(written)
    assert "| role: agent |" in table and "| – |" in table  # agents: no negative turns
    trace.plot(written, tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 10_000

    broken = turns.copy()
    broken.loc[0, "source"] = "nowhere/missing.wav"
    with pytest.raises(SystemExit, match="missing.wav"):
        trace.turn_probabilities(model, broken, shared_dir / "data", None, 1, tmp_path)
