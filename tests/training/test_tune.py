"""training/tune.py: an Optuna study shared by two `callmood tune` worker processes."""

import json
import os
import re
import subprocess
import sys
import time

import optuna
import pytest
from click.testing import CliRunner

from callmood.cli import main
from callmood.training.corpora.registry import load_corpus
from callmood.training.splits import make_split
from callmood.training.train import TrainConfig
from callmood.training.tune import SearchSpace, open_study, run_study, tune_run

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

CALLMOOD = [sys.executable, "-c", "from callmood.cli import main; main()"]
EMOTIONS = {"04": "sad", "05": "angry"}


@pytest.fixture(scope="module")
def manifest(ravdess_subset, tmp_path_factory):
    """A generic CSV manifest of 24 real RAVDESS files: actors 06-08, angry and sad."""
    root = ravdess_subset([6, 7, 8], ["angry", "sad"], per_emotion=4)
    rows = [f"{p},{EMOTIONS[p.name.split('-')[2]]},{p.parent.name[-2:]}"
            for p in sorted(root.rglob("*.flac"))]
    path = tmp_path_factory.mktemp("tune") / "corpus.csv"
    path.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def study(manifest, shared_dir, tmp_path_factory, _session_cache):
    """Two concurrent `callmood tune` processes on one --out folder, --trials 2."""
    work = tmp_path_factory.mktemp("study")
    base = work / "base.json"
    # a micro model; enough epochs (a trial takes seconds) that one worker's trial outlasts
    # the other worker's start-up, so both workers take a trial
    base.write_text(json.dumps({"init": "random:micro", "workers": 1, "device": "cpu",
                                "patience": 1000}))
    space = work / "space.json"
    space.write_text(json.dumps({"batch_size": [4], "optimizer": ["adamw"],
                                 "lr": [1e-4, 1e-3]}))
    out = work / "study"
    command = [*CALLMOOD, "tune", "--corpus", f"calls={manifest}", "--test-speakers", "08",
               "--shared", str(shared_dir), "--trials", "2", "--epochs", "50", "--pruner",
               "none", "--params", str(base), "--space", str(space), "--out", str(out)]
    env = {**os.environ, "CALLMOOD_CACHE": str(_session_cache), "OMP_NUM_THREADS": "1",
           "TQDM_DISABLE": "1"}
    workers = [subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stdout + stderr
    return out, outputs


def test_two_workers_share_one_study(study):
    out, outputs = study
    loaded = optuna.load_study(study_name="callmood", storage=f"sqlite:///{out / 'study.db'}")
    complete = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) >= 2
    assert not loaded.get_trials(states=(optuna.trial.TrialState.RUNNING,
                                         optuna.trial.TrialState.FAIL))
    # each worker logs the trials it finished: both ran at least one, none ran the same
    finished = [set(re.findall(r"Trial (\d+) finished", stderr)) for _, stderr in outputs]
    assert all(finished), f"a worker ran no trial: {finished}"
    assert not finished[0] & finished[1]
    assert {int(n) for n in finished[0] | finished[1]} == {t.number for t in complete}
    # and the two workers' trials overlapped in time
    first, second = sorted(complete, key=lambda t: t.datetime_start)[:2]
    assert second.datetime_start < first.datetime_complete
    for stdout, _ in outputs:
        assert "best trial" in stdout and "best_params.json" in stdout


def test_study_folder(study):
    out, _ = study
    for name in ("study.db", "best_params.json", "trials.csv", "history.png"):
        assert (out / name).is_file(), name
    trial_dirs = sorted(p.name for p in (out / "trials").iterdir())
    assert trial_dirs[:2] == ["0000", "0001"]
    for folder in trial_dirs:
        card = json.loads((out / "trials" / folder / "callmood.json").read_text())
        assert card["training"]["config"]["init"] == "random:micro"
        assert card["training"]["split"]["test_utterances"] == 0  # tuning never sees test
    params = json.loads((out / "best_params.json").read_text())
    assert params["init"] == "random:micro" and params["epochs"] == 50
    assert params["batch_size"] == 4 and 1e-4 <= params["lr"] <= 1e-3
    TrainConfig().with_overrides(params)  # every key is a training setting


