"""What the results already hold of each file, from the manifest: which files are new or
changed since their last scoring, and which call ids are taken.

The manifest (one entry per scored or failed file, see results.store.ResultsStore)
remembers each file's size, mtime, content hash and metadata, so a nightly run only
scores what is new or changed (known_unchanged); a recording dated by its mtime keeps the
date it was scored with while its content is the same (dated_as_scored).
"""

from __future__ import annotations

from pathlib import Path

from callmood.digest import file_sha256
from callmood.results.store import ResultsStore
from callmood.results.writer import HOLDS_ROWS, CallFile, CallWriter, dated_as_scored


def known_unchanged(call: CallFile, entry: dict | None) -> CallFile | None:
    """The call as its manifest entry describes it, if the entry is of this content and
    metadata and the file was scored; None if it is to be scored (new, changed, or failed
    before: it may have been still copying in).

    Size and mtime decide quickly; a file whose mtime alone moved (copied, touched) is
    compared by content hash and comes back with its new mtime, for the manifest to
    remember (the next night need not read it again). A file dated by its mtime keeps the
    start time it was scored with.
    """
    if entry is None or entry.get("status") != "scored" or entry["size"] != call.size:
        return None
    call = dated_as_scored(call, entry)
    if entry["meta"] != call.meta.as_json():
        return None
    if entry["mtime_ns"] == call.mtime_ns:
        return call
    try:
        return call if entry["sha256"] == file_sha256(call.path) else None
    except OSError:  # unreadable now: the worker says why
        return None


def to_score(files: list[CallFile], manifest: dict[str, dict], live: dict[str, dict],
             store: ResultsStore, rescore: bool) -> list[CallFile]:
    """The files that are new or changed (all with `rescore`), leaving out recordings of
    calls scored live. A file whose mtime alone moved gets it recorded in the manifest."""
    todo = []
    for call in files:
        if call.meta.call_id in live:
            continue
        entry = manifest.get(call.path)
        known = None if rescore else known_unchanged(call, entry)
        if known is None:
            todo.append(call)
        elif known.mtime_ns != entry["mtime_ns"]:  # copied or touched, same content
            manifest[call.path] = {**entry, "mtime_ns": known.mtime_ns}
            store.put_manifest(manifest[call.path])
    return todo


def claim_call_ids(todo: list[CallFile], manifest: dict[str, dict],
                   writer: CallWriter) -> list[CallFile]:
    """Drop (as errors) files whose call id already belongs to another existing file."""
    owners = {e["meta"]["call_id"]: path for path, e in manifest.items()
              if e["status"] in HOLDS_ROWS}
    kept = []
    for call in todo:
        owner = owners.get(call.meta.call_id)
        if owner not in (None, call.path):
            if Path(owner).exists():
                writer.write_failed(call, "duplicate_call_id",
                                    f"call id {call.meta.call_id!r} is already used by {owner}")
                continue
            writer.moved_from[call.path] = owner  # its rows are replaced when this one scores
        owners[call.meta.call_id] = call.path
        kept.append(call)
    return kept
