"""The user's callmood cache folder: $CALLMOOD_CACHE, else ~/.cache/callmood. The feature
cache (training/cache.py) and the local copies of results in an object store
(dashboard/results_cache.py) live under it."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "CALLMOOD_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "callmood"))
