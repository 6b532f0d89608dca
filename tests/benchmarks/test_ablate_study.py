"""benchmarks/ablate.py --study for real at a CPU's scale: the baseline's cell, then an
Optuna study of two trials whose objective is the protocol (one held-out corpus, one seed,
one dev call of a generated call benchmark)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import REPO_DIR, load_benchmark

from callmood.model.folder import default_model_dir
from callmood.training.train import TrainConfig

TINY = ["--held-out", "emodb", "--seeds", "0", "--epochs", "1", "--epoch-size", "8",
        "--max-per-corpus", "3", "--max-test", "8", "--dev-calls", "1", "--precision",
        "fp32", "--workers", "1"]


@pytest.fixture(scope="module")
def ablate():
    return load_benchmark("ablate")


@pytest.fixture(scope="module")
def protocol(shared_dir, tmp_path_factory, _session_cache):
    """A call benchmark of two calls and the ablate.py command line of a tiny protocol."""
    root = tmp_path_factory.mktemp("protocol")
    load_benchmark("callbench/generate").generate(shared_dir, default_model_dir(),
                                                  root / "calls", count=2, seed=3, workers=1)
    command = [sys.executable, str(REPO_DIR / "benchmarks" / "ablate.py"), *TINY,
               "--shared", str(shared_dir), "--calls", str(root / "calls" / "dev"),
               "--work", str(root / "work"), "--out", str(root / "out")]
    env = {**os.environ, "CALLMOOD_CACHE": str(_session_cache), "OMP_NUM_THREADS": "1",
           "TQDM_DISABLE": "1"}

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *extra], capture_output=True, text=True, env=env,
                              timeout=900)
    return root, run, command[2:]


def refusal(ablate, capsys, argv: list[str]) -> tuple[int | str, str]:
    """How ablate.py refuses `argv`, run in this process (a refusal trains nothing, so it
    needs no process of its own): its exit code (2 for a usage error, or the message that
    SystemExit prints) and what it wrote to stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        ablate.main(argv)
    return refused.value.code, capsys.readouterr().err


def test_a_study_scores_each_trial_by_its_gain_over_the_baselines_cells(ablate, protocol,
                                                                         capsys):
    root, run, argv = protocol
    space = root / "space.json"
    space.write_text(json.dumps({"lr": [1e-4, 1e-3], "optimizer": ["adamw"],
                                 "batch_size": [4],
                                 "settings": {"augment.channel_p": [0.0, 0.5]}}))
    study = [*("--study", "probe", "--trials", "2", "--space", str(space))]
    code, _ = refusal(ablate, capsys, [*argv, *study])
    assert "baseline-emodb-s0 is missing" in code

    baseline = run()
    assert baseline.returncode == 0, baseline.stderr
    code, _ = refusal(ablate, capsys, [*argv, "--max-test", "6"])  # another protocol's
    assert "baseline-emodb-s0.json was made with other settings or scored on other" in code
    ran = run(*study, "--set", "label_smoothing=0")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count(": training") == 2

    store = ablate.harness.CellStore(root / "out" / "ablation_cells")
    base = store.load("baseline-emodb-s0")["result"]
    trials = pd.read_csv(root / "out" / "study-probe" / "trials.csv")
    assert list(trials.state) == ["COMPLETE", "COMPLETE"]
    for trial in trials.to_dict("records"):
        cell = store.load(f"{trial['user_attrs_lever']}-emodb-s0")["result"]
        assert cell["changes"]["label_smoothing"] == 0  # the shared --set
        assert cell["changes"]["augment.channel_p"] == trial["params_augment.channel_p"]
        ua = [cell["ua"], cell["ua_line"], cell["dev_calls"]["utterance_ua"]]
        base_ua = [base["ua"], base["ua_line"], base["dev_calls"]["utterance_ua"]]
        assert trial["value"] == pytest.approx((sum(ua) - sum(base_ua)) / 3)
    best = json.loads((root / "out" / "study-probe" / "best_params.json").read_text())
    winner = trials.loc[trials.value.idxmax()]
    assert best["lr"] == pytest.approx(winner.params_lr) and best["epochs"] == 1
    assert best["augment"]["channel_p"] == winner["params_augment.channel_p"]
    assert best["balance"] == "corpus" and best["label_smoothing"] == 0  # the whole recipe
    assert TrainConfig().with_overrides(best).lr == best["lr"]  # ready for train --params
    assert (root / "out" / "study-probe" / "history.png").stat().st_size > 0
    levers = json.loads((root / "out" / "ablation.json").read_text())["levers"]
    assert set(trials.user_attrs_lever) < set(levers)
    assert (root / "out" / "ablation_curves.png").stat().st_size > 0  # 3 levers, 1 epoch
    assert (root / "out" / "ablation_gains.png").stat().st_size > 0

    again = run(*study, "--set", "label_smoothing=0")  # the study is complete: no training
    assert again.returncode == 0 and ": training" not in again.stdout
    other = [*argv, *study, "--set", "label_smoothing=0.1"]  # another protocol, same study
    code, _ = refusal(ablate, capsys, other)
    assert "study probe was made with another protocol" in code
    code, _ = refusal(ablate, capsys, [*argv, *study, "--set", "label_smoothing=0",
                                       "--max-test", "6"])
    assert "baseline-emodb-s0 was made with another protocol" in code
    code, _ = refusal(ablate, capsys, [*argv, "--study", "longer", "--space", str(space),
                                       "--set", "epochs=2"])  # the baseline trained 1 epoch
    assert '--against baseline was trained at [[1, 8, "fp32"]]' in code
    assert 'at [[2, 8, "fp32"]]' in code
    table = (root / "out" / "ablation.md").read_text()
    assert all(f"| {lever} † |" in table for lever in trials.user_attrs_lever)

    moved = root / "calls_moved"  # the dev calls regenerated with utterances moved
    shutil.copytree(root / "calls" / "dev", moved, symlinks=True)
    truth = pd.read_csv(moved / "ground_truth.csv")
    truth.loc[0, "start_s"] += 0.1
    truth.to_csv(moved / "ground_truth.csv", index=False)
    calls = argv.index("--calls") + 1
    code, _ = refusal(ablate, capsys, [*argv[:calls], str(moved), *argv[calls + 1:], *study,
                                       "--set", "label_smoothing=0"])
    assert "baseline-emodb-s0 was scored on other dev calls" in code


