"""Where recordings and results live: a local path or an fsspec URL (``s3://bucket/prefix``
through s3fs, or any other fsspec file system), opened with credentials from the standard
places only: the environment, the provider's profile files, or ``--storage-options``.

Credentials never reach a result, a log line or an error row: a URL with a
``user:password@`` part is refused (it would show in process lists), and the options
themselves are never written anywhere.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

LOCAL_PROTOCOLS = ("file", "local")
STORAGE_OPTIONS_ENV = "CALLMOOD_STORAGE_OPTIONS"  # --storage-options, from the environment


class LocationError(RuntimeError):
    """A location that cannot be used: a bad URL, a missing bucket, no credentials, an
    unreachable server; the message names the location and the problem."""


def is_url(text: str) -> bool:
    """A location in a file system other than the local one (`s3://bucket/key`)."""
    protocol, sep, _ = str(text).partition("://")
    return bool(sep) and protocol not in LOCAL_PROTOCOLS


def shown(url: str) -> str:
    """The URL without credentials (`s3://key:secret@bucket/x` -> `s3://bucket/x`)."""
    parts = urlsplit(str(url))
    if "@" not in parts.netloc:
        return str(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def parse_storage_options(text: str | None) -> dict:
    """`--storage-options`: a JSON object of fsspec options, e.g.
    {"endpoint_url": "https://minio:9000", "profile": "nightly"}."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise LocationError(f"--storage-options is not JSON ({err})") from None
    if not isinstance(value, dict):
        raise LocationError("--storage-options must be a JSON object, e.g. "
                            '{"endpoint_url": "http://127.0.0.1:9000"}')
    return value


def _is(err: BaseException, *names: str) -> bool:
    """Whether `err` is one of the named classes (botocore's, which s3fs needs and
    callmood does not import)."""
    return any(cls.__name__ in names for cls in type(err).__mro__)


def explain(location: str, err: BaseException) -> LocationError:
    """The error an object store (or any fsspec file system) raised, as one line naming
    the location and the problem."""
    where = shown(location)
    if _is(err, "NoCredentialsError", "PartialCredentialsError", "ProfileNotFound"):
        return LocationError(
            f"{where}: no usable credentials ({err}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or give --storage-options")
    if isinstance(err, PermissionError):
        return LocationError(f"{where}: access denied ({err}); check the credentials' "
                             "permissions on the bucket")
    if isinstance(err, FileNotFoundError):
        return LocationError(f"{where}: not found ({err})")
    if _is(err, "EndpointConnectionError", "ConnectTimeoutError"):
        return LocationError(f"{where}: cannot reach the storage server ({err})")
    return LocationError(f"{where}: {type(err).__name__}: {err}")


def open_location(url: str, storage_options: dict | None = None,
                  ) -> tuple[AbstractFileSystem, str]:
    """(file system, path in it) of a local path or URL. Listings are not cached: a
    reader must see what a writer in another process has committed since."""
    options = dict(storage_options or {})
    if is_url(url) and shown(url) != str(url):  # it would show in `ps` and in paths
        raise LocationError(f"{shown(url)}: credentials in a URL are not accepted; give "
                            "them in the environment, a profile or --storage-options")
    try:
        if is_url(url):
            options.setdefault("use_listings_cache", False)
        return fsspec.core.url_to_fs(str(url), **options)
    except ImportError as err:
        raise LocationError(f"{shown(url)}: {err} (for s3:// URLs, install callmood[s3])"
                            ) from None
    except ValueError as err:
        raise LocationError(f"{shown(url)}: not a usable location ({err})") from None
    except TypeError as err:
        raise LocationError(f"{shown(url)}: a storage option is not understood ({err})"
                            ) from None


def url_of(fs: AbstractFileSystem, path: str) -> str:
    """The URL of `path` in `fs` (a plain path for the local file system)."""
    if isinstance(fs, LocalFileSystem):
        return path
    return fs.unstrip_protocol(path)
