"""Audio for the call explorer: the whole recording, or one segment cut out as WAV.

Only recordings the batch job could have scored are served: regular files whose real
path (links followed) lies under an input folder recorded in the results
(``inputs.json``) and that decode as audio, checked again at every request. A scored
recording later replaced by a link to ``/etc/passwd`` is "not available".
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import stat
from pathlib import Path

import soundfile as sf

from callmood.results.store import INPUTS


def input_roots(results: str | Path) -> list[Path]:
    """The input folders the batch job has scored into `results` (none if unrecorded)."""
    try:
        roots = json.loads((Path(results) / INPUTS).read_text())["roots"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [Path(r) for r in roots if isinstance(r, str)]


def read_audio(source: str, roots: list[Path], start_s: float | None = None,
               end_s: float | None = None) -> tuple[bytes, str] | None:
    """(bytes, mime type) of the recording, or of [start_s, end_s) as WAV when given; None
    when it is not a readable audio file under one of `roots`."""
    real = Path(os.path.realpath(source))
    if not any(real.is_relative_to(root) for root in roots):
        return None
    try:
        # non-blocking, so that a FIFO is refused instead of waited on for ever
        with os.fdopen(os.open(real, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read()
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
