"""The sha256 of a file's content: a call's in the results manifest (a moved or touched
file is known by it) and a model folder's version (the first 12 hex digits of its
weights')."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO


def sha256_hex(file: BinaryIO) -> str:
    """The hex sha256 of an open binary file, read in 1 MiB blocks from where it stands."""
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return sha256_hex(f)
