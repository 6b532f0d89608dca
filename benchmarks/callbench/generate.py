"""The call benchmark: stereo calls of unseen voices in six languages, with their truth.

Every voice is a held-out speaker of the model the benchmark is for (the test speakers its
model card lists; for the bundled model the Makefile's HELD_OUT groups of all seven
corpora), so the model never heard any of them. Those speakers are split once into **dev**
(fit analytics settings there) and **test** (report there): within each corpus, sorted by
id, the speakers alternate dev, test, dev, ...; a corpus with one held-out speaker goes to
test. A call's agent and customer are two speakers of the same split, the agent of the
customer's language where the split has one (else of another language).

Each call follows a customer story (calm, happy, escalating, recovering, sad,
frustrated-then-resolved): the customer's emotion moves through the story's phases over
the call's time. The agent speaks neutral, now and then happy. Turns alternate with pauses,
overlaps and barge-ins (more of those when the customer is upset); each call then goes
through a line profile (lines.py: G.711, GSM, Opus, transcoding, packet loss, clipping,
noise, echo, level mismatch, wideband, and a share of mono recordings).

    python benchmarks/callbench/generate.py --out runs/callbench [--calls 300] [--seed N]

writes, per split, OUT/<split>/audio/*, calls.csv (the metadata sidecar callmood reads),
ground_truth.csv (one row per utterance) and calls_truth.csv (one row per call: story,
escalates, language, line profile, customer negative share by speech time). The output
is a pure function of --seed, --calls and the model's held-out speakers; the audio is not
committed.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import soundfile as sf

from callmood.signal.segment import take_bounds
from callmood.training.channel import make_babble
from callmood.training.corpora.registry import load_corpus
from callmood.training.labels import PRESETS, apply_mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))  # lines.py beside this script
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/: the harness
import harness  # noqa: E402
from lines import SOURCE_RATE, LineProfile, draw_profile, render_line  # noqa: E402

LANGUAGE = {"ravdess": "en", "tess": "en", "emodb": "de", "ased": "am", "nemo": "pl",
            "kored": "ko", "emovo": "it"}
SPLITS = ("dev", "test")
QUEUES = ("billing", "tech_support", "cancellations", "sales")
START = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
DAYS = 14

# story -> (share of calls, the customer's emotions phase by phase over the call)
STORIES: dict[str, tuple[float, tuple[tuple[str, ...], ...]]] = {
    "calm": (0.24, (("neutral",), ("neutral", "neutral", "happy"))),
    "happy": (0.14, (("happy", "neutral"), ("happy",))),
    "escalating": (0.2, (("neutral",), ("neutral", "sad", "disgust"), ("angry", "disgust"),
                         ("angry",))),
    "recovering": (0.14, (("angry",), ("sad", "neutral"), ("neutral",), ("neutral", "happy"))),
    "sad": (0.12, (("sad",), ("sad", "neutral"))),
    "frustrated_then_resolved": (0.16, (("angry", "disgust", "sad"), ("neutral",),
                                        ("happy", "neutral"))),
}
ESCALATING_STORIES = {"escalating"}
# when a speaker never recorded an emotion: the nearest one of the same valence they have
FALLBACK = {"disgust": ("angry", "sad"), "fearful": ("sad", "angry"),
            "surprised": ("happy", "neutral"), "happy": ("neutral",), "sad": ("angry",),
            "angry": ("sad",)}
AGENT_EMOTIONS = ("neutral", "neutral", "neutral", "happy")


@dataclass(frozen=True)
class CallPlan:
    """What one call will be, decided before any audio is made."""

    call_id: str
    split: str
    customer: str
    agent: str
    story: str
    seconds: float  # target length
    customer_channel: int
    queue: str
    started_at: str
    seed: tuple[int, ...]
    line: LineProfile | None = None  # a fixed line (the sample calls); None: drawn per call


def held_out_speakers(model_dir: Path) -> list[str]:
    """The test speakers the model's card lists (corpus-qualified ids)."""
    card = json.loads((model_dir / "callmood.json").read_text())
    try:
        return list(card["training"]["split"]["test_speakers"])
    except KeyError:
        raise SystemExit(f"{model_dir}/callmood.json lists no test speakers "
                         "(training.split.test_speakers); the benchmark needs voices the "
                         "model never heard") from None


