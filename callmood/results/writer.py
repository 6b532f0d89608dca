"""Writing scored calls into a results folder: their segments and calls rows, the
manifest entry that says each file's state, error rows, the run's row, and the spool of
calls scored live.

The nightly job (batch/score.py) writes each file's outcome as it arrives; a live server
(live/) spools each call it scored and writes the spool when the folder is free.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from callmood.results.call_summary import CallAnalytics, roles_for, summarize_call
from callmood.results.meta import CallMeta
from callmood.results.schema import ERRORS_SCHEMA, RUNS_SCHEMA, calls_schema, segments_schema
from callmood.results.scored import ScoredCall, Segment, top_labels
from callmood.results.store import (
    JOURNAL,
    LABELS_FILE,
    ResultsBusy,
    ResultsError,
    ResultsStore,
    digest,
    is_compacted,
    part_path,
    partition_of,
)

if TYPE_CHECKING:
    from callmood.model.folder import LoadedModel


# failures that say nothing about the recording: a re-score that fails so keeps its rows
TRANSIENT_FAILURES = frozenset({"timeout", "internal", "permission", "model"})
# manifest states of a file whose rows readers may see (`writing`: a kill interrupted a
# re-score, and the version before it still stands)
HOLDS_ROWS = frozenset({"scored", "writing"})


@dataclass(frozen=True)
class Rejected:
    """A path under the inputs that cannot be a recording; it becomes an error row."""

    path: str
    kind: str  # broken_link | not_a_file | metadata (then path is the sidecar)
    message: str


@dataclass(frozen=True)
class CallFile:
    path: str  # absolute
    size: int
    mtime_ns: int
    meta: CallMeta
    # no time in its sidecar or path: meta.started_at is the file's mtime, which a copy
    # (cp without -p, a restore) moves although the call is the same
    dated_by_mtime: bool = False
    etag: str | None = None  # of an object in an object store (batch/scan.py's Objects)


def dated_as_scored(call: CallFile, entry: dict) -> CallFile:
    """The call with the start time `entry` (its manifest entry, or its moved file's) has
    for it, if its own comes from its mtime: a copied recording stays on its day."""
    if not call.dated_by_mtime:
        return call
    return replace(call, meta=replace(
        call.meta, started_at=datetime.fromisoformat(entry["meta"]["started_at"])))


@dataclass
class RunSummary:
    run_id: str
    files_found: int = 0
    files_unchanged: int = 0
    calls_scored: int = 0
    files_failed: int = 0
    metadata_problems: int = 0  # sidecar faults: error rows, but the calls score anyway
    hidden_skipped: int = 0  # recordings named or filed under '.', e.g. uploads in progress
    audio_s: float = 0.0
    segments: int = 0
    wall_s: float = 0.0
    priors: dict[str, float] | None = None  # estimated by prior_shift="em"

    def line(self) -> str:
        speed = self.audio_s / self.wall_s if self.wall_s else 0.0
        return (f"{self.calls_scored} calls scored ({self.audio_s / 3600:.2f} h of audio, "
                f"{self.segments} segments), {self.files_failed} files failed, "
                f"{self.metadata_problems} metadata problems, "
                f"{self.files_unchanged} unchanged files skipped"
                + (f", {self.hidden_skipped} hidden files skipped" if self.hidden_skipped
                   else "") + f"; {self.wall_s:.1f} s wall, "
                f"{speed:.0f}x real time") + (
            "; class priors of the night: " + ", ".join(
                f"{k} {v:.0%}" for k, v in self.priors.items()) if self.priors else "")


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class ModelStamp:
    """What the results record of the model that scored a call. A spooled live call keeps
    the stamp of the model that scored it, whichever process writes it."""

    name: str
    version: str
    labels: list[str]
    valence: dict[str, int]

    @classmethod
    def of(cls, model: LoadedModel) -> ModelStamp:
        return cls(model.name, model.version, list(model.labels), dict(model.card.valence))


class CallWriter:
    """Writes the outcome of each file (or live call) as it arrives, for one run."""

    def __init__(self, store: ResultsStore, stamp: ModelStamp | None,
                 analytics: CallAnalytics, manifest: dict[str, dict],
                 summary: RunSummary, started: datetime, rescore: bool = False):
        # stamp: the nightly run's model; None when writing spooled live calls, which
        # each bring their own; rescore: a re-scored recording is dated anew
        self.store, self.stamp, self.analytics = store, stamp, analytics
        self.rescore = rescore
        self.manifest, self.summary = manifest, summary
        self.started = started
        self.errors: list[dict] = []
        self.touched: set[tuple[str, str]] = set()  # (table, partition) to compact
        self.moved_from: dict[str, str] = {}  # path -> the vanished path that had its call id

    def _previous(self, call: CallFile) -> dict:
        """The manifest entry whose rows this call's new ones replace: its own, or that of
        the vanished file it was moved (or renamed) from."""
        own = self.manifest.get(call.path) or {}
        if own.get("parts") or call.path not in self.moved_from:
            return own
        return self.manifest.get(self.moved_from[call.path]) or {}  # own: none, or failed

    def _replace_parts(self, call: CallFile, keep: list[str]) -> list[str]:
        """Remove the call's previous rows, except from the files in `keep`; returns the
        compacted files that still hold them. Those are files of a partition `keep` has
        rows of the same call in: the new rows supersede the old there (readers take a
        call's newest version, and the end-of-run compaction drops the older), so a day's
        file is rewritten once per run, not once per re-scored call."""
        previous = self._previous(call)
        superseded = {partition_of(part) for part in keep} \
            if previous.get("meta", {}).get("call_id") == call.meta.call_id else set()
        still = []
        for relative in previous.get("parts", []):
            if relative in keep:
                continue
            if not is_compacted(relative):
                self.store.delete(relative)
            elif partition_of(relative) in superseded:
                still.append(relative)
            else:  # shared with other calls: drop only this call's rows
                self.store.replace_call_rows(relative, previous["meta"]["call_id"])
        return still

    def _begin(self, call: CallFile, parts: list[str]) -> None:
        """Mark the call as being written, before its new rows: a run killed before the
        call is finished (its segments written, its calls row not, or only some of a
        re-score's) leaves it `writing`, and the next run scores it again."""
        entry = {**self._previous(call), "path": call.path, "status": "writing",
                 "run_id": self.summary.run_id}
        entry.setdefault("meta", call.meta.as_json())
        entry["parts"] = list(dict.fromkeys([*entry.get("parts", []), *parts]))
        self.store.put_manifest(entry)
        self.manifest[call.path] = entry

    def _finish(self, call: CallFile, sha256: str | None, status: str, parts: list[str],
                detail: dict) -> None:
        entry = {"path": call.path, "size": call.size, "mtime_ns": call.mtime_ns,
                 "sha256": sha256, "meta": call.meta.as_json(), "status": status,
                 "parts": parts, "run_id": self.summary.run_id,
                 "done_at": now().isoformat(), **detail}
        if call.etag:
            entry["etag"] = call.etag
        self.store.put_manifest(entry)
        self.manifest[call.path] = entry
        self.touched.update(partition_of(part) for part in parts)
        if (old := self.moved_from.pop(call.path, None)) is not None:
            self.manifest[old] = {**self.manifest[old], "status": "moved", "parts": [],
                                  "moved_to": call.path}
            self.store.put_manifest(self.manifest[old])

    def write_failed(self, call: CallFile, kind: str, message: str,
                     sha256: str | None = None):
        """An error row; the call's previous rows go, unless the failure says nothing about
        the recording (a time-out, a crash, a permission) and it is the one scored before."""
        self._error_row(call.path, kind, message)
        self.summary.files_failed += 1
        previous = self._previous(call)
        if kind in TRANSIENT_FAILURES and previous.get("status") in HOLDS_ROWS \
                and previous.get("size") == call.size \
                and (previous.get("sha256") == sha256 if sha256
                     else previous.get("mtime_ns") == call.mtime_ns):
            return  # its rows and manifest entry stand; a re-score can try again
        self._replace_parts(call, keep=[])
        self._finish(call, sha256, "failed", [], {"error_kind": kind})

    def _error_row(self, path: str, kind: str, message: str) -> None:
        self.errors.append({"file": path, "error_kind": kind, "message": message,
                            "occurred_at": now(), "run_id": self.summary.run_id})
        errors = pa.Table.from_pylist(self.errors, schema=ERRORS_SCHEMA)
        self.store.write_table(part_path("errors", self.started.date().isoformat(),
                                         self.summary.run_id), errors)

    def write_rejected(self, item: Rejected) -> None:
        """A path that is no recording, or a sidecar fault: an error row, no manifest entry
        (looked at again next run, in case it has become a file or the sidecar was fixed).
        A sidecar fault is no failed file: its calls score with default metadata."""
        self._error_row(item.path, item.kind, item.message)
        if item.kind == "metadata":
            self.summary.metadata_problems += 1
        else:
            self.summary.files_failed += 1

    def write_scored(self, call: CallFile, outcome: ScoredCall,
               stamp: ModelStamp | None = None, incomplete: str | None = None) -> None:
        """incomplete: why a live call's audio was not all scored (its manifest entry says
        so, and the nightly run scores its recording and replaces it: scored_live)."""
        stamp = stamp or self.stamp
        previous = self._previous(call)
        if previous.get("status") == "scored" and previous["sha256"] == outcome.sha256 \
                and not self.rescore:
            call = dated_as_scored(call, previous)  # the same recording, copied or moved
        labels, meta = stamp.labels, call.meta
        roles = roles_for(outcome.channels, meta.customer_channel)
        customer_channel = meta.customer_channel if "customer" in roles else None
        if meta.customer_channel is not None and customer_channel is None:
            self.write_rejected(Rejected(call.path, "metadata", (
                f"customer_channel {meta.customer_channel}, but the recording has "
                f"{outcome.channels} channel{'s' * (outcome.channels != 1)}: its channels "
                "are scored without agent and customer roles")))
        order = sorted(range(len(outcome.windows)),
                       key=lambda i: (outcome.windows[i][1], outcome.windows[i][0]))
        windows = [outcome.windows[i] for i in order]
        probs = outcome.probs[order]
        scored_at = now()
        tail = {"model_name": stamp.name, "model_version": stamp.version,
                "scored_at": scored_at}
        n = len(windows)
        emotions, confidences = top_labels(probs, labels)
        segments = {
            "call_id": [meta.call_id] * n, "source_file": [call.path] * n,
            "channel": [c for c, _, _ in windows], "role": [roles[c] for c, _, _ in windows],
            "start_s": [s for _, s, _ in windows], "end_s": [e for _, _, e in windows],
            "emotion": emotions, "confidence": confidences,
            **{f"p_{label}": probs[:, i] for i, label in enumerate(labels)},
            **{k: [v] * n for k, v in tail.items()},
        }
        summary = summarize_call(
            labels, stamp.valence, outcome.duration_s,
            [(roles[c], s, e) for c, s, e in outcome.speech],
            [(roles[c], s, e) for c, s, e in windows], probs, self.analytics)
        call_row = {"call_id": meta.call_id, "source_file": call.path,
                    "agent_id": meta.agent_id, "queue": meta.queue,
                    "started_at": meta.started_at, "customer_channel": customer_channel,
                    "duration_s": outcome.duration_s, "n_segments": n, **summary, **tail}
        # the segments first, then the calls row, which readers take as the commit of the
        # call's version (scored_at): they show a call whole or not at all (results_db)
        parts = [part_path(table, meta.call_date, digest(meta.call_id))
                 for table in ("segments", "calls")]
        self._begin(call, parts)
        self.store.write_table(parts[0], pa.Table.from_pydict(
            segments, schema=segments_schema(labels)))
        self.store.write_table(parts[1], pa.Table.from_pylist(
            [call_row], schema=calls_schema(labels)))
        parts += self._replace_parts(call, keep=parts)
        self._finish(call, outcome.sha256, "scored", parts,
                     {"model_version": stamp.version}
                     | ({"incomplete": incomplete} if incomplete else {}))
        self.summary.calls_scored += 1
        self.summary.segments += n
        self.summary.audio_s += outcome.duration_s

    def write_run(self, wall_s: float, status: str) -> None:
        s = self.summary
        row = {"run_id": s.run_id, "started_at": self.started, "finished_at": now(),
               "files_scored": s.calls_scored, "files_failed": s.files_failed,
               "audio_hours": s.audio_s / 3600, "segments": s.segments, "wall_s": wall_s,
               "model_name": self.stamp.name, "model_version": self.stamp.version,
               "status": status}
        self.store.write_table(part_path("runs", self.started.date().isoformat(), s.run_id),
                               pa.Table.from_pylist([row], schema=RUNS_SCHEMA))


def check_labels(store: ResultsStore, stamp: ModelStamp) -> bool:
    """Refuse a results folder that holds another label set; False if it holds none yet."""
    known = store.read_json(LABELS_FILE)
    if known and known["labels"] != stamp.labels:
        raise ResultsError(f"{store.url} holds scores for the labels {known['labels']}, but "
                           f"the model {stamp.name} {stamp.version} has {stamp.labels}; use "
                           "another results folder")
    return bool(known)


def claim_labels(store: ResultsStore, stamp: ModelStamp) -> None:
    """check_labels, then record this model's labels as the folder's."""
    check_labels(store, stamp)
    store.write_json(LABELS_FILE, {"labels": stamp.labels, "valence": stamp.valence,
                              "model_name": stamp.name, "model_version": stamp.version})


LIVE = "live:"  # manifest key prefix of a call scored live (it has no file yet)
LIVE_WRITE_S = 10.0  # a nightly run waits this long for a live server writing its calls
LIVE_CHUNK = 50  # spooled calls a live server writes per hold of the lock (about a second)


def write_live_call(out: str, model: LoadedModel, meta: CallMeta, outcome: ScoredCall,
                    analytics: CallAnalytics, incomplete: str | None = None) -> bool:
    """Write a call scored live (live/stream.py) with the nightly job's writer and schema;
    its recording, when it arrives with the same call id, is not scored again, unless
    `incomplete` says why not all of the call's audio was scored (an errors row of kind
    `incomplete` says it too): then the nightly run scores the recording and replaces it.

    The call is spooled first, then written with the other spooled calls if the results
    folder is free; True if it was. A nightly run holds the folder for hours: then the
    call waits in the spool for the next holder (the live server's retry, or the nightly
    run itself before it lets go), and a crash meanwhile loses nothing. A folder that holds
    another label set is refused at once (ResultsError), before anything is spooled.
    """
    store, stamp = ResultsStore(out), ModelStamp.of(model)
    check_labels(store, stamp)
    store.spool(meta.call_id, {
        "model": asdict(stamp), "meta": meta.as_json(),
        "duration_s": outcome.duration_s, "channels": outcome.channels,
        "speech": outcome.speech, "windows": outcome.windows,
        "probs": outcome.probs.tolist(), "incomplete": incomplete})
    return flush_live_spool(out, analytics, chunks=1)  # a backlog is the retry's work


def flush_live_spool(out: str, analytics: CallAnalytics, wait_s: float = 0.0,
                     chunks: int | None = None) -> bool:
    """Write the spooled calls (at most `chunks` times LIVE_CHUNK), LIVE_CHUNK per hold of
    the lock (a nightly run that starts meanwhile waits LIVE_WRITE_S at most), while the
    results folder is free within `wait_s`; False if another process holds it."""
    store = ResultsStore(out)
    done = 0
    # the spool is looked at without the lock, which a night may want
    while store.spooled_files() and (chunks is None or done < chunks):
        try:
            with store.lock(wait_s):
                # a night's compaction a kill left half done is finished first (a night
                # does so at its start), or a live call rewriting a merged member would
                # be lost in it
                if store.read_json(JOURNAL) is not None:
                    store.finish_compaction(store.manifest())
                write_spooled_calls(store, analytics, limit=LIVE_CHUNK)
        except ResultsBusy:
            return False
        done += 1
    return True


def _spooled_call(value: dict) -> tuple[ModelStamp, CallFile, ScoredCall, str | None]:
    incomplete = value.get("incomplete")
    if not isinstance(incomplete, str | None):
        raise ValueError(f"incomplete must be a string, got {incomplete!r:.80}")
    meta = CallMeta.from_json(value["meta"])
    path = LIVE + meta.call_id
    windows, labels = value["windows"], value["model"]["labels"]
    probs = np.asarray(value["probs"], np.float32)
    if probs.size != len(windows) * len(labels):  # a row per window, a column per label
        raise ValueError(f"{probs.size} probabilities for {len(windows)} windows and the "
                         f"{len(labels)} labels of its model")
    return ModelStamp(**value["model"]), CallFile(path, 0, 0, meta), ScoredCall(
        path, duration_s=float(value["duration_s"]), channels=int(value["channels"]),
        speech=[Segment(*s) for s in value["speech"]], windows=[Segment(*w) for w in windows],
        probs=probs.reshape(len(windows), len(labels))), incomplete


def write_spooled_calls(store: ResultsStore, analytics: CallAnalytics,
                        manifest: dict[str, dict] | None = None,
                        limit: int | None = None) -> set[tuple[str, str]]:
    """Write the spooled live calls (the first `limit`), each stamped with the model that
    scored it, and empty the spool of them; returns the partitions written to. Call it
    holding the store's lock.

    A call whose recording has been scored meanwhile is not written (the recording's rows
    stand): the nightly run, which has the whole `manifest`, checks that; the live server
    does not read it (tens of thousands of files), as a call that ends after the night let
    go has no recording yet. A spool file that cannot be read, or holds another label set
    than the folder, is set aside in _live_spool/rejected/ with an errors row.
    """
    names = store.spooled_files()[:limit]
    started = now()
    run = CallWriter(store, None, analytics, {} if manifest is None else manifest,
                     RunSummary(f"live-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"),
                     started)
    recorded = {e["meta"]["call_id"] for path, e in run.manifest.items()
                if not path.startswith(LIVE) and e["status"] == "scored"}
    for relative in names:
        try:
            stamp, call, outcome, incomplete = _spooled_call(store.read_json(relative))
            if not check_labels(store, stamp):  # only live calls so far
                claim_labels(store, stamp)
        except (ValueError, KeyError, TypeError, ResultsError) as err:
            aside = store.set_aside(relative)
            run.write_rejected(Rejected(aside, "spool", f"spooled live call not written ({err}); "
                                                  "set aside"))
            continue
        if call.meta.call_id in recorded:
            run.write_rejected(Rejected(call.path, "superseded", "scored live after its "
                                  "recording had been scored; the recording's rows stand"))
        else:
            if manifest is None and (entry := store.manifest_entry(call.path)):
                run.manifest[call.path] = entry  # its rows from an earlier stream go
            run.write_scored(call, outcome, stamp, incomplete)
            if incomplete:
                run.write_rejected(Rejected(call.path, "incomplete", incomplete))
        store.delete(relative)
    return run.touched


def scored_live(manifest: dict[str, dict]) -> dict[str, dict]:
    """Manifest entries of live calls scored in full, by call id: their recordings are not
    scored again. An incomplete one's recording is, and replaces it (batch/ledger.py takes
    the live entry for the one the recording moved from)."""
    return {e["meta"]["call_id"]: e for path, e in manifest.items()
            if path.startswith(LIVE) and e["status"] == "scored" and not e.get("incomplete")}
