"""`callmood predict`: where its start-up goes, and what its thread count does under load.

Start-up: the wall time of `callmood predict` on one 31-s call (median of --runs), and in
a child process the time of each step: importing torch, importing transformers' ViT,
loading the model folder, scoring the file.

Threads: predict on --files sample-call files with 1 thread and with as many threads as
cores, on an idle machine and with one busy process per core beside it (another job on
the same machine, as on a shared box at night).

    .venv/bin/python benchmarks/bench_predict.py [--runs 5] [--files 10]

writes benchmarks/results/predict.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

ROOT = harness.ROOT
CALLMOOD = str(Path(sys.executable).parent / "callmood")
STEPS = """
import json, sys, time
t = time.perf_counter(); steps = {}
import torch
steps["import torch"] = time.perf_counter() - t; t = time.perf_counter()
from transformers import ViTForImageClassification
steps["import transformers ViT"] = time.perf_counter() - t; t = time.perf_counter()
from callmood.model.folder import default_model_dir, load_model_folder
from callmood.model.predict import predict_files
model = load_model_folder(default_model_dir())
steps["load the model folder"] = time.perf_counter() - t; t = time.perf_counter()
list(predict_files(model, [sys.argv[1]]))
steps["score one file"] = time.perf_counter() - t
print(json.dumps(steps))
"""


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def spread(values: list[float]) -> dict:
    return {"median_s": round(statistics.median(values), 2), "min_s": round(min(values), 2),
            "max_s": round(max(values), 2), "runs": len(values)}


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    cores = harness.usable_cores()
    audio = sorted((ROOT / "sample_calls" / "audio").glob("*.wav"))
    files = [str(audio[i % len(audio)]) for i in range(args.files)]
    one = files[0]

    wall([CALLMOOD, "predict", one])  # warm the file cache
    # torch runs in the child processes only: its version, not this process's threads
    report = {"machine": harness.machine(torch=harness.package_version("torch")),
              "startup_file": os.path.relpath(one, ROOT),
              "startup_wall": spread([wall([CALLMOOD, "predict", one])
                                      for _ in range(args.runs)]),
              "startup_steps_s": {k: round(v, 2) for k, v in json.loads(subprocess.run(
                  [sys.executable, "-c", STEPS, one], check=True, capture_output=True,
                  text=True).stdout).items()},
              "threads": {}}
    print(json.dumps(report, indent=1), flush=True)
    for load in (0, cores):
        busy = busy_processes(load)
        try:
            for threads in sorted({1, cores}):
                key = f"{threads} thread(s), {load} busy processes beside"
                report["threads"][key] = spread([wall(
                    [CALLMOOD, "predict", "--threads", str(threads), *files])
                    for _ in range(max(1, args.runs // 2))])
                print(key, report["threads"][key], flush=True)
        finally:
            for process in busy:
                process.kill()
    harness.write_json(args.out / "predict.json", report)


if __name__ == "__main__":
    main()
