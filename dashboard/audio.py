"""Audio for the call explorer: the whole recording, or one segment cut out as WAV."""

from __future__ import annotations

import io
import mimetypes

import fsspec
import soundfile as sf


def read_audio(source: str, start_s: float | None = None, end_s: float | None = None
               ) -> tuple[bytes, str] | None:
    """(bytes, mime type) of the recording, or of [start_s, end_s) when given.

    ``source`` is a local path or an fsspec URL. None when it cannot be read."""
    try:
        with fsspec.open(source, "rb") as f:
            if start_s is None or end_s is None:
                return f.read(), mimetypes.guess_type(source)[0] or "audio/wav"
            with sf.SoundFile(f) as sound:
                rate = sound.samplerate
                sound.seek(min(int(start_s * rate), sound.frames))
                data = sound.read(max(int((end_s - start_s) * rate), 0), always_2d=True)
    except (OSError, RuntimeError, ValueError):  # LibsndfileError is a RuntimeError
        return None
    out = io.BytesIO()
    sf.write(out, data, rate, format="WAV", subtype="PCM_16")
    return out.getvalue(), "audio/wav"
