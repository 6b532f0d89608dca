"""The results folder: atomic Parquet and JSON writes, the manifest, and the run lock.

Every file is written under a temporary name and renamed into place (object stores make
a write visible only when it completes), so a run killed at any moment leaves only whole
files. Each call has one Parquet file per table with a name derived from its call id, so
re-scoring a call replaces its rows instead of adding to them. A call counts as done once
its manifest entry (``_manifest/<hash of the path>.json``) is written, after its Parquet
files; a call interrupted before that is simply scored again by the next run.

At the end of a run each partition it touched is compacted into one file
(``part-c<hash>.parquet``), so DuckDB opens a few files per day rather than one per call.
A journal (``_compaction.json``) lists each merge before the merged file is written; a
run killed half-way is completed by the next one, so rows are never lost or kept twice.
Readers take the journal into account (``live_parts``): while a merged file and its
members are both on disk, they open only the merged file.

A call's rows are a version, told by their ``scored_at``; its calls row, written after
its segments, commits it. A re-scored call's new rows go to its own file beside its old
ones in the day's compacted file; readers take each call's newest committed version
(dashboard/results_db.py), and the compaction keeps only that (``newest_rows``), so a
compacted day holds committed rows only and is rewritten once per run, not once per
re-scored call. Rows a re-score cannot supersede (a call that now fails, or moved to
another day or call id) are removed from the compacted file at once.

A call scored live is first spooled (``_live_spool/<hash of the call id>.json``) and
then written by whoever holds the folder next (see results.writer.write_spooled_calls), so a
nightly run holding the lock for hours delays it but does not lose it.

``--out`` may be a local folder or an fsspec URL (``s3://bucket/results``): every write is
one whole object (a PUT is atomic: an object appears whole or not at all), so the same
protocol holds on an S3-compatible store with strongly consistent listings (AWS S3,
MinIO); there is no rename and nothing to clean up. The run lock is ``flock`` on a local
folder and a lease object written with S3's conditional writes (``ObjectLock``);
docs/results.md states the protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from callmood.results.location import explain, open_location, shown
from callmood.results.schema import PARTITION_KEYS

MANIFEST = "_manifest"
LABELS_FILE = "labels.json"  # the label set and valence the folder holds scores for
LOCK = ".lock"
OBJECT_LOCK = "_lock.json"  # the lease object of a results folder in an object store
LEASE_S = 600.0  # a lease not renewed for this long (its holder died) may be taken over
JOURNAL = "_compaction.json"
SPOOL = "_live_spool"
# every input folder ever scored into these results: the dashboard plays only files in them
INPUTS = "inputs.json"
_TMP = ".tmp-"


class ResultsError(RuntimeError):
    """The results folder cannot be used: missing, not a folder, unreadable, locked by
    another writer, or holding another label set."""


class ResultsBusy(ResultsError):
    """Another process holds the results folder's lock."""


def digest(text: str, length: int = 16) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def part_path(table: str, partition: str, name: str) -> str:
    """`segments/call_date=2026-11-20/part-<name>.parquet`, relative to the results root."""
    return f"{table}/{PARTITION_KEYS[table]}={partition}/part-{name}.parquet"


def partition_of(relative: str) -> tuple[str, str]:
    """(table, partition) of a file written at part_path(table, partition, name)."""
    table, folder, _ = relative.split("/", 2)
    return table, folder.split("=", 1)[1]


def is_compacted(relative: str) -> bool:
    """A merged file is `part-c<16 hex>`; a call's own is `part-<16 hex>`, which may begin
    with a c too, so the length tells them apart."""
    name = relative.rsplit("/", 1)[-1].removesuffix(".parquet")
    return name.startswith("part-c") and len(name) == len("part-c") + 16


def live_parts(listed: list[str], journals: list[dict | None]) -> list[str]:
    """The files of `listed` (paths relative to the results root) that a reader should
    open, given the compaction journal as read before and after listing: the members of a
    merge whose merged file is already there are left out, so no row is read twice."""
    present = set(listed)
    skipped = {member for journal in journals if journal
               for step in journal.get("plan", []) if step["compact"] in present
               for member in step["members"]}
    return [p for p in listed if p not in skipped]