def split_speakers(speakers: list[str]) -> dict[str, str]:
    """speaker -> dev | test: alternating within each corpus (see the module docstring)."""
    by_corpus: dict[str, list[str]] = defaultdict(list)
    for speaker in speakers:
        by_corpus[speaker.split(":")[0]].append(speaker)
    split = {}
    for members in by_corpus.values():
        if len(members) == 1:
            split[members[0]] = "test"
            continue
        for i, speaker in enumerate(sorted(members)):
            split[speaker] = SPLITS[i % 2]
    return split


def load_voices(shared: Path, speakers: list[str]) -> dict[str, dict[str, list[str]]]:
    """speaker -> label (the `calls` label set) -> audio paths."""
    voices: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    wanted = set(speakers)
    for corpus in sorted({s.split(":")[0] for s in speakers}):
        utterances = apply_mapping(load_corpus(corpus, shared / "data" / corpus),
                                   PRESETS["calls"])
        for u in utterances:
            if u.speaker in wanted:
                voices[u.speaker][u.label].append(u.path)
    missing = wanted - set(voices)
    if missing:
        raise SystemExit(f"no utterances of {sorted(missing)} under {shared}/data")
    return {s: {label: sorted(paths) for label, paths in v.items()} for s, v in voices.items()}


def plan_calls(split: dict[str, str], voices: dict, count: int, seed: int) -> list[CallPlan]:
    """`count` calls, half per split; customers take turns so every voice is heard alike."""
    rng = np.random.default_rng(seed)
    stories = list(STORIES)
    shares = np.array([STORIES[s][0] for s in stories])
    plans = []
    for split_index, name in enumerate(SPLITS):
        members = sorted(s for s, which in split.items() if which == name)
        n = count // 2 + (count % 2 if name == "test" else 0)
        customers = [members[i % len(members)] for i in rng.permutation(n)]
        for i, customer in enumerate(customers):
            language = LANGUAGE[customer.split(":")[0]]
            others = [s for s in members if s != customer]
            same = [s for s in others if LANGUAGE[s.split(":")[0]] == language]
            agent = str(rng.choice(same or others))
            started = START + timedelta(days=int(rng.integers(DAYS)),
                                        minutes=int(rng.integers(0, 10 * 60)))
            plans.append(CallPlan(
                call_id=f"{name}-{i + 1:04d}", split=name, customer=customer, agent=agent,
                story=stories[rng.choice(len(stories), p=shares / shares.sum())],
                seconds=float(rng.uniform(60, 240)), customer_channel=int(rng.integers(2)),
                queue=str(rng.choice(QUEUES)), started_at=started.isoformat(),
                seed=(seed, split_index * 100000 + i)))
    return plans


def speakable(voice: dict[str, list[str]], wanted: str) -> str:
    """`wanted`, or its fallback when the speaker never recorded it."""
    for label in (wanted, *FALLBACK.get(wanted, ()), "neutral"):
        if voice.get(label):
            return label
    return next(iter(voice))


@functools.lru_cache(maxsize=4096)
def speech_of(path: str) -> np.ndarray:
    """The utterance's speech as segment.take_bounds finds it in 10 ms frames, at unit
    RMS."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SOURCE_RATE:
        raise SystemExit(f"{path}: {rate} Hz; the corpora in shared/ are {SOURCE_RATE} Hz")
    frame = rate // 100
    n = len(audio) // frame
    power = np.mean(audio[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12
    first, end = take_bounds(10 * np.log10(power), rate / frame)
    audio = audio[first * frame:end * frame]
    return audio / np.sqrt(np.mean(audio ** 2))


def trimmed(path: str, rng: np.random.Generator) -> np.ndarray:
    """The utterance's speech at a speaking level of -20 dBFS +- 3 dB, peaks under 0.95."""
    audio = speech_of(path) * 10 ** ((-20 + rng.uniform(-3, 3)) / 20)
    return audio / max(1.0, float(np.abs(audio).max()) / 0.95)


def customer_label(story: str, progress: float, voice: dict, rng: np.random.Generator) -> str:
    phases = STORIES[story][1]
    phase = phases[min(len(phases) - 1, int(progress * len(phases)))]
    return speakable(voice, str(rng.choice(phase)))


