"""Log-mel features of corpus utterances, computed once and kept on disk.

Each utterance's whole-length log-mel (float32 .npy, loaded without pickle) lives under
CACHE/<mel settings hash>/<variant folder>/<hash of path, size and mtime>.npy, so a second
epoch, fold or Optuna trial never decodes audio again, and a changed file or changed
settings never reuse stale features.

A variant is the audio as it reached the features: clean, through a fixed evaluation
channel (`condition_variant(name)`), or through the k-th channel drawn for training
(`training_channels`). A variant's folder name hashes everything that shapes it (the
channel or the ranges drawn from, the seed, the babble talkers), and the draw for a file
is seeded by that folder and the file's path, so a variant is the same on every run.

Training variants differ per fold (each fold's babble comes from its own training
speakers), so a benchmark adds gigabytes a fold. The cache is therefore kept under
$CALLMOOD_CACHE_GB (default 40): after each extraction the least recently used variant
folders are deleted; one used in the last hour is never touched, as another run may be
reading it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed

from callmood.progress import progress
from callmood.signal.audio import AudioError, load_mono
from callmood.signal.features import MelConfig, audio_features
from callmood.signal.segment import detector_key, utterance_audio
from callmood.training import channel as channels
from callmood.training.corpora.base import Utterance
from callmood.user_cache import cache_root
from callmood.workers import workers_die_with_this_process

log = logging.getLogger(__name__)

CLEAN = "clean"
BABBLE_TRACKS = 6  # babble tracks per bank, each of BABBLE_TALKERS other speakers
BABBLE_TALKERS = 5
_CHUNK = 16  # files per feature-extraction job
CACHE_LIMIT_ENV = "CALLMOOD_CACHE_GB"
DEFAULT_CACHE_LIMIT_GB = 40.0
IN_USE_S = 3600.0  # a variant folder used this recently is never pruned
_SETTINGS_FOLDER = re.compile(r"[0-9a-f]{12}")  # only the cache's own folders are pruned


def cache_limit_bytes() -> int | None:
    """The size the cache is pruned to ($CALLMOOD_CACHE_GB; 0 keeps everything)."""
    raw = os.environ.get(CACHE_LIMIT_ENV, str(DEFAULT_CACHE_LIMIT_GB))
    try:
        gigabytes = float(raw)
    except ValueError:
        gigabytes = -1.0
    if not gigabytes >= 0:
        raise ValueError(f"{CACHE_LIMIT_ENV}={raw!r}: give the feature cache's size limit in "
                         "GB, a number >= 0 (0 = no limit)")
    return int(gigabytes * 1e9) or None


def prune(root: Path, limit_bytes: int) -> list[Path]:
    """Delete least recently used variant folders until `root` holds at most `limit_bytes`.

    Folders used within IN_USE_S (this extraction's among them) stay, even if the cache
    then remains over the limit. Returns the deleted folders.
    """
    used, sizes = {}, {}
    for settings in root.iterdir() if root.is_dir() else []:
        if not (settings.is_dir() and _SETTINGS_FOLDER.fullmatch(settings.name)):
            continue
        for folder in settings.iterdir():
            try:  # another process may be pruning too
                used[folder] = folder.stat().st_mtime
                sizes[folder] = _folder_bytes(folder)
            except (FileNotFoundError, NotADirectoryError):
                used.pop(folder, None)
    total, removed, now = sum(sizes.values()), [], time.time()
    for folder in sorted(used, key=used.__getitem__):
        if total <= limit_bytes:
            break
        if now - used[folder] < IN_USE_S:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        removed.append(folder)
    if removed:
        log.warning("feature cache %s: removed %d least recently used variant folders "
                    "(%.1f GB), %.1f GB left (limit %s=%.1f)", root, len(removed),
                    sum(sizes[f] for f in removed) / 1e9, total / 1e9, CACHE_LIMIT_ENV,
                    limit_bytes / 1e9)
    return removed


def _folder_bytes(folder: Path) -> int:
    """Bytes of the feature files in `folder`; a file another process renames or deletes
    meanwhile is not counted."""
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                total += entry.stat().st_size if entry.name.endswith(".npy") else 0
            except FileNotFoundError:
                continue
    return total


def _mark_used(folders: set[Path]) -> None:
    """Protects the folders from other processes' pruning for the next IN_USE_S."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)


@dataclass(frozen=True)
class BabbleBank:
    """Tracks of several talkers each; an utterance gets one without its own speaker."""

    tracks: list[np.ndarray]
    speakers: list[frozenset[str]]
    digest: str  # names the talkers' files, for cache keys

    def pick(self, speaker: str, rng: np.random.Generator) -> np.ndarray | None:
        usable = [t for t, s in zip(self.tracks, self.speakers, strict=True) if speaker not in s]
        return usable[int(rng.integers(len(usable)))] if usable else None  # no babble then


def babble_bank(utterances: list[Utterance], sample_rate: int, seed: int = 0) -> BabbleBank | None:
    """Babble made from the given utterances' speakers (None with fewer than two speakers)."""
    by_speaker: dict[str, list[Utterance]] = {}
    for u in sorted(utterances, key=lambda u: u.path):
        by_speaker.setdefault(u.speaker, []).append(u)
    if len(by_speaker) < 2:
        return None
    rng = np.random.default_rng(seed)
    names = sorted(by_speaker)
    tracks, speakers, chosen = [], [], []
    few = len(names) <= 12
    # with few speakers, track t leaves out speaker t (cyclically), so each has a track
    # without their own voice; with more, BABBLE_TRACKS tracks of five talkers each leave
    # every speaker out of some track (in all six with probability (5/12)^6 < 0.6 % at 13)
    for t in range(max(BABBLE_TRACKS, len(names)) if few else BABBLE_TRACKS):
        others = [name for name in names if name != names[t % len(names)]] if few else names
        picked = rng.choice(others, size=min(BABBLE_TALKERS, len(others)), replace=False)
        waves = []
        for speaker in picked:
            options = by_speaker[speaker]
            u = options[int(rng.integers(len(options)))]
            try:
                waves.append(load_mono(u.path, sample_rate))
            except AudioError:
                continue
            chosen.append(u.path)
        if waves:
            tracks.append(channels.make_babble(waves, sample_rate, rng))
            speakers.append(frozenset(str(s) for s in picked))
    digest = hashlib.sha1("|".join(chosen).encode()).hexdigest()[:10]
    return BabbleBank(tracks, speakers, digest) if tracks else None


@dataclass(frozen=True)
class Variant:
    """How an utterance's audio is altered before its log-mels are computed and cached."""

    name: str  # "clean", "channel<k>" or "condition:<name>"
    fixed: channels.PhoneLine | None = None  # an evaluation condition
    ranges: channels.ChannelConfig | None = None  # a training draw from these ranges
    seed: int = 0
    babble: BabbleBank | None = None

    def folder(self) -> str:
        if self.fixed is None and self.ranges is None:
            return CLEAN
        spec = {"fixed": self.fixed.describe() if self.fixed else None,
                "ranges": self.ranges.key() if self.ranges else None, "seed": self.seed,
                "babble": self.babble.digest if self.babble else None}
        digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.name.replace(':', '-')}-{digest}"

    def audio(self, waveform: np.ndarray, utterance: Utterance, sample_rate: int) -> np.ndarray:
        if self.fixed is None and self.ranges is None:
            return waveform
        key = hashlib.sha1(f"{self.folder()}|{os.path.abspath(utterance.path)}".encode())
        rng = np.random.default_rng(int.from_bytes(key.digest()[:8], "little"))
        babble = self.babble.pick(utterance.speaker, rng) if self.babble else None
        chosen = self.fixed or self.ranges.draw(rng, babble_available=babble is not None)
        return chosen.apply(waveform, sample_rate, rng, babble=babble)


