"""Generate the sample calls of sample_calls/ from real RAVDESS utterances.

Only the fold-1 test actors (01, 11, 20, 21) are used, so a model trained on the other
actors is scored honestly on these calls. Each call is a scripted dialogue: the agent
and the customer take turns with pauses and some overlap, each on their own channel,
and the customer's emotion follows the call's story (calm, escalating, recovering, ...).
The audio is band-limited, given a little line noise and written like call-center
recordings (8 kHz G.711 mu-law stereo WAV for most calls). Every inserted utterance is
listed in ground_truth.csv.

    python sample_calls/generate.py --shared ../shared

The output is deterministic for a given --seed; the committed files were made with the
default seed.
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, sosfiltfilt

ACTORS = ("01", "11", "20", "21")  # fold-1 test speakers of the EmoBox RAVDESS protocol
RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
                    "06": "fearful", "07": "disgust", "08": "surprised"}
SOURCE_RATE = 16000
START = datetime(2026, 11, 9, 8, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class CallScript:
    """One call: who speaks, the customer's emotion over the call, and the file format."""

    call_id: str
    agent: str  # actor of the agent (agent_id is derived from it)
    customer: str  # actor of the customer
    queue: str
    turns: int  # customer turns; the agent speaks before each and once at the end
    arc: tuple[tuple[str, ...], ...]  # customer emotions, phase by phase over the call
    fmt: str = "ulaw"  # ulaw | alaw | flac | mono16k
    customer_channel: int = 1
    day: int = 0  # days after START


SCRIPTS = [
    CallScript("call-0001", "01", "20", "billing", 4, (("neutral", "calm"),)),
    CallScript("call-0002", "11", "21", "tech_support", 5,
               (("neutral",), ("neutral", "sad"), ("angry",), ("angry",)), day=1),
    CallScript("call-0003", "20", "11", "cancellations", 5,
               (("angry",), ("angry", "sad"), ("neutral",), ("happy", "calm")), day=2),
    CallScript("call-0004", "01", "21", "billing", 4, (("sad",), ("sad", "neutral")),
               customer_channel=0, day=3),
    CallScript("call-0005", "11", "20", "tech_support", 11,
               (("calm",), ("neutral",), ("disgust", "neutral"), ("angry", "disgust"),
                ("angry",)), day=4),
    CallScript("call-0006", "20", "01", "billing", 4, (("fearful",), ("neutral", "calm")),
               fmt="flac", day=5),
    CallScript("call-0007", "01", "11", "cancellations", 4, (("happy", "surprised"),),
               day=6),
    CallScript("call-0008", "11", "01", "tech_support", 4,
               (("neutral",), ("fearful", "angry")), day=7),
    CallScript("call-0009", "20", "21", "billing", 4, (("neutral",), ("happy",)),
               fmt="mono16k", day=8),
    CallScript("call-0010", "01", "20", "tech_support", 4, (("calm", "neutral"),), day=9),
    CallScript("call-0011", "11", "21", "cancellations", 5,
               (("angry", "disgust"), ("sad",), ("neutral",), ("calm",)), fmt="alaw",
               day=11),
    CallScript("call-0012", "20", "11", "billing", 5,
               (("neutral", "surprised"), ("sad",), ("sad", "fearful")), customer_channel=0,
               day=12),
]
AGENT_EMOTIONS = ("neutral", "calm", "calm", "neutral", "happy")


@dataclass(frozen=True)
class Utterance:
    path: Path
    actor: str
    emotion: str  # RAVDESS name
    intensity: str


def load_corpus(ravdess: Path) -> dict[tuple[str, str], list[Utterance]]:
    """(actor, ravdess emotion) -> utterances of the test actors."""
    corpus: dict[tuple[str, str], list[Utterance]] = {}
    for actor in ACTORS:
        for path in sorted((ravdess / f"Actor_{actor}").glob("*.flac")):
            parts = path.stem.split("-")
            utt = Utterance(path, actor, RAVDESS_EMOTIONS[parts[2]],
                            "strong" if parts[3] == "02" else "normal")
            corpus.setdefault((actor, utt.emotion), []).append(utt)
    if not corpus:
        raise SystemExit(f"no RAVDESS files under {ravdess}; pass --shared")
    return corpus