def render_dialogue(plan: CallPlan, voices: dict, rng: np.random.Generator):
    """The two talkers' tracks at 16 kHz (customer, agent) and one truth row per utterance."""
    tracks = {"customer": np.zeros(0), "agent": np.zeros(0)}
    rows = []
    t = float(rng.uniform(0.4, 1.2))
    role = "agent"  # the agent greets
    while t < plan.seconds:
        speaker = plan.agent if role == "agent" else plan.customer
        voice = voices[speaker]
        label = (speakable(voice, str(rng.choice(AGENT_EMOTIONS))) if role == "agent"
                 else customer_label(plan.story, t / plan.seconds, voice, rng))
        for _ in range(int(rng.choice([1, 1, 2, 3]))):
            path = voice[label][int(rng.integers(len(voice[label])))]
            audio = trimmed(path, rng)
            start = int(t * SOURCE_RATE)
            track = tracks[role]
            if len(track) < start + len(audio):
                track = np.pad(track, (0, start + len(audio) - len(track)))
            track[start:start + len(audio)] += audio
            tracks[role] = track
            end = t + len(audio) / SOURCE_RATE
            rows.append({"call_id": plan.call_id, "role": role, "start_s": round(t, 3),
                         "end_s": round(end, 3), "emotion": label, "speaker": speaker,
                         "corpus": speaker.split(":")[0], "source": path})
            t = end + float(rng.uniform(0.15, 0.7))
        upset = role == "customer" and label in ("angry", "disgust")
        # the next talker: a pause, or a start before this one ended (barge-in when upset)
        if rng.random() < (0.35 if upset else 0.15):
            t = end - float(rng.uniform(0.2, 1.0))
        else:
            t = end + float(rng.uniform(0.3, 1.8))
        role = "customer" if role == "agent" else "agent"
    length = max(len(x) for x in tracks.values()) + int(rng.uniform(0.5, 1.5) * SOURCE_RATE)
    return ({r: np.pad(x, (0, length - len(x))) for r, x in tracks.items()}, rows)


STORE = {"ulaw": ("wav", "WAV", "ULAW", {}), "alaw": ("wav", "WAV", "ALAW", {}),
         "flac16k": ("flac", "FLAC", "PCM_16", {})}


def write_audio(path_stem: Path, audio: np.ndarray, profile: LineProfile) -> str:
    """The recording as the call center stores it; returns the file name."""
    if profile.store == "opus":
        from callmood.training.channel import opus_compression_level

        name = path_stem.with_suffix(".ogg")
        sf.write(str(name), audio.T, profile.rate, format="OGG", subtype="OPUS",
                 compression_level=opus_compression_level(profile.opus_kbps))
        return name.name
    ext, fmt, subtype, extra = STORE[profile.store]
    name = path_stem.with_suffix(f".{ext}")
    sf.write(str(name), audio.T, profile.rate, format=fmt, subtype=subtype, **extra)
    return name.name


def make_call(plan: CallPlan, voices: dict, babble: np.ndarray, out: Path) -> dict:
    """Render, line and write one call; returns its calls.csv, calls_truth and truth rows."""
    rng = np.random.default_rng(plan.seed)
    tracks, rows = render_dialogue(plan, voices, rng)
    profile = plan.line or draw_profile(rng)
    audio = render_line(tracks["customer"], tracks["agent"], profile, babble, rng)
    if plan.customer_channel == 1 and not profile.mono:
        audio = audio[::-1]
    name = write_audio(out / "audio" / plan.call_id, audio, profile)
    channel = {"customer": 0 if profile.mono else plan.customer_channel,
               "agent": 0 if profile.mono else 1 - plan.customer_channel}
    for row in rows:
        row["channel"] = channel[row["role"]]
    customer = [r for r in rows if r["role"] == "customer"]
    return {
        "sidecar": {"call_id": plan.call_id, "file": f"audio/{name}",
                    "agent_id": f"agent-{plan.agent.replace(':', '-')}", "queue": plan.queue,
                    "started_at": plan.started_at,
                    "customer_channel": "" if profile.mono else plan.customer_channel},
        "truth": {"call_id": plan.call_id, "split": plan.split, "story": plan.story,
                  "escalates": plan.story in ESCALATING_STORIES,
                  "language": LANGUAGE[plan.customer.split(":")[0]],
                  "line_profile": profile.name, "mono": profile.mono,
                  "customer_speaker": plan.customer, "agent_speaker": plan.agent,
                  "duration_s": round(audio.shape[1] / profile.rate, 3),
                  "customer_speech_s": round(sum(r["end_s"] - r["start_s"] for r in customer),
                                             3),
                  "line": json.dumps(profile.describe(), sort_keys=True)},
        "utterances": rows,
    }


