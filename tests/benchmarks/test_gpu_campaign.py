"""benchmarks/gpu_campaign.py, both steps for real at a CPU's scale: a pack of two corpora
from ../shared (a few utterances each), then one held-out cell trained on it with a micro
model, with nothing of ../shared in reach of the run but the pack."""

import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from callmood.model.folder import load_model_folder
from callmood.training.corpora import generic

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_campaign.py"


def campaign(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=600)


def test_a_pack_trains_and_evaluates_a_held_out_corpus(shared_dir, tmp_path):
    data = tmp_path / "pack"
    packed = campaign("pack", "--shared", str(shared_dir), "--out", str(data),
                      "--corpora", "emodb,ravdess", "--per-corpus", "16", "--workers", "1")
    assert packed.returncode == 0, packed.stderr
    pack = json.loads((data / "pack.json").read_text())
    kept = {name: c["utterances"] for name, c in pack["corpora"].items()}
    assert set(kept) == {"emodb", "ravdess"} and all(12 <= n <= 16 for n in kept.values())
    assert pack["mib"] < 60 and "research" in pack["licence"]
    emodb = generic.scan(data / "emodb", "emodb")[0]  # the manifest reader of any corpus
    assert len(emodb) == kept["emodb"] and {u.label for u in emodb} >= {"angry", "neutral"}
    assert len({u.speaker for u in emodb}) > 1 and emodb[0].speaker.startswith("emodb:")
    info = sf.info(emodb[0].path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "OPUS")

    too_big = campaign("pack", "--shared", str(shared_dir), "--out", str(tmp_path / "big"),
                       "--corpora", "emodb", "--per-corpus", "4", "--max-mib", "1")
    assert too_big.returncode != 0 and "over --max-mib 1" in too_big.stderr
    assert not (tmp_path / "big").exists()

    wrong = campaign("run", "--data", str(data), "--out", str(tmp_path / "x"),
                     "--held-out", "nemo")
    assert wrong.returncode != 0 and "not a pack with nemo" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    out = tmp_path / "out"
    ran = campaign("run", "--data", str(data), "--out", str(out), "--held-out", "emodb",
                   "--epochs", "1", "--epoch-size", "8", "--precision", "fp32",
                   "--workers", "1", "--set", "init=random:micro", "--set", "batch_size=4",
                   "--set", "augment.channel_p=0")
    assert ran.returncode == 0, ran.stderr
    report = json.loads((out / "campaign.json").read_text())
    (cell,) = report["cells"]
    assert cell["held_out"] == "emodb" and 0 <= cell["ua"] <= 1 and 0 <= cell["ua_line"] <= 1
    assert cell["train_utterances"] < kept["ravdess"]  # some speakers kept for validation
    assert load_model_folder(out / "models" / "emodb-s0").labels
    assert "| emodb | 0 |" in (out / "campaign.md").read_text()
