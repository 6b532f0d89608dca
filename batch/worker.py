"""The nightly job's worker task: one file decoded, its speech found, its windows cut into
log-mels and scored by the model, in a joblib worker (a local process or a Dask worker).
It never raises: a file that cannot be scored comes back as a ScoredCall with its
error, so one bad file cannot stop the run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from callmood.batch.extract import extract_file
from callmood.model.folder import LoadedModel, ModelOutputError, load_model_folder
from callmood.results.location import explain, is_url
from callmood.results.scored import ScoredCall
from callmood.signal.audio import AudioError, unreadable_by_user
from callmood.signal.segment import VadConfig

_MODELS: dict[str, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(model: str) -> LoadedModel:
    """The model installed under the name `model` in this process (install_model), else
    the model folder at the path `model`, loaded once per process (workers are reused
    across files)."""
    with _MODELS_LOCK:
        key = model if model in _MODELS else str(Path(model).resolve())
        if key not in _MODELS:
            _MODELS[key] = load_model_folder(key)
        return _MODELS[key]


def install_model(name: str, model: LoadedModel) -> None:
    """Make `model` the one cached_model(name) gives in this process: a Dask worker holds
    each run's model under that run's own name (batch/cluster.py), never under a folder's
    path, so runs on one cluster with the same path keep their own models."""
    with _MODELS_LOCK:
        _MODELS[name] = model


def forget_model(name: str) -> None:
    with _MODELS_LOCK:
        _MODELS.pop(name, None)


class FileTimeout(BaseException):
    """Not an Exception, so that no `except Exception` on the way swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise FileTimeout in this thread after `seconds` (it takes effect between the
    blocks a file is decoded and scored in). Only the main thread of a process can set
    the alarm; elsewhere (a Dask worker thread) there is no limit."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise FileTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def score_file(path: str, model_dir: str, vad: VadConfig, overlap: float,
               max_seconds: float, batch_size: int, precision: str = "fp32",
               time_limit_s: float | None = None,
               storage_options: dict | None = None) -> ScoredCall:
    """The worker task; never raises, so one bad file cannot stop the run. `path` may be
    an fsspec URL, read with `storage_options` (batch/source.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with time_limit(time_limit_s):
            return _score_file(path, model_dir, vad, overlap, max_seconds, batch_size,
                               precision, storage_options)
    except FileTimeout:
        return ScoredCall(path, error_kind="timeout",
                          error=f"not done within the limit of {time_limit_s / 60:g} min "
                                "per file (--file-minutes); the run went on without it")
    finally:
        torch.set_num_threads(threads)


def _score_file(path: str, model_dir: str, vad: VadConfig, overlap: float,
                max_seconds: float, batch_size: int, precision: str,
                storage_options: dict | None) -> ScoredCall:
    try:
        model = cached_model(model_dir)
        found = extract_file(path, model.mel, vad, overlap, max_seconds,
                             storage_options=storage_options)
        profiles = found.window_speaker_profiles(model.mel, batch_size) \
            if model.mel.speaker_mean else None
        batches, done = [], 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for mels in found.mel_batches(model.mel, batch_size):
                speakers = None if profiles is None else profiles[done:done + len(mels)]
                batches.append(model.predict_mels(mels, batch_size, speakers))
                done += len(mels)
        probs = np.concatenate(batches)
        return ScoredCall(path, found.sha256, found.duration_s, found.channels, found.speech,
                          found.windows, probs)
    except (AudioError, ModelOutputError) as err:
        return ScoredCall(path, error_kind=err.kind, error=err.detail)
    except FileNotFoundError:
        return ScoredCall(path, error_kind="missing",
                          error="removed while it was being scored")
    except PermissionError as err:
        refused = unreadable_by_user(path, err)
        return ScoredCall(path, error_kind=refused.kind, error=refused.detail)
    except Exception as err:  # a bug or resource problem on one file: record it, go on
        message = str(explain(path, err)) if is_url(path) else f"{type(err).__name__}: {err}"
        return ScoredCall(path, error_kind="internal", error=message)
