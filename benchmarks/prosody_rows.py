"""How much of the prosody rows (mel.prosody_rows) a phone line leaves, against the log-mel.

    .venv/bin/python benchmarks/prosody_rows.py [--corpora emodb,nemo] [--per-corpus 100]

Real utterances (stratified by emotion, the same on every run) are heard clean and through
named channel conditions (training/channel.py). On the voiced frames (those whose clean
prosody rows reach 0.7 somewhere), per utterance:

* `rows_r`: the correlation of the prosody rows, clean against through the line (and
  `log_mel_r`, the same for the log-mel, for scale);
* `ridge_kept`: the share of voiced frames whose top ridge (the highest row above 0.5,
  the pitch) lies within one row of the clean one's;
* `voiced_kept`: the share of voiced frames that still reach 0.5 in some row.

Also synthetic voices of 40 harmonics at 95-240 Hz, clean and through the lines: the
median of the pitch's row, and the highest row a quarter of an octave or more above it.
Results: benchmarks/results/prosody_rows.json (`--out`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from bench_transfer import load_all, subsample  # noqa: E402

from callmood.signal.audio import load_mono  # noqa: E402
from callmood.signal.features import PITCH_RANGE_HZ, MelConfig, log_mel, periodicity  # noqa: E402
from callmood.training.channel import condition_line  # noqa: E402

CONDITIONS = ("telephone", "gsm", "unseen_narrow", "noise_snr10")
VOICED, STRONG = 0.7, 0.5


def top_ridge(rows: np.ndarray) -> np.ndarray:
    """Per frame, the highest row above STRONG (the pitch's), or -1 where none is."""
    strong = rows > STRONG
    return np.where(strong.any(0), rows.shape[0] - 1 - np.argmax(strong[::-1], 0), -1)


def rows_and_log_mel(waveform: np.ndarray, mel: MelConfig) -> tuple[np.ndarray, np.ndarray]:
    return periodicity(waveform, mel).numpy(), log_mel(waveform, mel).numpy()


def compare(clean: tuple[np.ndarray, np.ndarray], heard: np.ndarray,
            mel: MelConfig) -> dict | None:
    """The figures of one utterance: `clean` is its rows_and_log_mel, `heard` the
    waveform through the line; None with fewer than 10 voiced frames."""
    rows, logs = clean
    voiced = rows.max(0) > VOICED
    if voiced.sum() < 10:
        return None
    rows_heard, logs_heard = rows_and_log_mel(heard, mel)
    return {"rows_r": np.corrcoef(rows[:, voiced].ravel(), rows_heard[:, voiced].ravel())[0, 1],
            "log_mel_r": np.corrcoef(logs[:, voiced].ravel(),
                                     logs_heard[:, voiced].ravel())[0, 1],
            "ridge_kept": np.mean(np.abs(top_ridge(rows)[voiced] -
                                         top_ridge(rows_heard)[voiced]) <= 1),
            "voiced_kept": np.mean(rows_heard[:, voiced].max(0) > STRONG)}


def harmonic_voices(mel: MelConfig) -> dict:
    rate = mel.sample_rate
    t = np.arange(rate) / rate
    pitches = np.geomspace(*PITCH_RANGE_HZ, mel.prosody_rows)
    above = int(np.ceil(np.log(2 ** 0.25) / np.log(pitches[1] / pitches[0])))
    found = {}
    for f0 in (95.0, 110.0, 180.0, 240.0):
        voice = sum(np.sin(2 * np.pi * f0 * k * t + 0.3 * k * k) / np.sqrt(k)
                    for k in range(1, int(4000 / f0)))
        voice = (0.8 * voice / np.abs(voice).max()).astype(np.float32)
        nearest = int(np.abs(np.log(pitches / f0)).argmin())
        for name in ("clean", *CONDITIONS[:3]):
            heard = condition_line(name).apply(voice, rate, np.random.default_rng(0))
            rows = periodicity(heard, mel)[:, 20:-20]
            found[f"{f0:g} Hz, {name}"] = {
                "pitch_row_median": round(float(rows[nearest].median()), 3),
                "above_max": round(float(rows[nearest + above:].max()), 3)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_shared_option(parser)
    parser.add_argument("--corpora", default="emodb,nemo")
    parser.add_argument("--per-corpus", type=int, default=100)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "prosody_rows.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mel = MelConfig(prosody_rows=args.rows)
    corpora = load_all(args.shared, args.corpora.split(","))
    report = {"rows": args.rows, "voiced_above": VOICED, "ridge_above": STRONG,
              "conditions": {}, "harmonic_voices": harmonic_voices(mel)}
    waveforms = {name: [load_mono(u.path, mel.sample_rate)
                        for u in subsample(utterances, args.per_corpus, seed=0)]
                 for name, utterances in corpora.items()}
    clean = {name: [rows_and_log_mel(x, mel) for x in clips]
             for name, clips in waveforms.items()}  # once, not per condition
    for condition in CONDITIONS:
        line, rng = condition_line(condition), np.random.default_rng(0)
        per_corpus = {}
        for name, clips in waveforms.items():
            found = [c for x, features in zip(clips, clean[name], strict=True)
                     if (c := compare(features, line.apply(x, mel.sample_rate, rng), mel))]
            per_corpus[name] = {key: round(float(np.mean([c[key] for c in found])), 3)
                                for key in found[0]} | {"utterances": len(found)}
            print(condition, name, per_corpus[name], flush=True)
        report["conditions"][condition] = per_corpus
    report["machine"] = harness.machine("torch")
    harness.write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