def test_best_params_feed_train(study, manifest, shared_dir, tmp_path):
    out, _ = study
    params = json.loads((out / "best_params.json").read_text())
    result = CliRunner().invoke(main, [
        "train", "--corpus", f"calls={manifest}", "--test-speakers", "08", "--shared",
        str(shared_dir), "--params", str(out / "best_params.json"), "--epochs", "1",
        "--workers", "1", "--device", "cpu", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    config = json.loads((tmp_path / "m" / "callmood.json").read_text())["training"]["config"]
    assert config["epochs"] == 1  # the command line wins over the file
    assert config["lr"] == params["lr"] and config["batch_size"] == 4
    assert config["augment"]["mixup_alpha"] == pytest.approx(params["augment.mixup_alpha"])


def test_finished_study_resumes_without_training(study, manifest, shared_dir):
    out, _ = study
    split = make_split(load_corpus("calls", manifest), test_speakers=["08"], shared=shared_dir)
    split.test = []
    before = sorted((out / "trials").iterdir())
    best = run_study(split, TrainConfig(init="random:micro", workers=1), SearchSpace(), out,
                     label_map={}, n_trials=2)
    assert best is not None and sorted((out / "trials").iterdir()) == before
    loaded = optuna.load_study(study_name="callmood", storage=f"sqlite:///{out / 'study.db'}")
    assert best.number == loaded.best_trial.number


def test_search_space(tmp_path):
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({"lr": [1e-4, 2e-4], "init": ["random:micro"]}))
    space = SearchSpace.from_file(space_file)
    assert space.lr == (1e-4, 2e-4)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    overrides = space.suggest(trial)
    assert 1e-4 <= overrides["lr"] <= 2e-4 and overrides["init"] == "random:micro"
    config = TrainConfig().with_overrides(overrides)
    strength = trial.params["augment_strength"]
    assert config.augment.specaug_freq == round(32 * strength)
    assert config.augment.mixup_alpha == pytest.approx(0.4 * strength)
    space_file.write_text(json.dumps({"learning_rate": [1e-4, 2e-4]}))
    with pytest.raises(ValueError, match="unknown search-space keys"):
        SearchSpace.from_file(space_file)


def test_a_search_space_picks_any_training_setting_from_its_values(tmp_path):
    space = SearchSpace(settings={"mel.prosody_rows": [0, 16], "augment.channel_p": [0.4]})
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    config = TrainConfig().with_overrides(space.suggest(trial))
    assert config.mel.prosody_rows == trial.params["mel.prosody_rows"] in (0, 16)
    assert config.augment.channel_p == 0.4
    assert {"mel.prosody_rows", "augment.channel_p", "lr"} <= space.keys()
    space_file = tmp_path / "space.json"
    for settings, problem in (({"dropout": 0.1}, "dropout: expected a list"),
                              ({"dropout": [[0.1]]}, "dropout: expected a list of numbers"),
                              ({"lr": [1e-4]}, "lr: already drawn"),
                              ({"init": ["random:micro"]}, "init: already drawn"),
                              ({"mel.prosody_row": [16]}, "mel.prosody_row: unknown")):
        space_file.write_text(json.dumps({"settings": settings}))
        with pytest.raises(ValueError, match=f"{space_file}: search-space setting {problem}"):
            SearchSpace.from_file(space_file)
    space_file.write_text(json.dumps({"settings": ["dropout"]}))
    with pytest.raises(ValueError, match="search-space settings: expected an object"):
        SearchSpace.from_file(space_file)


def test_first_params_open_a_new_study(manifest, shared_dir, tmp_path):
    split = make_split(load_corpus("calls", manifest), test_speakers=["08"], shared=shared_dir)
    split.test = []
    first = {"lr": 3e-4, "weight_decay": 0.02, "optimizer": "adamw", "batch_size": 4,
             "augment_strength": 0.25}
    base = TrainConfig(init="random:micro", workers=1, epochs=1)
    space = SearchSpace(batch_size=[4, 8], optimizer=["adamw"])
    run_study(split, base, space, tmp_path, label_map={}, n_trials=2, first_params=first)
    loaded = optuna.load_study(study_name="callmood", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = sorted(loaded.trials, key=lambda t: t.number)
    assert trials[0].params == first
    assert trials[0].user_attrs["overrides"]["augment.specaug_freq"] == 8  # 32 * 0.25
    assert trials[1].params != first


def test_studies_of_one_process_draw_different_settings(tmp_path):
    """Two folds' studies run by one benchmark process must not repeat each other's trials."""
    drawn = []
    for name in ("fold1", "fold2"):
        study = open_study(tmp_path, name, None, "none", epochs=1, seed=0)
        drawn.append(study.ask().suggest_float("lr", 1e-5, 1e-3, log=True))
    assert drawn[0] != drawn[1]


def test_tune_run_never_trains_on_the_test_speakers(manifest, shared_dir, tmp_path):
    seen = []
    split_args = {"corpora": [f"calls={manifest}"], "test_speakers": "08",
                  "shared": str(shared_dir)}
    best = tune_run(split_args, TrainConfig(init="random:micro", workers=1, epochs=1),
                    SearchSpace(batch_size=[4], optimizer=["adamw"]), tmp_path, n_trials=1,
                    on_split=lambda split: seen.append(len(split.test)))
    assert seen == [8]  # the split as loaded, before its test speakers go
    card = json.loads((tmp_path / "trials/0000/callmood.json").read_text())
    assert card["training"]["split"]["test_utterances"] == 0
    assert best is not None and best.number == 0


DYING_WORKER = """
import sys, time
from pathlib import Path
from callmood.training import tune
from callmood.training.tune import SearchSpace, open_study
tune.HEARTBEAT_S = 1
study = open_study(Path(sys.argv[1]), "dies", None, "none", epochs=1, seed=0)
def objective(trial):
    SearchSpace(batch_size=[4], optimizer=["adamw"]).suggest(trial)
    print("started", flush=True)
    time.sleep(60)
    return 0.0
study.optimize(objective, n_trials=1)
"""


def test_a_trial_whose_worker_died_is_tried_again_with_its_settings(tmp_path, monkeypatch):
    worker = subprocess.Popen([sys.executable, "-c", DYING_WORKER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert worker.stdout.readline().strip() == "started"
    worker.kill()
    worker.wait()
    import callmood.training.tune as tune

    monkeypatch.setattr(tune, "HEARTBEAT_S", 1)
    time.sleep(4)  # past the grace period of 3 heartbeats
    study = open_study(tmp_path, "dies", None, "none", epochs=1, seed=0)
    died, queued = study.get_trials(deepcopy=False)  # failed on opening, not first run
    assert (died.state, queued.state) == (optuna.trial.TrialState.FAIL,
                                          optuna.trial.TrialState.WAITING)
    tried = []
    study.optimize(lambda trial: tried.append(
        SearchSpace(batch_size=[4], optimizer=["adamw"]).suggest(trial)) or 1.0, n_trials=1)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert tried[0]["lr"] == died.params["lr"]