def trimmed(path: Path, rng: np.random.Generator) -> np.ndarray:
    """The utterance without its leading/trailing silence, at a random speaking level."""
    audio, rate = sf.read(str(path), dtype="float32")
    assert rate == SOURCE_RATE, path
    frame = rate // 100
    n = len(audio) // frame
    rms_db = 10 * np.log10(np.mean(audio[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    # speech: from the first to the last run of >= 80 ms within 30 dB of the loudest frame
    # (shorter runs are clicks and breaths)
    active = np.concatenate([[False], rms_db > rms_db.max() - 30, [False]])
    edges = np.flatnonzero(np.diff(active.astype(np.int8))).reshape(-1, 2)
    runs = edges[edges[:, 1] - edges[:, 0] >= 8]
    audio = audio[runs[0, 0] * frame:runs[-1, 1] * frame]
    level_db = -20 + rng.uniform(-3, 3)
    rms = np.sqrt(np.mean(audio ** 2))
    audio = audio * (10 ** (level_db / 20) / rms)
    return audio / max(1.0, float(np.abs(audio).max()) / 0.95)


def customer_emotion(script: CallScript, turn: int, rng: np.random.Generator) -> str:
    phase = min(len(script.arc) - 1, turn * len(script.arc) // script.turns)
    return str(rng.choice(script.arc[phase]))


def render(script: CallScript, corpus, rng: np.random.Generator):
    """Mix the dialogue: (2, samples) at 16 kHz and the ground-truth rows."""
    tracks = [np.zeros(0, np.float32), np.zeros(0, np.float32)]
    channel = {"customer": script.customer_channel, "agent": 1 - script.customer_channel}
    rows = []
    t = rng.uniform(0.5, 1.2)  # the recording starts with a little line noise
    speakers = []
    for turn in range(script.turns):
        speakers += [("agent", str(rng.choice(AGENT_EMOTIONS))),
                     ("customer", customer_emotion(script, turn, rng))]
    speakers.append(("agent", "calm"))
    for role, emotion in speakers:
        actor = script.agent if role == "agent" else script.customer
        for k in range(1 + int(rng.random() < 0.35)):
            utt = corpus[(actor, emotion)][int(rng.integers(len(corpus[(actor, emotion)])))]
            audio = trimmed(utt.path, rng)
            start = int(t * SOURCE_RATE)
            ch = channel[role]
            if len(tracks[ch]) < start + len(audio):
                tracks[ch] = np.pad(tracks[ch], (0, start + len(audio) - len(tracks[ch])))
            tracks[ch][start:start + len(audio)] += audio
            end = t + len(audio) / SOURCE_RATE
            rows.append({"call_id": script.call_id, "channel": ch, "role": role,
                         "start_s": round(t, 3), "end_s": round(end, 3),
                         "emotion": "neutral" if emotion == "calm" else emotion,
                         "ravdess_emotion": emotion, "intensity": utt.intensity,
                         "actor": actor, "source": f"Actor_{actor}/{utt.path.name}"})
            t = end + (rng.uniform(0.5, 1.0) if k == 0 else 0)
        # between turns: a pause, or the next speaker starts before this one has finished
        t += -rng.uniform(0.3, 0.8) if rng.random() < 0.2 else rng.uniform(0.4, 1.6)
    length = max(len(x) for x in tracks) + int(rng.uniform(0.5, 1.5) * SOURCE_RATE)
    stereo = np.stack([np.pad(x, (0, length - len(x))) for x in tracks])
    if script.fmt == "mono16k":
        for row in rows:
            row["channel"] = 0
    return stereo, rows


def telephone(stereo: np.ndarray, script: CallScript, rng: np.random.Generator):
    """Band-limit, add line noise, mix or resample for the call's format -> (audio, rate)."""
    wideband = script.fmt == "mono16k"
    low, high = (80, 7000) if wideband else (300, 3400)
    sos = butter(6, [low, high], btype="bandpass", fs=SOURCE_RATE, output="sos")
    audio = sosfiltfilt(sos, stereo, axis=-1)
    noise = sosfiltfilt(sos, rng.standard_normal(audio.shape), axis=-1)
    audio = audio + noise * (10 ** (-52 / 20) / noise.std())
    if script.fmt == "mono16k":
        audio = audio.sum(axis=0, keepdims=True)
    rate = SOURCE_RATE if wideband else 8000
    if rate != SOURCE_RATE:
        audio = soxr.resample(audio.T, SOURCE_RATE, rate).T
    return np.clip(audio, -1.0, 1.0).astype(np.float32), rate


FORMATS = {  # fmt -> (extension, soundfile format, subtype)
    "ulaw": ("wav", "WAV", "ULAW"), "alaw": ("wav", "WAV", "ALAW"),
    "flac": ("flac", "FLAC", "PCM_16"), "mono16k": ("wav", "WAV", "PCM_16"),
}


def generate(shared: Path, out: Path, seed: int) -> None:
    corpus = load_corpus(shared / "data" / "ravdess")
    rng = np.random.default_rng(seed)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    calls, truth = [], []
    for script in SCRIPTS:
        stereo, rows = render(script, corpus, rng)
        audio, rate = telephone(stereo, script, rng)
        ext, fmt, subtype = FORMATS[script.fmt]
        name = f"audio/{script.call_id}.{ext}"
        sf.write(str(out / name), audio.T, rate, format=fmt, subtype=subtype)
        started = START + timedelta(days=script.day, minutes=int(rng.integers(0, 9 * 60)))
        calls.append({"call_id": script.call_id, "file": name,
                      "agent_id": f"agent-{script.agent}", "queue": script.queue,
                      "started_at": started.isoformat(),
                      "customer_channel": "" if script.fmt == "mono16k"
                      else script.customer_channel})
        truth += rows
        print(f"{name}: {audio.shape[1] / rate:5.1f} s, {rate} Hz, {audio.shape[0]} ch, "
              f"{subtype}, {len(rows)} utterances")
    for filename, rows in (("calls.csv", calls), ("ground_truth.csv", truth)):
        with open(out / filename, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def main() -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path,
                        default=Path(os.environ.get("CALLMOOD_SHARED",
                                                    here.parent.parent / "shared")),
                        help="the shared folder holding data/ravdess (env CALLMOOD_SHARED)")
    parser.add_argument("--out", type=Path, default=here, help="where to write the calls")
    parser.add_argument("--seed", type=int, default=20261109)
    args = parser.parse_args()
    generate(args.shared, args.out, args.seed)


if __name__ == "__main__":
    main()
