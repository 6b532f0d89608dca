"""`callmood train | evaluate | predict` end to end, in-process through click's CliRunner."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY_LABELS

from callmood.cli import main
from callmood.model.folder import load_model_folder

FAST = ["--init", "random:micro", "--epochs", "2", "--batch-size", "8", "--workers", "1",
        "--device", "cpu", "--no-specaugment", "--mixup", "0", "--channel-p", "0"]
TRAINING_COMMANDS = ["train", "evaluate", "tune", "predict"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="callmood")


def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def corpus(ravdess_subset):
    """Actors 01-03, angry and sad, four takes each: 24 real utterances."""
    return ravdess_subset([1, 2, 3], ["angry", "sad"], per_emotion=4)


@pytest.fixture(scope="module")
def trained(corpus, shared_dir, _session_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model"
    result = ok(invoke("train", "--corpus", f"ravdess={corpus}", "--test-speakers", "03",
                       "--shared", shared_dir, "--cache-dir", _session_cache, *FAST,
                       "--out", out))
    return out, result


def test_train_writes_a_model_folder(trained):
    out, result = trained
    assert "split: speaker-independent, test speakers ravdess:03" in result.output
    assert f"wrote {out}" in result.stdout
    assert "test (speaker-independent" in result.stdout and "UA" in result.stdout
    model = load_model_folder(out)
    assert model.labels == ["sad", "angry"]
    assert model.card.training["config"]["epochs"] == 2
    assert model.card.training["config"]["augment"]["specaug_freq"] == 0
    assert model.card.training["config"]["augment"]["frequency_warp"] == 0.0
    assert model.card.training["split"]["test_speakers"] == ["ravdess:03"]
    assert model.card.metrics["test"]["n"] == 8


def test_a_killed_training_run_resumes(corpus, shared_dir, _session_cache, tmp_path,
                                      monkeypatch):
    """A real `callmood train` process killed (SIGKILL) after its first checkpoint is
    finished by `callmood train --resume OUT`, from another working directory."""
    out = tmp_path / "run"
    args = ["train", "--corpus", f"ravdess={corpus}", "--test-speakers", "03", "--shared",
            shared_dir, "--cache-dir", _session_cache, *FAST[:2], "--epochs", "40",
            *FAST[4:], "--patience", "40", "--frequency-warp", "0.1", "--ema-decay", "0.9",
            "--out", out]
    process = subprocess.Popen([sys.executable, "-c", "from callmood.cli import main; main()",
                                *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while not state.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert state.is_file() and not (out / "model.safetensors").exists()
    stopped_at = json.loads(state.read_text())["epoch"]
    assert stopped_at < 40
    monkeypatch.chdir(tmp_path.parent)
    result = ok(invoke("train", "--resume", out))
    assert f"resuming after epoch {stopped_at}" in result.output
    card = load_model_folder(out).card
    assert card.training["epochs_run"] == 40 and card.metrics["test"]["n"] == 8
    assert card.training["config"]["augment"]["frequency_warp"] == 0.1  # as it was started
    assert card.training["config"]["ema_decay"] == 0.9
    assert not (out / "checkpoint").exists()
    again = invoke("train", "--resume", out)
    assert again.exit_code == 1 and "the run finished" in again.output
    missing = invoke("train", "--corpus", f"ravdess={corpus}")
    assert missing.exit_code == 2 and "--out" in missing.output


def test_evaluate_writes_the_report(trained, corpus, shared_dir, tmp_path):
    out, _ = trained
    report = tmp_path / "report"
    result = ok(invoke("evaluate", "--model", out, "--corpus", f"ravdess={corpus}",
                       "--test-speakers", "03", "--shared", shared_dir, "--workers", "1",
                       "--out", report))
    assert "UA" in result.stdout and "metrics.json" in result.stdout
    metrics = json.loads((report / "metrics.json").read_text())
    for key in ("ua", "wa", "macro_f1", "weighted_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["n"] == 8 and metrics["labels"] == ["sad", "angry"]
    assert metrics["speaker_independent"] is True
    assert metrics["test_speakers"] == ["ravdess:03"]
    assert sum(map(sum, metrics["confusion"])) == 8
    assert (report / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (report / "report.md").read_text()
    assert "| UA (%) |" in text and "| macro_f1 (%) |" in text and "confusion.png" in text
    # the figures match the ones train measured on the same test speakers
    card = load_model_folder(out).card
    assert metrics["ua"] == pytest.approx(card.metrics["test"]["ua"])


def test_evaluate_through_a_simulated_channel(trained, corpus, shared_dir, tmp_path):
    out, _ = trained
    clean, phone = tmp_path / "clean", tmp_path / "phone"
    common = ["--model", out, "--corpus", f"ravdess={corpus}", "--test-speakers", "03",
              "--shared", shared_dir, "--workers", "1"]
    ok(invoke("evaluate", *common, "--out", clean))
    result = ok(invoke("evaluate", *common, "--channel", "telephone", "--out", phone))
    assert "expected calibration error" in result.stderr
    metrics = json.loads((phone / "metrics.json").read_text())
    assert metrics["channel"] == "telephone" and metrics["n"] == 8
    assert 0.0 <= metrics["ece"] <= 1.0 and len(metrics["reliability"]) == 15
    assert metrics["temperature"] > 0
    assert (phone / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Expected calibration error" in (phone / "report.md").read_text()
    # the channel's features were computed and cached apart from the clean ones
    cache = Path(os.environ["CALLMOOD_CACHE"])
    assert any(d.name.startswith("condition-telephone-") for d in cache.glob("*/*"))
    bad = invoke("evaluate", *common, "--channel", "moon", "--out", tmp_path / "x")
    assert bad.exit_code == 1 and "telephone" in bad.output and "Traceback" not in bad.output


def test_evaluate_all_folds(trained, corpus, shared_dir, tmp_path):
    out, _ = trained
    for k in (1, 2, 3):
        shutil.copytree(out, tmp_path / f"fold{k}")
    report = tmp_path / "report"
    result = ok(invoke("evaluate", "--model", f"{tmp_path}/fold{{fold}}", "--corpus",
                       f"ravdess={corpus}", "--fold", "all", "--folds", "3", "--shared",
                       shared_dir, "--workers", "1", "--out", report))
    assert "±" in result.stdout
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["folds"] == 3 and len(metrics["per_fold"]) == 3
    assert "ua_std" in metrics and "mean of 3 folds" in metrics["split"]
    assert sum(f["n"] for f in metrics["per_fold"]) == 24  # every speaker tested once
    for k in (1, 2, 3):
        assert (report / f"fold{k}" / "metrics.json").is_file()
    assert (report / "confusion.png").is_file() and (report / "report.md").is_file()


def test_evaluate_protocol_fold(trained, corpus, shared_dir, tmp_path):
    out, _ = trained
    ok(invoke("evaluate", "--model", out, "--corpus", f"ravdess={corpus}", "--fold", "1",
              "--shared", shared_dir, "--workers", "1", "--out", tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_speakers"] == ["ravdess:01"]  # fold 1 tests actors 01, 11, 20, 21
    assert "protocol fold 1" in metrics["split"]


def test_train_skips_unusable_files(ravdess_subset, shared_dir, tmp_path):
    root = ravdess_subset([3, 4], ["angry", "sad"], per_emotion=2)
    emotion = {"04": "sad", "05": "angry"}
    rows = [f"{p},{emotion[p.name.split('-')[2]]},{p.parent.name[-2:]}"
            for p in sorted(root.rglob("*.flac"))]
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.wav").write_text("not audio\n" * 50)
    rows += [f"{tmp_path / 'empty.wav'},angry,03", f"{tmp_path / 'notes.wav'},sad,03"]
    manifest = tmp_path / "calls.csv"
    manifest.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    result = invoke("train", "--corpus", f"calls={manifest}", "--test-speakers", "04",
                    "--shared", shared_dir, *FAST, "--out", tmp_path / "m")
    ok(result)
    assert "Traceback" not in result.output
    card = load_model_folder(tmp_path / "m").card
    assert card.training["skipped_unreadable_files"] == 2
    assert card.labels == ["sad", "angry"]
    assert card.training["split"]["test_speakers"] == ["calls:04"]


def test_train_errors_are_messages_not_tracebacks(corpus, shared_dir, tmp_path):
    result = invoke("train", "--corpus", f"ravdess={tmp_path / 'absent'}", "--fold", "1",
                    "--shared", shared_dir, *FAST, "--out", tmp_path / "m")
    assert result.exit_code == 1 and "Error:" in result.output
    assert "corpus folder not found" in result.output
    result = invoke("train", "--corpus", f"ravdess={corpus}", "--test-speakers", "03",
                    "--shared", shared_dir, *FAST, "--init", "random:huge", "--out",
                    tmp_path / "m")
    assert result.exit_code == 1 and "unknown preset 'huge'" in result.output
    result = invoke("train", "--corpus", f"ravdess={corpus}", "--fold", "1", "--test-speakers",
                    "03", "--shared", shared_dir, *FAST, "--out", tmp_path / "m")
    assert result.exit_code == 1 and "choose exactly one" in result.output
    result = invoke("train", "--corpus", f"ravdess={corpus}", "--fold", "first",
                    "--shared", shared_dir, *FAST, "--out", tmp_path / "m")
    assert result.exit_code == 2 and "expected a fold number" in result.output
    result = invoke("train", "--corpus", f"ravdess={corpus}", "--test-speakers", "03",
                    "--shared", shared_dir, *FAST, "--frequency-warp", "0.6", "--out",
                    tmp_path / "m")
    assert result.exit_code == 1 and "frequency_warp must be a number in [0, 0.5)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_predict_table(tiny_model_dir, write_wav, shared_dir):
    speech = shared_dir / "data/ravdess/Actor_05/03-01-05-02-01-01-05.flac"
    long_call = write_wav("call.wav", seconds=7.0, sample_rate=8000, subtype="ULAW")
    result = ok(invoke("predict", speech, long_call, "--model", tiny_model_dir))
    lines = result.stdout.strip().splitlines()
    assert lines[0].split("\t") == ["file", "emotion", "confidence", *TINY_LABELS]
    assert len(lines) == 3
    for line, path in zip(lines[1:], (speech, long_call), strict=True):
        cells = line.split("\t")
        assert cells[0] == str(path) and cells[1] in TINY_LABELS
        probs = [float(c) for c in cells[3:]]
        assert sum(probs) == pytest.approx(1.0, abs=0.01)
        assert float(cells[2]) == pytest.approx(max(probs), abs=0.001)


def test_predict_jsonl_and_bad_files(tiny_model_dir, write_wav, tmp_path):
    good = write_wav("tone.wav", seconds=5.0)
    silent = write_wav("silent.wav", amplitude=0.0)
    missing = tmp_path / "missing.wav"
    result = invoke("predict", good, silent, missing, "--model", tiny_model_dir, "--format",
                    "jsonl")
    assert result.exit_code == 1  # unusable files make the exit status 1
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(rows) == 3  # one line per input, errors included
    row = rows[0]
    assert rows[1]["file"] == str(silent) and rows[1]["error_kind"] == "silent"
    assert rows[2]["error_kind"] == "missing" and "file not found" in rows[2]["message"]
    assert row["file"] == str(good) and row["emotion"] in TINY_LABELS
    assert row["clips"] == 4 and row["duration_s"] == pytest.approx(5.0)  # 1.59 s clips
    assert set(row["probabilities"]) == set(TINY_LABELS)
    assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "silent.wav: audio is silent" in result.stderr
    assert "missing.wav: file not found" in result.stderr
    assert "Traceback" not in result.output


def test_predict_refuses_a_pickled_model(tmp_path, tiny_model_dir, write_wav):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    result = invoke("predict", write_wav("a.wav"), "--model", folder)
    assert result.exit_code == 1 and "pickled weights are refused" in result.output


def test_every_subcommand_has_help():
    top = ok(invoke("--help"))
    assert set(TRAINING_COMMANDS) <= set(main.commands)
    for name, command in sorted(main.commands.items()):
        assert name in top.stdout
        assert command.help and command.help.strip(), f"callmood {name} has no help text"
        result = ok(invoke(name, "--help"))
        assert f"Usage: callmood {name}" in result.stdout
        assert command.help.strip().splitlines()[0][:40] in result.stdout


def test_idle_cores_are_the_allowed_cores_less_the_load(monkeypatch):
    from callmood.model.predict import idle_cores

    def machine(allowed: int, load: float) -> int:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(allowed)))
        monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
        return idle_cores()

    assert machine(8, 0.0) == 8
    assert machine(8, 2.6) == 5  # rounded: 5.4 cores left
    assert machine(8, 2.4) == 6
    assert machine(3, 0.0) == 3  # the process's affinity, not the machine's cores
    assert machine(8, 7.6) == 1 and machine(8, 30.0) == 1  # at least one


def test_predict_uses_the_idle_cores_or_the_threads_asked(tiny_model_dir, write_wav,
                                                          monkeypatch):
    import torch

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0))  # 5 cores idle
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    speech = write_wav("speech.wav", 2.0)
    result = ok(invoke("predict", speech, "--model", tiny_model_dir, "--format", "jsonl"))
    assert json.loads(result.output.splitlines()[0])["file"] == str(speech)
    result = ok(invoke("predict", speech, "--model", tiny_model_dir, "--threads", "3",
                       "--format", "jsonl"))
    assert json.loads(result.output.splitlines()[0])["file"] == str(speech)
    assert threads == [5, 3]
    assert invoke("predict", speech, "--threads", "0").exit_code == 2