def negative_share(rows: list[dict], negative: set[str]) -> float | None:
    """The share of the customer's speech time whose emotion is negative."""
    total = sum(r["end_s"] - r["start_s"] for r in rows if r["role"] == "customer")
    bad = sum(r["end_s"] - r["start_s"] for r in rows
              if r["role"] == "customer" and r["emotion"] in negative)
    return round(bad / total, 4) if total else None


def babble_for(split_voices: dict, rng: np.random.Generator) -> np.ndarray:
    """Background talkers for one split: utterances of that split's speakers."""
    paths = sorted(p for voice in split_voices.values() for ps in voice.values() for p in ps)
    chosen = [paths[i] for i in rng.choice(len(paths), size=min(12, len(paths)),
                                           replace=False)]
    waves = [sf.read(p, dtype="float32", always_2d=True)[0].mean(axis=1) for p in chosen]
    return make_babble(waves, SOURCE_RATE, rng, seconds=20.0, talkers=6)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_calls(folder: Path, calls: list[dict], negative: set[str], data: Path) -> None:
    """The sidecar and the truth of made calls (make_call's): calls.csv, calls_truth.csv,
    ground_truth.csv. Sources are given relative to the corpora folder `data`, so the
    files do not depend on where shared/ is."""
    for call in calls:
        call["truth"]["customer_negative_share"] = (
            None if call["truth"]["mono"] else negative_share(call["utterances"], negative))
        for row in call["utterances"]:
            row["source"] = Path(row["source"]).resolve().relative_to(data.resolve()).as_posix()
    write_csv(folder / "calls.csv", [c["sidecar"] for c in calls])
    write_csv(folder / "calls_truth.csv", [c["truth"] for c in calls])
    write_csv(folder / "ground_truth.csv", [r for c in calls for r in c["utterances"]])


def negative_labels(model_dir: Path) -> set[str]:
    """The labels the model's card counts as negative."""
    card = json.loads((model_dir / "callmood.json").read_text())
    return {label for label, v in card.get("valence", {}).items() if v < 0}


def generate(shared: Path, model_dir: Path, out: Path, count: int, seed: int,
             workers: int) -> None:
    card = json.loads((model_dir / "callmood.json").read_text())
    negative = negative_labels(model_dir)
    speakers = held_out_speakers(model_dir)
    split = split_speakers(speakers)
    voices = load_voices(shared, speakers)
    plans = plan_calls(split, voices, count, seed)
    started = time.time()
    for name in SPLITS:
        mine = [p for p in plans if p.split == name]
        folder = out / name
        (folder / "audio").mkdir(parents=True, exist_ok=True)
        babble = babble_for({s: voices[s] for s in voices if split[s] == name},
                            np.random.default_rng((seed, SPLITS.index(name))))
        jobs = [(plan, voices, babble, folder) for plan in mine]
        if workers > 1:  # forked: this script's functions need no pickling (not a package)
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                calls = pool.starmap(make_call, jobs, chunksize=4)
        else:
            calls = [make_call(*job) for job in jobs]
        write_calls(folder, calls, negative, shared / "data")
        audio_s = sum(c["truth"]["duration_s"] for c in calls)
        print(f"{name}: {len(calls)} calls, {audio_s / 3600:.2f} h of audio, "
              f"{sum(len(c['utterances']) for c in calls)} utterances, speakers "
              f"{', '.join(sorted(s for s in split if split[s] == name))} "
              f"({time.time() - started:.0f} s)", flush=True)
    (out / "split.json").write_text(json.dumps(
        {"seed": seed, "calls": count, "model": card["name"], "negative": sorted(negative),
         "speakers": {name: sorted(s for s in split if split[s] == name) for name in SPLITS}},
        indent=2) + "\n")


def main() -> None:
    from callmood.model.folder import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    harness.add_shared_option(parser)
    parser.add_argument("--model", type=Path, default=default_model_dir(),
                        help="the model whose held-out speakers voice the calls (the bundled "
                             "one)")
    parser.add_argument("--out", type=Path, default=harness.ROOT / "runs" / "callbench",
                        help="where the dev/ and test/ call folders go")
    parser.add_argument("--calls", type=int, default=300, help="calls in all (half per split)")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.calls < 2:
        parser.error("--calls must be at least 2 (one per split)")
    generate(args.shared, args.model, args.out, args.calls, args.seed, args.workers)


if __name__ == "__main__":
    main()
