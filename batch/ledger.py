"""What the results already hold of each file, from the manifest: which files are new or
changed since their last scoring, and which call ids are taken.

The manifest (one entry per scored or failed file, see results.store.ResultsStore)
remembers each file's size, mtime, content hash, metadata and (for an object in an object
store) ETag, so a nightly run only
scores what is new or changed (known_unchanged); a recording dated by its mtime keeps the
date it was scored with while its content is the same (dated_as_scored).
"""

from __future__ import annotations

from pathlib import Path

from callmood.batch.source import content_sha256
from callmood.results.location import LocationError, is_url, open_location
from callmood.results.store import ResultsStore
from callmood.results.writer import HOLDS_ROWS, CallFile, CallWriter, dated_as_scored


def known_unchanged(call: CallFile, entry: dict | None,
                    storage_options: dict | None = None) -> CallFile | None:
    """The call as its manifest entry describes it, if the entry is of this content and
    metadata and the file was scored; None if it is to be scored (new, changed, or failed
    before: it may have been still copying in).

    Size and mtime decide quickly (size and ETag for an object: an object written again
    with the same bytes keeps its ETag, a changed one gets another even within the same
    second); a file whose mtime alone moved (copied, touched; an object copied, or
    uploaded in parts) is compared by content hash and comes back with its new mtime and
    ETag, for the manifest to remember (the next night need not read it again). A file
    dated by its mtime keeps the start time it was scored with.
    """
    if entry is None or entry.get("status") != "scored" or entry["size"] != call.size:
        return None
    call = dated_as_scored(call, entry)
    if entry["meta"] != call.meta.as_json():
        return None
    if (entry.get("etag") == call.etag if call.etag else entry["mtime_ns"] == call.mtime_ns):
        return call
    try:
        return call if entry["sha256"] == content_sha256(call.path, storage_options) else None
    except (OSError, ValueError):  # unreadable now: the worker says why
        return None


def to_score(files: list[CallFile], manifest: dict[str, dict], live: dict[str, dict],
             store: ResultsStore, rescore: bool,
             storage_options: dict | None = None) -> list[CallFile]:
    """The files that are new or changed (all with `rescore`), leaving out recordings of
    calls scored live. A file whose mtime alone moved gets it recorded in the manifest."""
    todo = []
    for call in files:
        if call.meta.call_id in live:
            continue
        entry = manifest.get(call.path)
        known = None if rescore else known_unchanged(call, entry, storage_options)
        if known is None:
            todo.append(call)
        elif (known.mtime_ns, known.etag) != (entry["mtime_ns"], entry.get("etag")):
            # copied or touched, same content
            manifest[call.path] = {**entry, "mtime_ns": known.mtime_ns,
                                   **({"etag": known.etag} if known.etag else {})}
            store.put_manifest(manifest[call.path])
    return todo


def exists(path: str, storage_options: dict | None = None) -> bool:
    """Whether the recording at `path` (a local path or an fsspec URL) is still there."""
    if not is_url(path):
        return Path(path).exists()
    try:
        fs, located = open_location(path, storage_options)
        return fs.exists(located)
    except LocationError:
        return False


def claim_call_ids(todo: list[CallFile], manifest: dict[str, dict],
                   writer: CallWriter, storage_options: dict | None = None) -> list[CallFile]:
    """Drop (as errors) files whose call id already belongs to another existing file."""
    owners = {e["meta"]["call_id"]: path for path, e in manifest.items()
              if e["status"] in HOLDS_ROWS}
    kept = []
    for call in todo:
        owner = owners.get(call.meta.call_id)
        if owner not in (None, call.path):
            if exists(owner, storage_options):
                writer.write_failed(call, "duplicate_call_id",
                                    f"call id {call.meta.call_id!r} is already used by {owner}")
                continue
            writer.moved_from[call.path] = owner  # its rows are replaced when this one scores
        owners[call.meta.call_id] = call.path
        kept.append(call)
    return kept
