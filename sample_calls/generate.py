"""Generate the sample calls of sample_calls/ with the call benchmark's generator.

Twelve short scripted calls for the demo and the tests, made by
benchmarks/callbench/generate.py exactly as its 300 calls are (dialogue, turns, overlaps,
line, truth files), only scripted instead of drawn: who speaks, the customer's story, the
length and the line of each call are fixed here. The voices are the RAVDESS fold-1 test
actors (01, 11, 20, 21), so a model trained on the other actors is scored honestly on
these calls; the bundled model holds them out too.

    python sample_calls/generate.py --shared ../shared

The output is deterministic for a given --seed; the committed files were made with the
default seed.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "benchmarks" / "callbench"))
sys.path.insert(0, str(HERE.parent / "benchmarks"))
import harness  # noqa: E402
from generate import (  # noqa: E402
    CallPlan,
    babble_for,
    load_voices,
    make_call,
    negative_labels,
    write_calls,
)
from lines import LineProfile  # noqa: E402

START = datetime(2026, 11, 9, 8, 0, tzinfo=timezone.utc)
LINES = {
    "ulaw": LineProfile("g711_ulaw"),  # 8 kHz G.711 mu-law stereo WAV
    "alaw": LineProfile("g711_alaw", store="alaw"),
    "flac": LineProfile("wideband", store="flac16k", wideband=True),  # 16 kHz stereo FLAC
    "mono": LineProfile("wideband", store="flac16k", wideband=True, mono=True),
}
# call id, agent actor, customer actor, queue, story (callbench's STORIES), target seconds,
# line, customer channel, day after START
SCRIPTS = [
    ("call-0001", "01", "20", "billing", "calm", 32, "ulaw", 1, 0),
    ("call-0002", "11", "21", "tech_support", "escalating", 85, "ulaw", 1, 1),
    ("call-0003", "20", "11", "cancellations", "recovering", 40, "ulaw", 1, 2),
    ("call-0004", "01", "21", "billing", "sad", 35, "ulaw", 0, 3),
    ("call-0005", "11", "20", "tech_support", "escalating", 100, "ulaw", 1, 4),
    ("call-0006", "20", "01", "billing", "frustrated_then_resolved", 30, "flac", 1, 5),
    ("call-0007", "01", "11", "cancellations", "happy", 30, "ulaw", 1, 6),
    ("call-0008", "11", "01", "tech_support", "escalating", 35, "ulaw", 1, 7),
    ("call-0009", "20", "21", "billing", "happy", 35, "mono", 0, 8),
    ("call-0010", "01", "20", "tech_support", "calm", 35, "ulaw", 1, 9),
    ("call-0011", "11", "21", "cancellations", "recovering", 45, "alaw", 1, 11),
    ("call-0012", "20", "11", "billing", "sad", 35, "ulaw", 0, 12),
]


def plans(seed: int) -> list[CallPlan]:
    rng = np.random.default_rng(seed)
    out = []
    for i, (call_id, agent, customer, queue, story, seconds, line, channel, day) in \
            enumerate(SCRIPTS):
        started = START + timedelta(days=day, minutes=int(rng.integers(0, 9 * 60)))
        out.append(CallPlan(call_id=call_id, split="sample", customer=f"ravdess:{customer}",
                            agent=f"ravdess:{agent}", story=story, seconds=float(seconds),
                            customer_channel=channel, queue=queue,
                            started_at=started.isoformat(), seed=(seed, i),
                            line=LINES[line]))
    return out


def generate(shared: Path, out: Path, seed: int, model_dir: Path) -> None:
    scripted = plans(seed)
    voices = load_voices(shared, sorted({p.customer for p in scripted}
                                        | {p.agent for p in scripted}))
    (out / "audio").mkdir(parents=True, exist_ok=True)
    babble = babble_for(voices, np.random.default_rng(seed))
    calls = [make_call(plan, voices, babble, out) for plan in scripted]
    write_calls(out, calls, negative_labels(model_dir), shared / "data")
    for call in calls:
        truth = call["truth"]
        print(f"{call['sidecar']['file']}: {truth['duration_s']:5.1f} s, {truth['story']}, "
              f"{truth['line_profile']}{' mono' if truth['mono'] else ''}, "
              f"{len(call['utterances'])} utterances")


def main() -> None:
    from callmood.model.folder import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_shared_option(parser, help="the shared folder holding data/ravdess "
                              "(default: $CALLMOOD_SHARED, else ../shared beside the checkout)")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the calls")
    parser.add_argument("--seed", type=int, default=20261109)
    parser.add_argument("--model", type=Path, default=default_model_dir(),
                        help="whose negative labels the truth's shares count")
    args = parser.parse_args()
    generate(args.shared, args.out, args.seed, args.model)


if __name__ == "__main__":
    main()
