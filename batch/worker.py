"""The nightly job's worker task: one file decoded, its speech found, its windows cut into
log-mels and scored by the model, in a joblib worker (a local process or a Dask worker).
It never raises: a file that cannot be scored comes back as a ScoredCall with its
error, so one bad file cannot stop the run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from callmood.batch.extract import extract_file
from callmood.model.folder import LoadedModel, ModelOutputError, load_model_folder
from callmood.results.location import explain, is_url
from callmood.results.scored import ScoredCall
from callmood.signal.audio import AudioError, unreadable_by_user
from callmood.signal.segment import VadConfig

log = logging.getLogger(__name__)

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


AGAIN_S = 0.1  # once the limit has passed, FileTimeout is raised this often until it ends


class _Alarm:
    """time_limit's SIGALRM. A FileTimeout raised in Python code that C calls back can be
    lost: cffi prints and drops one raised in soundfile's read callback (through which an
    object in a store is decoded, batch/source.py), and the read just comes back short.
    So it is raised again every AGAIN_S until the block is left, and a block that ends
    after the limit ends in FileTimeout, whatever it returned or raised (its audio may have
    been cut short). Never raised in __enter__ or __exit__: the alarm is always put back."""

    def __init__(self, seconds: float):
        self.seconds, self.expired = seconds, False

    def __enter__(self) -> None:
        self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        self.previous = signal.signal(signal.SIGALRM, self._expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds, AGAIN_S)

    def __exit__(self, kind, error, traceback) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
        sys.unraisablehook = self.previous_hook
        if self.expired and (kind is None or issubclass(kind, Exception)):
            raise FileTimeout

    def _unraisable(self, unraisable) -> None:
        """A FileTimeout dropped in a callback is no error (it is raised again): logged at
        debug level instead of cffi's traceback on stderr in the night's log."""
        if isinstance(unraisable.exc_value, FileTimeout):
            log.debug("the time limit's FileTimeout was dropped in a C callback (%s); "
                      "raised again", unraisable.object)
        else:
            self.previous_hook(unraisable)

    def _expire(self, signum, frame) -> None:
        self.expired = True
        if frame is None or frame.f_code not in _ALARM_CODE:
            raise FileTimeout


_ALARM_CODE = (_Alarm.__enter__.__code__, _Alarm.__exit__.__code__)


def time_limit(seconds: float | None) -> contextlib.AbstractContextManager[None]:
    """Raise FileTimeout in this thread after `seconds` (it takes effect between the
    blocks a file is decoded and scored in, or cuts a read from an object store short).
    Only the main thread of a process can set the alarm; elsewhere (a Dask worker thread)
    there is no limit."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return _Alarm(seconds)


def score_file(path: str, model: str, vad: VadConfig, overlap: float,
               max_seconds: float, batch_size: int, precision: str = "fp32",
               time_limit_s: float | None = None,
               storage_options: dict | None = None) -> ScoredCall:
    """The worker task; never raises, so one bad file cannot stop the run. `path` may be
    an fsspec URL, read with `storage_options` (batch/source.py); `model` is a model
    folder's path, or on a Dask worker the name the run shipped it under (cached_model)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with time_limit(time_limit_s):
            return _score_file(path, model, vad, overlap, max_seconds, batch_size,
                               precision, storage_options)
    except FileTimeout:
        return ScoredCall(path, error_kind="timeout",
                          error=f"not done within the limit of {time_limit_s / 60:g} min "
                                "per file (--file-minutes); the run went on without it")
    finally:
        torch.set_num_threads(threads)


def _score_file(path: str, model_key: str, vad: VadConfig, overlap: float,
                max_seconds: float, batch_size: int, precision: str,
                storage_options: dict | None) -> ScoredCall:
    try:
        model = cached_model(model_key)
        found = extract_file(path, model.mel, vad, overlap, max_seconds,
                             storage_options=storage_options)
        profiles = found.window_speaker_profiles(model.mel, batch_size,
                                                 model.norm.speaker_reference) \
            if model.mel.speaker_mean else None
        batches, done = [], 0
        # the features stay fp32 at either precision; bf16 is the network's arithmetic
        for mels in found.mel_batches(model.mel, batch_size):
            speakers = None if profiles is None else profiles[done:done + len(mels)]
            batches.append(model.predict_mels(mels, batch_size, speakers,
                                              bf16=precision == "bf16"))
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
