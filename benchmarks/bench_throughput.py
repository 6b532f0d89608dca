"""End-to-end throughput of `callmood score` against the naive image pipeline, in one run.

callmood rows: the sample calls repeated to at least an hour, scored from scratch into a
fresh results folder (decode + VAD + log-mel + model + Parquet, wall clock of the whole
run including model loading), with --workers 1 and 2.

Naive row: the pipeline as usually written, one window at a time: librosa mel spectrogram
of every 3 s window of every channel, rendered by matplotlib to a PNG, reopened with PIL,
resized to 224x224 RGB and classified by a ViT-base (random init,
`ViTForImageClassification(ViTConfig())`). It runs on a subset of the audio and is
extrapolated to an hour.

    .venv/bin/python benchmarks/bench_throughput.py [--model DIR] [--naive-minutes 5]

Without --model and without a bundled default model, a randomly initialised model folder
of the default model's shape (DeiT-Tiny, default MelConfig) is built: the same compute.
Writes benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from callmood.batch.score import ScoreConfig, score_calls
from callmood.model.folder import ModelCard, default_model_dir, save_model_folder
from callmood.signal.audio import probe, read_channels, resample
from callmood.signal.features import MelConfig, Normalization
from callmood.training.model import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

SAMPLE_CALLS = harness.ROOT / "sample_calls"
LABELS = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def repeated_calls(folder: Path, min_hours: float) -> float:
    """Copies of the sample calls (own call ids) totalling >= min_hours; returns seconds."""
    with open(SAMPLE_CALLS / "calls.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    one_pass = sum(probe(SAMPLE_CALLS / r["file"]).duration_s for r in rows)
    copies = int(np.ceil(min_hours * 3600 / one_pass))
    for k in range(copies):
        target = folder / f"copy{k:02d}"
        (target / "audio").mkdir(parents=True)
        for r in rows:
            shutil.copyfile(SAMPLE_CALLS / r["file"], target / r["file"])
        with open(target / "calls.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "call_id": f"{r['call_id']}-{k:02d}"} for r in rows)
    return copies * one_pass


def naive_pipeline(files: list[Path], seconds: float) -> dict:
    """librosa mel -> matplotlib PNG -> PIL 224x224 RGB -> ViT-base, window by window."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification

    start = time.perf_counter()
    model = ViTForImageClassification(ViTConfig()).eval()
    done_s = windows = 0
    for path in files:
        if done_s >= seconds:
            break
        audio, rate = read_channels(path)
        audio = resample(audio, rate, 16000)
        for channel in audio:
            for begin in range(0, len(channel) - 16000, 3 * 16000):
                window = channel[begin:begin + 3 * 16000]
                mel = librosa.feature.melspectrogram(y=window, sr=16000, n_mels=128)
                fig = plt.figure(figsize=(3, 3), dpi=100)
                plt.imshow(librosa.power_to_db(mel, ref=np.max), origin="lower",
                           aspect="auto", cmap="magma")
                plt.axis("off")
                buffer = io.BytesIO()
                fig.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0)
                plt.close(fig)
                image = Image.open(buffer).convert("RGB").resize((224, 224))
                x = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)
                x = ((x / 255.0 - 0.5) / 0.5).unsqueeze(0)
                with torch.inference_mode():
                    model(pixel_values=x)
                windows += 1
        done_s += audio.shape[1] / 16000
    wall = time.perf_counter() - start
    return {"audio_s": done_s, "windows": windows, "wall_s": wall,
            "x_real_time": done_s / wall, "s_per_audio_hour": wall / done_s * 3600,
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model folder [default: bundled model]")
    parser.add_argument("--hours", type=float, default=1.0, help="audio to score (at least)")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    parser.add_argument("--precision", default="fp32,bf16", help="precisions to measure")
    parser.add_argument("--naive-minutes", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "throughput.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="callmood-bench-") as tmp:
        tmp = Path(tmp)
        model_dir, model_note = args.model, "given with --model"
        if model_dir is None and default_model_dir().is_dir():
            model_dir, model_note = default_model_dir(), "the bundled default model"
        if model_dir is None:
            mel = MelConfig()
            model_dir = save_model_folder(tmp / "model", build_model(mel, LABELS, "random:tiny"),
                                          mel, Normalization(), ModelCard("random-deit-tiny",
                                                                          LABELS))
            model_note = ("no default model yet: a randomly initialised DeiT-Tiny-shaped "
                          "model folder with the default MelConfig (same compute)")
        audio_s = repeated_calls(tmp / "calls", args.hours)
        runs = []
        for precision in args.precision.split(","):
            for workers in map(int, args.workers.split(",")):
                summary = score_calls([str(tmp / "calls")], str(tmp / f"out-{precision}-"
                                                               f"{workers}"),
                                      str(model_dir), ScoreConfig(workers=workers,
                                                                  precision=precision),
                                      progress=False)
                runs.append({"workers": workers, "precision": precision,
                             "audio_s": summary.audio_s, "calls": summary.calls_scored,
                             "segments": summary.segments, "errors": summary.files_failed,
                             "wall_s": round(summary.wall_s, 2),
                             "x_real_time": round(summary.audio_s / summary.wall_s, 1),
                             "s_per_audio_hour": round(summary.wall_s / summary.audio_s
                                                       * 3600, 2)})
                print(json.dumps(runs[-1]), flush=True)
        files = sorted((tmp / "calls").glob("copy*/audio/*"))
        naive = naive_pipeline(files, args.naive_minutes * 60)
        print(json.dumps({"naive": naive}), flush=True)

    best_fp32 = max(r["x_real_time"] for r in runs if r["precision"] == "fp32")
    result = {
        "machine": harness.machine("torch", "numpy"),
        "model": {"path": str(args.model or "bundled/random"), "note": model_note},
        "audio": {"seconds": round(audio_s, 1), "source": "sample_calls/ repeated"},
        "callmood": runs,
        "naive": {**{k: round(v, 2) if isinstance(v, float) else v for k, v in naive.items()},
                  "note": f"measured on the first {args.naive_minutes:g} minutes of the "
                          "same audio (every channel, 3 s windows), extrapolated per hour"},
        "speedup_vs_naive_fp32": round(best_fp32 / naive["x_real_time"], 1),
        "note": "Both measured in this one run on the same machine, which other jobs may "
                "have shared.",
    }
    harness.write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