def clean() -> Variant:
    return Variant(CLEAN)


def condition_variant(name: str, babble: BabbleBank | None = None) -> Variant:
    """The variant of a named evaluation condition (training/channel.py's CONDITIONS)."""
    fixed = channels.condition_line(name)
    if fixed == channels.PhoneLine():
        return clean()
    if fixed.noise == "babble" and babble is None:
        raise ValueError(f"channel {name!r} needs babble: at least two speakers to make it from")
    return Variant(f"condition:{name}", fixed=fixed, babble=babble)


def training_channels(ranges: channels.ChannelConfig, count: int, seed: int,
                      babble: BabbleBank | None) -> list[Variant]:
    """`count` channel variants of each training file, drawn once from `ranges`."""
    return [Variant(f"channel{k}", ranges=ranges, seed=seed, babble=babble)
            for k in range(count)]


@dataclass
class Features:
    """Features of the utterances that decoded; the others are listed in `failures`."""

    utterances: list[Utterance]
    mels: dict[str, list[torch.Tensor]]  # variant name -> one (n_mels, frames) tensor each
    failures: list[AudioError] = field(default_factory=list)

    def speakers(self) -> list[tuple[str, str]]:
        """Who speaks each utterance: (corpus, speaker id), unique across corpora."""
        return [(u.corpus, u.speaker) for u in self.utterances]