def test_a_bad_search_space_is_refused_before_any_work(ablate, protocol, tmp_path, capsys):
    _, _, argv = protocol
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"settings": {"augment.chanel_p": [0.4]}}))
    code, said = refusal(ablate, capsys, [*argv, "--study", "probe", "--space", str(space)])
    assert code == 2 and str(space) in said and "augment.chanel_p" in said
    code, said = refusal(ablate, capsys, [*argv, "--study", "probe", "--set", "lr=0.001"])
    assert code == 2 and "--set lr: the study's trials set" in said
    code, said = refusal(ablate, capsys, [*argv, "--study", "probe", "--set",
                                          'augment={"mixup_alpha": 0}'])
    assert code == 2 and "--set augment.mixup_alpha:" in said
    code, said = refusal(ablate, capsys, [*argv, "--study", "../probe"])
    assert code == 2 and "letters, digits" in said


def test_the_valence_head_and_the_summed_classes_read_the_same_utterances(protocol, shared_dir):
    """A lever with affect heads at the tiny protocol's scale, then both negative readouts:
    the summed one is what the product's scoring gives on the same cut utterances, and the
    truth's share per call is the one the call benchmark wrote."""
    root, run, _ = protocol
    trained = run("--lever", "heads", "--set", "affect_heads=0.5")
    assert trained.returncode == 0, trained.stderr
    out = root / "valence"
    command = [sys.executable, str(REPO_DIR / "benchmarks" / "valence_readout.py"),
               "--lever", "heads", "--cells", str(root / "out" / "ablation_cells"),
               "--work", str(root / "work"), "--calls", str(root / "calls" / "dev"),
               "--dev-calls", "1", "--workers", "1", "--shared", str(shared_dir),
               "--out", str(out)]
    read = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    assert read.returncode == 0, read.stderr
    (cell,) = json.loads((out / "valence_readout.json").read_text())["cells"]
    for part in ("clean", "unseen_narrow", "dev_calls"):
        for readout in ("summed", "head"):
            assert 0 <= cell[part][readout]["brier"] <= 1
    ((call, shares),) = cell["dev_calls"]["share_error_points"]["per_call"].items()
    truth = pd.read_csv(root / "calls" / "dev" / "calls_truth.csv").set_index("call_id")
    assert shares["truth"] == pytest.approx(truth.customer_negative_share[call], abs=1e-3)

    from callmood.model.folder import load_model_folder
    from callmood.signal.features import model_input, utterance_clips
    from callmood.training.auxiliary import load_affect_heads
    from callmood.training.corpora.base import Utterance
    from callmood.training.evaluate import score_utterances, test_features
    from callmood.training.model import logits_and_embedding

    model = load_model_folder(root / "work" / cell["model"])
    (folder,) = (root / "work").glob("valence_readout_calls-*-16000")
    cuts = sorted(folder.glob(f"{call}-*.wav"))
    scored = score_utterances(model, [Utterance(str(p), "neutral", "x", "calls")
                                      for p in cuts], workers=1)
    negative = [i for i, label in enumerate(model.labels) if model.card.valence[label] < 0]
    seconds = [sf.info(p).duration for p in cuts]
    summed = np.average(scored.probs[:, negative].sum(1), weights=seconds)
    assert shares["summed"] == pytest.approx(summed, abs=1e-3)
    # the head's readout: each utterance's clips through the model alone, the valence head
    # on the embedding logits_and_embedding gives (no capture across batches)
    heads = load_affect_heads(root / "work" / cell["model"])
    alone = []
    for path in cuts:
        features, variant = test_features(model, [Utterance(str(path), "neutral", "x",
                                                             "calls")], workers=1)
        clips = utterance_clips(features.mels[variant][0], model.mel.input_frames)
        x = model_input(clips, model.mel, model.norm)
        with torch.no_grad():
            _, embedding = logits_and_embedding(model.model.eval(), x)
            alone.append(torch.softmax(heads.valence(embedding), -1)[:, 0].mean().item())
    assert shares["head"] == pytest.approx(np.average(alone, weights=seconds), abs=1e-3)
