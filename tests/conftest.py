"""Fixtures shared by the whole test suite.

* `shared_dir`: the read-only shared data (env CALLMOOD_SHARED, default ../shared beside
  the checkout). Missing shared data is a failure with a clear message, never a skip.
* Every test runs with CALLMOOD_CACHE pointing at a temporary folder (one per session, so
  features are computed once); `cache_dir` gives a test a fresh, empty one of its own.
* `tiny_mel`, `tiny_model_dir`: a small MelConfig and a saved random micro model folder.
* `write_wav`: writes a short tone in any soundfile format.
* `ravdess_subset`: a folder of symlinks to chosen real RAVDESS files, laid out like the
  corpus, so the real adapter and the real audio are used on a few files only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent

RAVDESS_EMOTION_CODES = {"neutral": "01", "calm": "02", "happy": "03", "sad": "04",
                         "angry": "05", "fearful": "06", "disgust": "07", "surprised": "08"}


def load_benchmark(name: str):
    """A script of benchmarks/ imported as a module (they are scripts, not a package)."""
    module_name = name.replace("/", "_")
    spec = importlib.util.spec_from_file_location(module_name,
                                                  REPO_DIR / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def shared_path() -> Path:
    return Path(os.environ.get("CALLMOOD_SHARED", REPO_DIR.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder; fails (does not skip) when it is absent or incomplete."""
    path = shared_path()
    needed = ["data/ravdess", "data/emodb", "weights/deit-tiny-in1k/model.safetensors",
              "protocols/ravdess_speaker_folds.json"]
    missing = [item for item in needed if not (path / item).exists()]
    if missing:
        pytest.fail(f"shared data not found: {path} lacks {missing}. Set CALLMOOD_SHARED to "
                    "the shared folder (default: ../shared beside the repository).",
                    pytrace=False)
    return path


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest leaves the app script as sys.modules["__main__"] and does not put
    pytest back; process pools that spawn (Dask's nanny, loky) would re-run that script in
    every new worker."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(autouse=True)
def _isolated_feature_cache(_session_cache, monkeypatch):
    """No test writes features to ~/.cache: the whole session shares one temporary cache."""
    monkeypatch.setenv("CALLMOOD_CACHE", str(_session_cache))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, empty feature cache for this test (also set as CALLMOOD_CACHE)."""
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setenv("CALLMOOD_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_mel():
    from callmood.signal.features import MelConfig

    return MelConfig(n_mels=64, input_frames=160)


TINY_LABELS = ["neutral", "happy", "sad", "angry"]


class StopTraining(Exception):
    """Raised by a stop_after() epoch hook."""


def stop_after(last_epoch: int):
    """An on_epoch hook for train() that stops the run once `last_epoch` is finished."""
    def hook(epoch: int, f1: float) -> None:
        if epoch == last_epoch:
            raise StopTraining
    return hook


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_mel) -> Path:
    """A random `random:micro` model folder for `tiny_mel`, labels TINY_LABELS."""
    import torch

    from callmood.model.folder import ModelCard, save_model_folder
    from callmood.signal.features import Normalization
    from callmood.training.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_mel, TINY_LABELS, "random:micro")
    card = ModelCard(name="tiny-test-model", labels=list(TINY_LABELS))
    return save_model_folder(tmp_path / "tiny-model", model, tiny_mel,
                             Normalization(mean=-6.0, std=3.0), card)


def make_tone(seconds: float, sample_rate: int, channels: int = 1, amplitude: float = 0.5,
              freq: float = 440.0) -> np.ndarray:
    """A float32 tone (frames, channels); channel c has frequency freq * (c + 1)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    cols = [amplitude * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


@pytest.fixture
def write_wav(tmp_path) -> Callable[..., Path]:
    """write_wav(name_or_path, seconds=0.5, sample_rate=16000, channels=1, subtype="PCM_16",
    format=None, amplitude=0.5, freq=440.0, data=None) -> Path; relative names go under
    tmp_path, parent folders are created. `data` (frames[, channels]) replaces the tone."""

    def write(name: str | Path, seconds: float = 0.5, sample_rate: int = 16000,
              channels: int = 1, subtype: str | None = "PCM_16", format: str | None = None,
              amplitude: float = 0.5, freq: float = 440.0,
              data: np.ndarray | None = None) -> Path:
        path = Path(name)
        if not path.is_absolute():
            path = tmp_path / path
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            data = make_tone(seconds, sample_rate, channels, amplitude, freq)
        if path.suffix.lower() == ".flac" and subtype == "PCM_16" and format is None:
            format = "FLAC"
        sf.write(str(path), data, sample_rate, subtype=subtype, format=format)
        return path

    return write


def ravdess_name(emotion: str, actor: int, intensity: int = 1, statement: int = 1,
                 repetition: int = 1) -> str:
    code = RAVDESS_EMOTION_CODES[emotion]
    if emotion == "neutral":
        intensity = 1  # RAVDESS has no strong neutral
    return f"03-01-{code}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.flac"


@pytest.fixture(scope="session")
def ravdess_subset(shared_dir, tmp_path_factory) -> Callable[..., Path]:
    """ravdess_subset(actors, emotions, per_emotion=4) -> folder of Actor_XX/ symlinks to
    real RAVDESS files (per actor and emotion: intensity x statement x repetition, in that
    order). Identical requests return the same folder, so cached features are reused."""
    made: dict[tuple, Path] = {}

    def subset(actors: list[int], emotions: list[str], per_emotion: int = 4) -> Path:
        key = (tuple(actors), tuple(emotions), per_emotion)
        if key in made:
            return made[key]
        root = tmp_path_factory.mktemp("ravdess-subset")
        combos = [(i, s, r) for i in (1, 2) for s in (1, 2) for r in (1, 2)]
        for actor in actors:
            folder = root / f"Actor_{actor:02d}"
            folder.mkdir()
            for emotion in emotions:
                names = {ravdess_name(emotion, actor, *combo) for combo in combos}
                for name in sorted(names)[:per_emotion]:
                    source = shared_dir / "data" / "ravdess" / f"Actor_{actor:02d}" / name
                    assert source.is_file(), source
                    (folder / name).symlink_to(source)
        made[key] = root
        return root

    return subset


def pytest_sessionfinish(session, exitstatus):
    """Close the DuckDB connections Streamlit's caches still hold from the AppTest runs, so
    they are released now rather than in interpreter teardown (where DuckDB's bindings
    report them as leaks)."""
    import gc
    import logging

    import streamlit as st

    logging.disable(logging.WARNING)  # keep pytest's summary the last line of the run
    st.cache_resource.clear()
    st.cache_data.clear()
    gc.collect()