def _cache_file(root: Path, mel: MelConfig, path: str, variant: Variant) -> Path:
    stat = os.stat(path)
    # a trimmed take also depends on the detector that cut it
    shaping = mel.key() + (json.dumps(detector_key(), sort_keys=True) if mel.trim_silence
                           else "")
    settings = hashlib.sha1(shaping.encode()).hexdigest()[:12]
    key = hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return root / settings / variant.folder() / f"{key.hexdigest()}.npy"


def _compute(work: list[tuple[Utterance, list[tuple[Variant, Path]]]],
             mel: MelConfig) -> list[AudioError | None]:
    """Decode each file once and write its missing variants (atomically), in a joblib worker.

    Files travel in chunks so that a babble bank is sent once per chunk, not once per file.
    """
    torch.set_num_threads(1)
    outcomes = []
    for utterance, targets in work:
        try:
            waveform = utterance_audio(load_mono(utterance.path, mel.sample_rate), mel)
        except AudioError as err:
            outcomes.append(err)
            continue
        for variant, target in targets:
            audio = variant.audio(waveform, utterance, mel.sample_rate)
            features = audio_features(audio, mel).numpy()
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(f".{os.getpid()}.tmp")
            with open(partial, "wb") as f:
                np.save(f, features)
            os.replace(partial, target)
        outcomes.append(None)
    return outcomes


def extract(utterances: list[Utterance], mel: MelConfig,
            variants: tuple[Variant, ...] | list[Variant] = (), cache_dir: str | Path | None = None,
            workers: int = 1) -> Features:
    """Features for every utterance: cached ones are read, missing ones computed in parallel.

    `variants` defaults to the clean audio alone; `mels` is keyed by variant name. The
    cache is then pruned to its size limit, keeping the folders just used.
    """
    root = Path(cache_dir) if cache_dir else cache_root()
    limit = cache_limit_bytes()
    variants = tuple(variants) or (clean(),)
    failures, todo = [], []
    files = {}
    for u in utterances:
        try:
            files[u.path] = {v.name: _cache_file(root, mel, u.path, v) for v in variants}
        except OSError:
            failures.append(AudioError(u.path, "missing", "file not found"))
            continue
        missing = [(v, files[u.path][v.name]) for v in variants
                   if not files[u.path][v.name].is_file()]
        if missing:
            todo.append((u, missing))
    in_use = {target.parent for targets in files.values() for target in targets.values()}
    _mark_used(in_use)
    if todo:
        chunks = [todo[i:i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
        desc = "log-mel features" + (f" ({len(variants)} variants)" if len(variants) > 1 else "")
        with workers_die_with_this_process(), \
                progress(total=len(todo), desc=desc, unit="file") as bar:
            results = Parallel(n_jobs=workers, return_as="generator")(
                delayed(_compute)(chunk, mel) for chunk in chunks)
            for outcomes in results:
                failures += [error for error in outcomes if error is not None]
                bar.update(len(outcomes))
                _mark_used(in_use)  # an extraction may outlast IN_USE_S
    failed = {err.path for err in failures}
    kept = [u for u in utterances if u.path not in failed]
    mels = {v.name: [torch.from_numpy(np.load(files[u.path][v.name], allow_pickle=False))
                     for u in kept] for v in variants}
    if failures:
        log.warning("skipped %d unusable audio files, e.g. %s", len(failures), failures[0])
    _mark_used(in_use)
    if limit is not None:
        prune(root, limit)
    return Features(kept, mels, failures)
