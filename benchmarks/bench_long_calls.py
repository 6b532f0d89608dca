"""Peak memory of one worker scoring one long call: 10 minutes, 2 hours, 6 hours.

Each call is the sample calls (8 kHz stereo mu-law) played end to end until it reaches
its length, written block by block. Each is scored by batch.worker.score_file (decode,
VAD, log-mels, model; the work of one `callmood score` worker) in a fresh process, whose
peak resident memory (ru_maxrss) and wall time are recorded. Peak memory should not grow
with the length of the call.

    .venv/bin/python benchmarks/bench_long_calls.py [--model DIR] [--hours 0.1667,2,6]

writes benchmarks/results/long_calls.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from callmood.model.folder import default_model_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402


def write_long_call(path: Path, hours: float) -> None:
    """The sample calls (those with as many channels as the first) end to end until
    `hours` of audio, never all in memory."""
    sources = sorted((harness.ROOT / "sample_calls" / "audio").glob("*.wav"))
    info = sf.info(str(sources[0]))
    sources = [s for s in sources if sf.info(str(s)).channels == info.channels]
    target = int(hours * 3600 * info.samplerate)
    written = 0
    with sf.SoundFile(str(path), "w", info.samplerate, info.channels, subtype="ULAW") as out:
        while written < target:
            for source in sources:
                data, _ = sf.read(str(source), dtype="float32", always_2d=True)
                data = data[:target - written]
                out.write(data)
                written += len(data)
                if written >= target:
                    break


def score_in_a_fresh_process(path: Path, model: str) -> dict:
    """score_file on one call in a child process: its wall time and peak RSS."""
    code = ("import sys, json, resource; from callmood.batch.worker import score_file; "
            "from callmood.signal.segment import VadConfig; "
            "o = score_file(sys.argv[1], sys.argv[2], VadConfig(), 0.25, 86400.0, 32); "
            "print(json.dumps({'error': o.error, 'windows': len(o.windows), "
            "'duration_s': o.duration_s, "
            "'peak_rss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, str(path), model], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout) | {"wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(default_model_dir()))
    parser.add_argument("--hours", default="0.1667,2,6")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for hours in map(float, args.hours.split(",")):
            path = Path(work) / f"call-{hours}h.wav"
            write_long_call(path, hours)
            row = {"hours": hours, "file_mb": round(path.stat().st_size / 1e6, 1),
                   **score_in_a_fresh_process(path, args.model)}
            row["peak_rss_mb"] = round(row.pop("peak_rss_kib") / 1024, 1)
            row["x_real_time"] = round(row["duration_s"] / row["wall_s"], 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
            path.unlink()
    report = {"machine": harness.machine(torch=harness.package_version("torch")),
              "worker": "one worker (1 torch thread)",
              "calls": rows}
    harness.write_json(args.out / "long_calls.json", report)


if __name__ == "__main__":
    main()