def newest_rows(table: pa.Table, committed: pa.Table | None = None) -> pa.Table:
    """Each call's rows of its newest version (the greatest scored_at), in their order: a
    re-scored call's rows supersede its older ones in the same partition until compaction
    drops those. With `committed` (the (call_id, scored_at) of a partition's calls rows),
    the versions of segments that no calls row commits (a run killed between the two
    writes) are dropped first."""
    rows = table.append_column("_row", pa.array(np.arange(table.num_rows)))
    if committed is not None:
        versions = committed.select(["call_id", "scored_at"]) \
            .group_by(["call_id", "scored_at"]).aggregate([])
        rows = rows.join(versions, ["call_id", "scored_at"], join_type="left semi")
    newest = rows.group_by("call_id").aggregate([("scored_at", "max")])
    rows = rows.join(newest, "call_id")
    kept = rows.filter(pc.equal(rows["scored_at"], rows["scored_at_max"]))["_row"]
    return table.take(np.sort(kept.to_numpy()))


class ResultsStore:
    def __init__(self, url: str, storage_options: dict | None = None,
                 lease_s: float = LEASE_S):
        self.url = shown(url)  # what messages name: never a password in a URL
        self.fs, self.root = open_location(url, storage_options)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.lease_s = lease_s
        self._lease: ObjectLock | None = None
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)
            return
        bucket = self.root.split("/", 1)[0]
        try:  # an object store has no folders to make; see that the bucket is there
            self.fs.info(bucket)
        except FileNotFoundError:
            raise ResultsError(f"{self.url}: the bucket {bucket!r} does not exist") from None
        except Exception as err:
            raise ResultsError(str(explain(url, err))) from None

    def _path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def _write_bytes(self, relative: str, data: bytes) -> None:
        if self._lease is not None:
            self._lease.check()
        final = self._path(relative)
        if not self.local:  # one PUT: the object appears whole or not at all
            self.fs.pipe_file(final, data)
            return
        folder, name = final.rsplit("/", 1)
        self.fs.makedirs(folder, exist_ok=True)
        temp = f"{folder}/{_TMP}{name}.{uuid.uuid4().hex[:8]}"
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)

    def write_table(self, relative: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self._write_bytes(relative, buffer.getvalue())

    def read_table(self, relative: str, columns: list[str] | None = None) -> pa.Table:
        with self.fs.open(self._path(relative), "rb") as f:
            return pq.read_table(f, columns=columns)

    def write_json(self, relative: str, value: dict) -> None:
        self._write_bytes(relative, (json.dumps(value, indent=2) + "\n").encode())

    def read_json(self, relative: str) -> dict | None:
        try:
            with self.fs.open(self._path(relative), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def delete(self, relative: str) -> None:
        if self._lease is not None:
            self._lease.check()
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(relative))

    def remove_leftovers(self) -> int:
        """Delete temporary files a killed run left behind; returns how many. The spool's
        are left alone: live servers write there without the lock (one may be renaming
        its file into place right now). An object store has none: it writes no
        temporary files (an upload a kill interrupted never becomes an object)."""
        if not self.local:
            return 0
        spool = self._path(SPOOL) + "/"
        leftovers = [p for p in self.fs.find(self.root)
                     if p.rsplit("/", 1)[-1].startswith(_TMP) and not p.startswith(spool)]
        for path in leftovers:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path)
        return len(leftovers)

    def _json_names(self, folder: str) -> list[str]:
        """The finished JSON files in `folder`, sorted, as paths relative to the root."""
        listed = self._path(folder)
        if not self.fs.exists(listed):
            return []
        prefix = self.root.rstrip("/") + "/"
        return [path[len(prefix):] for path in sorted(self.fs.ls(listed, detail=False))
                if path.endswith(".json") and not path.rsplit("/", 1)[-1].startswith(_TMP)]

    def _json_files(self, folder: str) -> dict[str, dict]:
        """The finished JSON files in `folder`, by their path relative to the root."""
        return {relative: value for relative in self._json_names(folder)
                if (value := self.read_json(relative)) is not None}

    def manifest(self) -> dict[str, dict]:
        """Manifest entries of every finished file, keyed by the file's path."""
        return {entry["path"]: entry for entry in self._json_files(MANIFEST).values()}

    def add_input_roots(self, roots: list[str]) -> None:
        known = (self.read_json(INPUTS) or {}).get("roots", [])
        if not set(roots) <= set(known):
            self.write_json(INPUTS, {"roots": sorted(set(known) | set(roots))})

    def spool(self, key: str, value: dict) -> None:
        """Add `value` to the spool; files sort in the order they were spooled, and a
        second value for the same key is a file of its own (none is overwritten while a
        writer reads the spool)."""
        self.write_json(f"{SPOOL}/{time.time_ns():020d}-{digest(key)}.json", value)

    def spooled_files(self) -> list[str]:
        """The spool's files, oldest first, as paths relative to the root."""
        return self._json_names(SPOOL)

    def set_aside(self, relative: str) -> str:
        """Move a spool file that cannot be written into _live_spool/rejected/; returns
        its new path (relative to the root)."""
        aside = f"{SPOOL}/rejected/{relative.rsplit('/', 1)[-1]}"
        if self._lease is not None:
            self._lease.check()
        self.fs.makedirs(self._path(f"{SPOOL}/rejected"), exist_ok=True)
        self.fs.mv(self._path(relative), self._path(aside))
        return aside

    def manifest_entry(self, path: str) -> dict | None:
        return self.read_json(f"{MANIFEST}/{digest(path)}.json")

    def put_manifest(self, entry: dict) -> None:
        self.write_json(f"{MANIFEST}/{digest(entry['path'])}.json", entry)

    def list_parts(self, table: str, partition: str) -> list[str]:
        """Relative paths of the finished Parquet files of one partition."""
        folder = self._path(part_path(table, partition, "x").rsplit("/", 1)[0])
        if not self.fs.exists(folder):
            return []
        prefix = self.root.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in self.fs.ls(folder, detail=False)
                      if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith(_TMP))

    def replace_call_rows(self, relative: str, call_id: str,
                          rows: pa.Table | None = None) -> None:
        """Rewrite a compacted file with one call's rows replaced by `rows` (None: removed;
        the file is deleted if nothing is left), in one atomic write."""
        table = self.read_table(relative)
        kept = table.filter(pc.not_equal(table["call_id"], call_id))
        if rows is not None:
            kept = pa.concat_tables([kept, rows], promote_options="default")
        if kept.num_rows:
            self.write_table(relative, kept)
        else:
            self.delete(relative)

    def compact(self, partitions: set[tuple[str, str]], manifest: dict[str, dict]) -> int:
        """Merge each (table, partition)'s files into one; returns how many files it merged."""
        plan = []
        for table, partition in sorted(partitions):
            members = self.list_parts(table, partition)
            if len(members) > 1:
                name = "c" + digest("|".join(members))
                plan.append({"compact": part_path(table, partition, name), "members": members})
        if not plan:
            return 0
        self.write_json(JOURNAL, {"plan": plan})
        self.finish_compaction(manifest)
        return sum(len(step["members"]) for step in plan)

    def finish_compaction(self, manifest: dict[str, dict]) -> None:
        """Carry out the journal's merges: write each merged file not written yet (each
        call's newest rows of its members), point manifest entries at it, then delete the
        members.

        Idempotent, so it also completes the compaction of a run killed half-way (members
        are deleted only once every merged file is written).
        """
        journal = self.read_json(JOURNAL)
        if journal is None:
            return
        for step in journal["plan"]:
            if not self.fs.exists(self._path(step["compact"])):
                merged = pa.concat_tables([self.read_table(m) for m in step["members"]],
                                          promote_options="default")
                table, partition = partition_of(step["compact"])
                committed = pa.concat_tables(
                    [merged.select(["call_id", "scored_at"]).slice(0, 0)]  # none: all go
                    + [self.read_table(p, ["call_id", "scored_at"])
                       for p in self.list_parts("calls", partition)]
                ) if table == "segments" else None
                self.write_table(step["compact"], newest_rows(merged, committed))
        moved = {member: step["compact"] for step in journal["plan"]
                 for member in step["members"]}
        for entry in manifest.values():
            parts = entry.get("parts", [])
            if any(p in moved for p in parts):
                entry["parts"] = list(dict.fromkeys(moved.get(p, p) for p in parts))
                self.put_manifest(entry)
        for member in moved:
            self.delete(member)
        self.delete(JOURNAL)

    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the results folder for one run (or one live call's write), waiting up to
        `wait_s` for another holder; then refused with a clear message."""
        if not self.local:
            with ObjectLock(self, wait_s) as self._lease:
                try:
                    yield
                finally:
                    self._lease = None
            return
        path = self._path(LOCK)
        deadline = time.monotonic() + wait_s
        with open(path, "a+") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:
                        time.sleep(0.2)
                        continue
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise ResultsBusy(f"{self.url} is being written by another `callmood` "
                                       f"process ({holder}); wait for it to finish or use "
                                       "another --out") from None
            f.truncate(0)
            f.write(f"pid {os.getpid()}")
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)


class ObjectLock:
    """The run lock of a results folder in an S3-compatible store, which has no flock: a
    lease object (OBJECT_LOCK) made with a conditional write (If-None-Match: *), so of two
    runs that start together one gets it; renewed every lease_s / 3 (a conditional write
    on its own ETag) while the run lasts, and deleted at its end. A lease its holder
    stopped renewing for lease_s (killed, or cut off from the store) is taken over with a
    write conditional on its ETag, so of two runs that find it stale one takes it. A
    failed renewal is tried again every few seconds; the holder counts its lease lost, and
    stops writing and deleting (ResultsBusy), once another run holds the lease object or
    two thirds of lease_s have passed without a renewal, before any taker may see it stale.

    Needs S3's conditional writes (AWS S3 since 2024, MinIO, moto) and clocks within a
    small part of lease_s of the store's: staleness is the lease object's modification
    time, judged against the longer of the waiter's and the holder's lease_s.
    """

    RETRY_S = 5.0  # between tries of a failed renewal

    def __init__(self, store: ResultsStore, wait_s: float):
        if "s3" not in store.fs.protocol:
            raise ResultsError(f"{store.url}: the run lock on an object store needs S3's "
                               "conditional writes (s3:// URLs, AWS S3, MinIO); write the "
                               "results to a local folder or an S3-compatible store")
        self.store, self.wait_s = store, wait_s
        self.path = store._path(OBJECT_LOCK)
        self.holder = f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
        self.body = json.dumps({"holder": self.holder, "lease_s": store.lease_s}).encode()
        self.etag: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, daemon=True)

    def _lease(self) -> dict:
        """The lease object's body ({} when it is gone or unreadable)."""
        try:
            return json.loads(self.store.fs.cat_file(self.path) or b"{}")
        except (OSError, ValueError):
            return {}

    def __enter__(self) -> ObjectLock:
        fs, deadline = self.store.fs, time.monotonic() + self.wait_s
        age = 0.0
        while self.etag is None:
            try:
                self.etag = fs.pipe_file(self.path, self.body, mode="create")["ETag"]
                break
            except OSError:  # there already (FileExistsError), or a conflicting write
                pass
            try:
                info = fs.info(self.path)
                age = (datetime.now(timezone.utc) - info["LastModified"]).total_seconds()
                lease_s = max(self.store.lease_s, float(self._lease().get("lease_s") or 0))
                if age > lease_s:  # its holder stopped renewing it
                    self.etag = fs.pipe_file(self.path, self.body,
                                             IfMatch=info["ETag"])["ETag"]
                    break
            except FileNotFoundError:  # let go meanwhile: try to make it again
                continue
            except OSError:  # taken over by another run meanwhile: look again
                age = 0.0
            if time.monotonic() >= deadline:
                holder = self._lease().get("holder")
                raise ResultsBusy(
                    f"{self.store.url} is being written by another `callmood` process "
                    f"({holder or 'unknown'}, lease renewed {age:.0f} s ago); wait for it "
                    f"to finish, or for its lease to lapse ({self.store.lease_s:g} s after "
                    f"its last renewal) if it was killed, or use another --out")
            time.sleep(min(0.5, max(deadline - time.monotonic(), 0.01)))
        self._renewer.start()
        return self

    def _renew(self) -> None:
        renewed, wait = time.monotonic(), self.store.lease_s / 3
        while not self._stop.wait(wait):
            try:
                self.etag = self.store.fs.pipe_file(self.path, self.body,
                                                    IfMatch=self.etag)["ETag"]
                renewed, wait = time.monotonic(), self.store.lease_s / 3
                continue
            except Exception as err:  # taken over, or the store out of reach for now
                failure = f"{type(err).__name__}: {err}"
            holder = self._lease().get("holder")
            if holder is not None and holder != self.holder:
                self.lost = f"taken over by {holder}"
                return
            if time.monotonic() - renewed > self.store.lease_s * 2 / 3:
                self.lost = f"not renewed for {time.monotonic() - renewed:.0f} s ({failure})"
                return
            if holder == self.holder:  # ours still: a write whose answer was lost
                with contextlib.suppress(OSError):
                    self.etag = self.store.fs.info(self.path)["ETag"]
            wait = min(self.RETRY_S, self.store.lease_s / 3)

    def check(self) -> None:
        """Refuse to write or delete once the lease is lost: another run may hold the
        folder."""
        if self.lost:
            raise ResultsBusy(f"{self.store.url}: the run lost its lock ({self.lost}); "
                              "it stops writing, another run may hold the folder")

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._renewer.join()
        if self.lost is None:
            with contextlib.suppress(OSError):
                self.store.fs.rm_file(self.path)
