"""What one training step costs in fp32 and in bf16 autocast on this machine's CPU: the
figure behind `train`'s warning about bf16 on CPUs without it in hardware, and behind
running the ablation protocol in fp32 there.

A step is the training loop's: forward, cross-entropy, backward and an AdamW update of the
bundled model's architecture (ViT-Tiny, random init) on a batch of log-mel inputs of the
default size. The median of --steps timed steps, after one untimed.

    .venv/bin/python benchmarks/bench_train_step.py [--batch 16] [--steps 3]

writes benchmarks/results/train_step.json (the CPU's bf16 flags with the machine record).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from callmood.signal.features import MelConfig
from callmood.training.model import build_model
from callmood.training.train import cpu_has_native_bf16

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
import harness  # noqa: E402

LABELS = ["angry", "happy", "neutral", "sad"]


def step_seconds(bf16: bool, batch: int, steps: int) -> float:
    """The median wall time of a training step (after one untimed step)."""
    mel = MelConfig()
    torch.manual_seed(0)
    model = build_model(mel, LABELS, "random:tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, mel.n_mels, mel.input_frames)
    y = torch.randint(0, len(LABELS), (batch,))
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(pixel_values=x).logits.float()
        torch.nn.functional.cross_entropy(logits, y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "train_step.json")
    args = parser.parse_args()
    fp32 = step_seconds(False, args.batch, args.steps)
    print(f"fp32: {fp32:.2f} s a step", flush=True)
    bf16 = step_seconds(True, args.batch, args.steps)
    print(f"bf16: {bf16:.2f} s a step ({bf16 / fp32:.1f} x fp32)", flush=True)
    harness.write_json(args.out, {
        "batch": args.batch, "steps_timed": args.steps, "model": "ViT-Tiny (random:tiny)",
        "input": [1, MelConfig().n_mels, MelConfig().input_frames],
        "fp32_s_per_step": round(fp32, 3), "bf16_s_per_step": round(bf16, 3),
        "bf16_over_fp32": round(bf16 / fp32, 2),
        "machine": harness.machine("torch", native_bf16=cpu_has_native_bf16())})


if __name__ == "__main__":
    main()
