"""Audio for the call explorer: the whole recording, or one segment cut out as WAV.

Only recordings the batch job could have scored are served, checked again at every
request against the input folders recorded in the results (``inputs.json``):

* a local recording: a regular file whose real path (links followed) lies under a local
  input folder, so a scored recording later replaced by a link to ``/etc/passwd`` is "not
  available";
* a recording in an object store (``s3://bucket/calls/x.wav``): an object under an input
  URL, read with the dashboard's storage options (the results' bucket's, which are the
  nightly job's), at most MAX_BYTES.

Either must decode as audio.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import stat
from pathlib import Path

import soundfile as sf

from callmood.results.location import LocationError, is_url, open_location
from callmood.results.store import INPUTS

MAX_BYTES = 1 << 30  # a recording larger than this is not played (hours of audio)


def input_roots(results: str | Path, storage_options: dict | None = None) -> list[str]:
    """The input folders (local paths or URLs) the batch job has scored into `results`
    (a local folder or a URL); none if unrecorded or unreadable."""
    try:
        fs, root = open_location(str(results), storage_options)
        roots = json.loads(fs.cat_file(f"{root.rstrip('/')}/{INPUTS}"))["roots"]
    except (LocationError, OSError, ValueError, KeyError, TypeError):
        return []
    return [r for r in roots if isinstance(r, str)] if isinstance(roots, list) else []


def _local_bytes(source: str, roots: list[str]) -> bytes | None:
    real = Path(os.path.realpath(source))
    if not any(real.is_relative_to(root) for root in roots if not is_url(root)):
        return None
    # non-blocking, so that a FIFO is refused instead of waited on for ever
    with os.fdopen(os.open(real, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()


def _under(url: str, root: str) -> bool:
    """Whether the object `url` is the input URL `root` or lies under it. Object keys are
    not paths: a key with a `..` segment names no object under the root in a file
    system's sense, so none is served."""
    if "/../" in f"{url}/" or "/./" in f"{url}/":
        return False
    return url == root.rstrip("/") or url.startswith(root.rstrip("/") + "/")


def _object_bytes(source: str, roots: list[str], storage_options: dict | None
                  ) -> bytes | None:
    if not any(_under(source, root) for root in roots if is_url(root)):
        return None
    try:
        fs, path = open_location(source, storage_options)
        info = fs.info(path)
        if info.get("type") != "file" or (info.get("size") or 0) > MAX_BYTES:
            return None
        return fs.cat_file(path)
    except Exception:  # a bad location, or the store's own errors (botocore's)
        return None


def read_audio(source: str, roots: list[str], start_s: float | None = None,
               end_s: float | None = None, storage_options: dict | None = None,
               ) -> tuple[bytes, str] | None:
    """(bytes, mime type) of the recording, or of [start_s, end_s) as WAV when given; None
    when it is not a readable audio file under one of `roots`."""
    try:
        data = (_object_bytes(source, roots, storage_options) if is_url(source)
                else _local_bytes(source, roots))
        if data is None:
            return None
        with sf.SoundFile(io.BytesIO(data)) as sound:  # refuses what is not audio
            if start_s is None or end_s is None:
                return data, mimetypes.guess_type(source)[0] or "audio/wav"
            rate = sound.samplerate
            sound.seek(min(int(start_s * rate), sound.frames))
            cut = sound.read(max(int((end_s - start_s) * rate), 0), always_2d=True)
    except (OSError, RuntimeError, ValueError):  # LibsndfileError is a RuntimeError
        return None
    out = io.BytesIO()
    sf.write(out, cut, rate, format="WAV", subtype="PCM_16")
    return out.getvalue(), "audio/wav"
