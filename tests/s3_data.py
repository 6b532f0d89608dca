"""What the object storage tests share besides their fixtures (s3_fixtures.py): the
bucket handle, the test environment's credentials, and how two nights' rows compare."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import s3fs

SECRET = "callmood-test-secret-do-not-write"  # the secret key every test process uses


@dataclass
class Bucket:
    endpoint: str
    name: str
    fs: s3fs.S3FileSystem

    def url(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}".rstrip("/")

    def upload(self, folder: Path, prefix: str) -> str:
        """Copy a local folder's files under `prefix`; returns the prefix's URL."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.fs.put_file(str(path), f"{self.name}/{prefix}/"
                                            f"{path.relative_to(folder).as_posix()}")
        return self.url(prefix)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(p.split("/", 1)[1] for p in self.fs.find(f"{self.name}/{prefix}"))


def s3_environment(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "callmood-test",
            "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull}


@dataclass
class Night:
    """sample_calls/ scored from the local disk: the reference every storage test meets."""

    model: str
    results: Path


def table_rows(url: str, table: str, storage_options: dict | None = None) -> list[dict]:
    """A table's committed rows as callmood's readers see them, without the columns that
    differ between two runs of the same calls (the file's location, the time of scoring),
    sorted."""
    from callmood.dashboard.results_db import connect, fetch_frame

    with connect(url, storage_options=storage_options) as con:
        rows = fetch_frame(con, f"SELECT * EXCLUDE (source_file, scored_at) FROM {table}")
    key = ["call_id", "channel", "start_s"] if table == "segments" else ["call_id"]
    return rows.sort_values(key).to_dict("records")


def assert_same_scores(expected: list[dict], got: list[dict], tolerance: float) -> None:
    """The same rows; numbers within `tolerance` (float rounding in other processes)."""
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float) and value != value:  # NaN: an empty value
                assert b[key] != b[key], (key, a, b)
            elif isinstance(value, float):
                assert abs(value - b[key]) <= tolerance, (key, a, b)
            else:
                assert value == b[key], (key, a, b)
