"""A read-through local copy of a results folder in an object store.

DuckDB reads objects through a registered fsspec file system one small request at a
time: a canned query over a bucket took 5-23 s at 1 M segments, against 0.5 s from the
local disk (docs/scale.md). So the readers query a local copy instead, kept under
``$CALLMOOD_CACHE/results/<hash of the URL>`` (the feature cache's folder, default
``~/.cache/callmood``). Every open lists the folder, downloads the objects that are new or
whose ETag changed (all at once, concurrently), and deletes the copies of objects no
longer listed, so the copy holds what the bucket held at that listing: never a call the
bucket no longer has. One sync at a time per folder (``flock``); a sync that fails
raises (the next one fetches again whatever it was fetching).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from fsspec import AbstractFileSystem

from callmood.results.location import explain, shown
from callmood.user_cache import cache_root

VERSIONS = "_versions.json"  # relative path -> version of each copy, in the copy's folder


def cache_folder(url: str) -> Path:
    """Where the copy of the results at `url` lives."""
    return cache_root() / "results" / hashlib.sha256(shown(url).encode()).hexdigest()[:16]


def version(info: dict) -> str:
    """An object's version from its listing entry: the ETag where the store gives one,
    else its modification time and size."""
    if info.get("ETag"):
        return str(info["ETag"])
    return f"{info.get('mtime') or info.get('LastModified')}:{info.get('size')}"


@contextlib.contextmanager
def _locked(folder: Path):
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read_versions(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / VERSIONS).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or a sync was killed while writing it: fetch everything


def _write_versions(folder: Path, versions: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{VERSIONS}.part").write_text(json.dumps(versions))
    os.replace(folder / f"{VERSIONS}.part", folder / VERSIONS)


def sync(fs: AbstractFileSystem, root: str, url: str, wanted: dict[str, str]) -> Path:
    """Make the local copy of the folder `root` in `fs` (shown as `url`) hold exactly the
    objects of `wanted` (path relative to root -> version); returns the copy's folder."""
    folder = cache_folder(url)
    with _locked(folder):
        had = _read_versions(folder)
        fetch = sorted(rel for rel, v in wanted.items()
                       if had.get(rel) != v or not (folder / rel).is_file())
        # a sync killed from here on leaves no version to trust for what it was fetching
        _write_versions(folder, {rel: v for rel, v in had.items() if rel not in fetch})
        for rel in fetch:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get([f"{root.rstrip('/')}/{rel}" for rel in fetch],
                   [str(folder / f"{rel}.part") for rel in fetch])
        except Exception as err:
            raise explain(url, err) from None
        for rel in fetch:
            os.replace(folder / f"{rel}.part", folder / rel)
        for path in sorted(folder.rglob("*"), reverse=True):  # files before their folders
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and rel not in wanted and rel != VERSIONS:
                path.unlink()  # gone from the bucket, or a killed sync's leftover
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        _write_versions(folder, wanted)
    return folder
