"""Log-mel features of corpus utterances, computed once and kept on disk.

Each utterance's whole-length log-mel (float32 .npy, loaded without pickle) lives under
CACHE/<mel settings hash>/<variant>/<hash of path, size and mtime>.npy, so a second
epoch, fold or Optuna trial never decodes audio again, and a changed file or changed
settings never reuse stale features.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from tqdm import tqdm

from callmood.training.audio import AudioError, load_mono
from callmood.training.augment import telephone_channel
from callmood.training.corpora.base import Utterance
from callmood.training.features import MelConfig, log_mel

log = logging.getLogger(__name__)

VARIANTS = ("clean", "telephone")


def default_cache_dir() -> Path:
    return Path(os.environ.get("CALLMOOD_CACHE", Path.home() / ".cache" / "callmood"))


@dataclass
class Features:
    """Features of the utterances that decoded; the others are listed in `failures`."""

    utterances: list[Utterance]
    mels: dict[str, list[torch.Tensor]]  # variant -> one (n_mels, frames) tensor each
    failures: list[AudioError] = field(default_factory=list)


def _cache_file(root: Path, mel: MelConfig, path: str, variant: str) -> Path:
    stat = os.stat(path)
    settings = hashlib.sha1(mel.key().encode()).hexdigest()[:12]
    key = hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return root / settings / variant / f"{key.hexdigest()}.npy"


def _compute(path: str, targets: dict[str, Path], mel: MelConfig) -> AudioError | None:
    """Decode once and write each missing variant (atomically). Runs in a joblib worker."""
    torch.set_num_threads(1)
    try:
        waveform = load_mono(path, mel.sample_rate)
    except AudioError as err:
        return err
    for variant, target in targets.items():
        audio = telephone_channel(waveform, mel.sample_rate) if variant == "telephone" \
            else waveform
        features = log_mel(audio, mel).numpy()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as f:
            np.save(f, features)
        os.replace(partial, target)
    return None


def extract(utterances: list[Utterance], mel: MelConfig, variants: tuple[str, ...] = ("clean",),
            cache_dir: str | Path | None = None, workers: int = 1) -> Features:
    """Features for every utterance: cached ones are read, missing ones computed in parallel."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown feature variants {sorted(unknown)}")
    failures, todo = [], []
    files = {}
    for u in utterances:
        try:
            files[u.path] = {v: _cache_file(root, mel, u.path, v) for v in variants}
        except OSError:
            failures.append(AudioError(u.path, "missing", "file not found"))
            continue
        missing = {v: p for v, p in files[u.path].items() if not p.is_file()}
        if missing:
            todo.append((u.path, missing))
    if todo:
        jobs = (delayed(_compute)(path, targets, mel) for path, targets in todo)
        results = Parallel(n_jobs=workers, return_as="generator")(jobs)
        for error in tqdm(results, total=len(todo), desc="log-mel features", unit="file",
                          disable=None):
            if error is not None:
                failures.append(error)
    failed = {err.path for err in failures}
    kept = [u for u in utterances if u.path not in failed]
    mels = {v: [torch.from_numpy(np.load(files[u.path][v], allow_pickle=False)) for u in kept]
            for v in variants}
    if failures:
        log.warning("skipped %d unusable audio files, e.g. %s", len(failures), failures[0])
    return Features(kept, mels, failures)
