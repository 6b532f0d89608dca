"""`callmood score`: score every new or changed call under the inputs into a results folder.

Each file is one task for joblib (local processes, or a Dask cluster through joblib's
dask backend): decode, find speech, log-mels, and the model's probabilities, all in the
worker. The model is most of the work, so it runs where the parallelism is: each worker
loads the model folder once and scores its file's windows in batches with one torch
thread, and throughput grows with the number of workers. Workers return only the
windows and their probabilities; the main process builds the rows and writes them, one
call at a time, as results arrive.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import torch

from callmood.batch.call_summary import EscalationConfig, roles_for, summarize_call
from callmood.batch.extract import extract_file
from callmood.batch.scan import (
    AUDIO_PATTERNS,
    CallFile,
    CallMeta,
    Rejected,
    dated_as_scored,
    input_root,
    known_unchanged,
    scan,
    source_zone,
)
from callmood.batch.schema import ERRORS_SCHEMA, RUNS_SCHEMA, calls_schema, segments_schema
from callmood.batch.segment import VadConfig
from callmood.batch.write import (
    LABELS,
    ResultsBusy,
    ResultsError,
    ResultsStore,
    digest,
    is_compacted,
    part_path,
    partition_of,
)
from callmood.progress import progress as progress_bar
from callmood.training.audio import AudioError, probe, unreadable_by_user
from callmood.training.calibration import adapt_priors
from callmood.training.features import CLIP_OVERLAP
from callmood.training.model_folder import LoadedModel, ModelOutputError, load_model_folder
from callmood.workers import workers_die_with_this_process

CONFIG = "score_config.json"
# failures that say nothing about the recording: a re-score that fails so keeps its rows
TRANSIENT_FAILURES = frozenset({"timeout", "internal", "permission", "model"})


@dataclass(frozen=True)
class ScoreConfig:
    """Settings of a scoring run; saved beside the results as score_config.json."""

    workers: int = 1
    backend: str = "loky"  # loky (local processes) | dask
    scheduler: str | None = None  # Dask scheduler address, with backend="dask"
    batch_size: int = 32
    precision: str = "fp32"  # fp32 | bf16 (autocast; fast on CPUs with AVX512-BF16 or AMX)
    overlap: float = CLIP_OVERLAP  # of the clip, between windows of a long speech region
    max_hours: float = 6.0  # longer files are recorded as errors, not decoded
    file_minutes: float = 60.0  # a file still not scored after this is an error row
    rescore: bool = False
    include: tuple[str, ...] = AUDIO_PATTERNS
    exclude: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    follow_links: bool = False  # links to files and folders outside the inputs
    # the recorders' zone: times in paths and sidecar times without an offset are local
    # times there (IANA name); results hold UTC
    source_timezone: str = "UTC"
    # "em": re-estimate the class priors over the run's segments (Saerens et al., 2002) and
    # correct the probabilities for them; the run then writes its calls after the last file
    prior_shift: str = "off"  # off | em
    vad: VadConfig = field(default_factory=VadConfig)
    escalation: EscalationConfig = field(default_factory=EscalationConfig)

    def __post_init__(self):
        if self.backend not in ("loky", "dask"):
            raise ValueError(f"unknown backend {self.backend!r}; choose loky or dask")
        if self.prior_shift not in ("off", "em"):
            raise ValueError(f"unknown prior shift {self.prior_shift!r}; choose off or em")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {self.precision!r}; choose fp32 or bf16")
        if self.backend == "dask" and not self.scheduler:
            raise ValueError("the dask backend needs a scheduler address")
        source_zone(self.source_timezone)  # ScanError (a ValueError) names a bad zone
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.workers < 1 or self.batch_size < 1 or self.max_hours <= 0 \
                or self.file_minutes <= 0:
            raise ValueError("workers, batch size, max hours and file minutes must be "
                             "positive")


@dataclass
class FileOutcome:
    """What a worker sends back: the scored windows of one file, or why it failed."""

    path: str
    sha256: str | None = None
    duration_s: float = 0.0
    channels: int = 0
    speech: list[tuple[int, float, float]] = field(default_factory=list)
    windows: list[tuple[int, float, float]] = field(default_factory=list)
    probs: np.ndarray | None = None
    error_kind: str | None = None
    error: str | None = None


_MODELS: dict[str, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def cached_model(model_dir: str) -> LoadedModel:
    """The model folder, loaded once per process (workers are reused across files)."""
    key = str(Path(model_dir).resolve())
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model_folder(key)
        return _MODELS[key]


class FileTimeout(BaseException):
    """Not an Exception, so that no `except Exception` on the way swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise FileTimeout in this thread after `seconds` (it takes effect between the
    blocks a file is decoded and scored in). Only the main thread of a process can set
    the alarm; elsewhere (a Dask worker thread) there is no limit."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise FileTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def score_file(path: str, model_dir: str, vad: VadConfig, overlap: float,
               max_seconds: float, batch_size: int, precision: str = "fp32",
               time_limit_s: float | None = None) -> FileOutcome:
    """The worker task; never raises, so one bad file cannot stop the run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with time_limit(time_limit_s):
            return _score_file(path, model_dir, vad, overlap, max_seconds, batch_size,
                               precision)
    except FileTimeout:
        return FileOutcome(path, error_kind="timeout",
                           error=f"not done within the limit of {time_limit_s / 60:g} min "
                                 "per file (--file-minutes); the run went on without it")
    finally:
        torch.set_num_threads(threads)


def _score_file(path: str, model_dir: str, vad: VadConfig, overlap: float,
                max_seconds: float, batch_size: int, precision: str) -> FileOutcome:
    try:
        model = cached_model(model_dir)
        found = extract_file(path, model.mel, vad, overlap, max_seconds)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            probs = np.concatenate([model.predict_mels(mels, batch_size)
                                    for mels in found.mel_batches(model.mel, batch_size)])
        return FileOutcome(path, found.sha256, found.duration_s, found.channels, found.speech,
                           found.windows, probs)
    except (AudioError, ModelOutputError) as err:
        return FileOutcome(path, error_kind=err.kind, error=err.detail)
    except FileNotFoundError:
        return FileOutcome(path, error_kind="missing",
                           error="removed while it was being scored")
    except PermissionError as err:
        refused = unreadable_by_user(path, err)
        return FileOutcome(path, error_kind=refused.kind, error=refused.detail)
    except Exception as err:  # a bug or resource problem on one file: record it, go on
        return FileOutcome(path, error_kind="internal", error=f"{type(err).__name__}: {err}")


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


def _now() -> datetime:
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


class _Run:
    """Writes the outcome of each file as it arrives."""

    def __init__(self, store: ResultsStore, stamp: ModelStamp | None, config: ScoreConfig,
                 manifest: dict[str, dict], summary: RunSummary, started: datetime):
        # stamp: the nightly run's model; None when writing spooled live calls, which
        # each bring their own
        self.store, self.stamp, self.config = store, stamp, config
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
                 "done_at": _now().isoformat(), **detail}
        self.store.put_manifest(entry)
        self.manifest[call.path] = entry
        self.touched.update(partition_of(part) for part in parts)
        if (old := self.moved_from.pop(call.path, None)) is not None:
            self.manifest[old] = {**self.manifest[old], "status": "moved", "parts": [],
                                  "moved_to": call.path}
            self.store.put_manifest(self.manifest[old])

    def failed(self, call: CallFile, kind: str, message: str, sha256: str | None = None):
        """An error row; the call's previous rows go, unless the failure says nothing about
        the recording (a time-out, a crash, a permission) and it is the one scored before."""
        self._error_row(call.path, kind, message)
        self.summary.files_failed += 1
        previous = self._previous(call)
        if kind in TRANSIENT_FAILURES and previous.get("status") == "scored" \
                and previous["size"] == call.size \
                and (previous["sha256"] == sha256 if sha256
                     else previous["mtime_ns"] == call.mtime_ns):
            return  # its rows and manifest entry stand; a re-score can try again
        self._replace_parts(call, keep=[])
        self._finish(call, sha256, "failed", [], {"error_kind": kind})

    def _error_row(self, path: str, kind: str, message: str) -> None:
        self.errors.append({"file": path, "error_kind": kind, "message": message,
                            "occurred_at": _now(), "run_id": self.summary.run_id})
        errors = pa.Table.from_pylist(self.errors, schema=ERRORS_SCHEMA)
        self.store.write_table(part_path("errors", self.started.date().isoformat(),
                                         self.summary.run_id), errors)

    def rejected(self, item: Rejected) -> None:
        """A path that is no recording, or a sidecar fault: an error row, no manifest entry
        (looked at again next run, in case it has become a file or the sidecar was fixed).
        A sidecar fault is no failed file: its calls score with default metadata."""
        self._error_row(item.path, item.kind, item.message)
        if item.kind == "metadata":
            self.summary.metadata_problems += 1
        else:
            self.summary.files_failed += 1

    def scored(self, call: CallFile, outcome: FileOutcome,
               stamp: ModelStamp | None = None) -> None:
        stamp = stamp or self.stamp
        previous = self._previous(call)
        if previous.get("status") == "scored" and previous["sha256"] == outcome.sha256 \
                and not self.config.rescore:
            call = dated_as_scored(call, previous)  # the same recording, copied or moved
        labels, meta = stamp.labels, call.meta
        roles = roles_for(outcome.channels, meta.customer_channel)
        customer_channel = meta.customer_channel if "customer" in roles else None
        if meta.customer_channel is not None and customer_channel is None:
            self.rejected(Rejected(call.path, "metadata", (
                f"customer_channel {meta.customer_channel}, but the recording has "
                f"{outcome.channels} channel{'s' * (outcome.channels != 1)}: its channels "
                "are scored without agent and customer roles")))
        order = sorted(range(len(outcome.windows)),
                       key=lambda i: (outcome.windows[i][1], outcome.windows[i][0]))
        windows = [outcome.windows[i] for i in order]
        probs = outcome.probs[order]
        scored_at = _now()
        tail = {"model_name": stamp.name, "model_version": stamp.version,
                "scored_at": scored_at}
        n = len(windows)
        segments = {
            "call_id": [meta.call_id] * n, "source_file": [call.path] * n,
            "channel": [c for c, _, _ in windows], "role": [roles[c] for c, _, _ in windows],
            "start_s": [s for _, s, _ in windows], "end_s": [e for _, _, e in windows],
            "emotion": [labels[i] for i in probs.argmax(axis=1)],
            "confidence": probs.max(axis=1),
            **{f"p_{label}": probs[:, i] for i, label in enumerate(labels)},
            **{k: [v] * n for k, v in tail.items()},
        }
        summary = summarize_call(
            labels, stamp.valence, outcome.duration_s,
            [(roles[c], s, e) for c, s, e in outcome.speech],
            [(roles[c], s, e) for c, s, e in windows], probs, self.config.escalation)
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
                     {"model_version": stamp.version})
        self.summary.calls_scored += 1
        self.summary.segments += n
        self.summary.audio_s += outcome.duration_s

    def record_run(self, wall_s: float, status: str) -> None:
        s = self.summary
        row = {"run_id": s.run_id, "started_at": self.started, "finished_at": _now(),
               "files_scored": s.calls_scored, "files_failed": s.files_failed,
               "audio_hours": s.audio_s / 3600, "segments": s.segments, "wall_s": wall_s,
               "model_name": self.stamp.name, "model_version": self.stamp.version,
               "status": status}
        self.store.write_table(part_path("runs", self.started.date().isoformat(), s.run_id),
                               pa.Table.from_pylist([row], schema=RUNS_SCHEMA))


def _to_score(files: list[CallFile], manifest: dict[str, dict], live: dict[str, dict],
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


def _claim_call_ids(todo: list[CallFile], manifest: dict[str, dict],
                    run: _Run) -> list[CallFile]:
    """Drop (as errors) files whose call id already belongs to another existing file."""
    owners = {e["meta"]["call_id"]: path for path, e in manifest.items()
              if e["status"] in ("scored", "writing")}
    kept = []
    for call in todo:
        owner = owners.get(call.meta.call_id)
        if owner not in (None, call.path):
            if Path(owner).exists():
                run.failed(call, "duplicate_call_id",
                           f"call id {call.meta.call_id!r} is already used by {owner}")
                continue
            run.moved_from[call.path] = owner  # its rows are replaced when this one scores
        owners[call.meta.call_id] = call.path
        kept.append(call)
    return kept


def _outcomes(todo: list[CallFile], model_dir: str, config: ScoreConfig):
    """FileOutcomes in the order they finish."""
    task = joblib.delayed(score_file)
    jobs = (task(call.path, model_dir, config.vad, config.overlap, config.max_hours * 3600,
                 config.batch_size, config.precision, config.file_minutes * 60)
            for call in todo)
    if config.backend == "dask":
        from dask.distributed import Client

        try:
            client = Client(config.scheduler, timeout="10s")
        except OSError as err:
            raise ResultsError(f"cannot reach the Dask scheduler at {config.scheduler} "
                               f"({err})") from None
        with client, joblib.parallel_config(backend="dask"):
            yield from joblib.Parallel(n_jobs=-1, return_as="generator_unordered")(jobs)
        return
    with workers_die_with_this_process():
        yield from joblib.Parallel(n_jobs=config.workers,
                                   return_as="generator_unordered")(jobs)


def shift_priors(outcomes: list[FileOutcome], labels: list[str]) -> dict[str, float]:
    """Adapt every outcome's probabilities to the class priors EM estimates over all of
    them; the model's training priors are uniform (class-balanced sampling)."""
    stacked = np.concatenate([o.probs for o in outcomes])
    adapted, priors = adapt_priors(stacked, np.full(len(labels), 1.0 / len(labels)))
    start = 0
    for outcome in outcomes:
        outcome.probs = adapted[start:start + len(outcome.probs)].astype(np.float32)
        start += len(outcome.probs)
    return dict(zip(labels, map(float, priors), strict=True))


def _audio_seconds(path: str) -> float:
    try:
        return probe(path).duration_s
    except AudioError:
        return 0.0


def check_labels(store: ResultsStore, stamp: ModelStamp) -> bool:
    """Refuse a results folder that holds another label set; False if it holds none yet."""
    known = store.read_json(LABELS)
    if known and known["labels"] != stamp.labels:
        raise ResultsError(f"{store.url} holds scores for the labels {known['labels']}, but "
                           f"the model {stamp.name} {stamp.version} has {stamp.labels}; use "
                           "another results folder")
    return bool(known)


def claim_labels(store: ResultsStore, stamp: ModelStamp) -> None:
    """check_labels, then record this model's labels as the folder's."""
    check_labels(store, stamp)
    store.write_json(LABELS, {"labels": stamp.labels, "valence": stamp.valence,
                              "model_name": stamp.name, "model_version": stamp.version})


LIVE = "live:"  # manifest key prefix of a call scored live (it has no file yet)
LIVE_WRITE_S = 10.0  # a nightly run waits this long for a live server writing its calls
LIVE_CHUNK = 50  # spooled calls a live server writes per hold of the lock (about a second)


def write_live_call(out: str, model: LoadedModel, meta: CallMeta, outcome: FileOutcome,
                    config: ScoreConfig) -> bool:
    """Write a call scored live (live/stream.py) with the nightly job's writer and schema;
    its recording, when it arrives with the same call id, is not scored again.

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
        "probs": outcome.probs.tolist()})
    return flush_live_spool(out, config, chunks=1)  # a backlog is the retry's work


def flush_live_spool(out: str, config: ScoreConfig, wait_s: float = 0.0,
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
                write_spooled_calls(store, config, limit=LIVE_CHUNK)
        except ResultsBusy:
            return False
        done += 1
    return True


def _spooled_call(value: dict) -> tuple[ModelStamp, CallFile, FileOutcome]:
    meta = CallMeta.from_json(value["meta"])
    path = LIVE + meta.call_id
    return ModelStamp(**value["model"]), CallFile(path, 0, 0, meta), FileOutcome(
        path, duration_s=float(value["duration_s"]), channels=int(value["channels"]),
        speech=[tuple(s) for s in value["speech"]],
        windows=[tuple(w) for w in value["windows"]],
        probs=np.asarray(value["probs"], np.float32).reshape(len(value["windows"]), -1))


def write_spooled_calls(store: ResultsStore, config: ScoreConfig,
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
    started = _now()
    run = _Run(store, None, config, {} if manifest is None else manifest,
               RunSummary(f"live-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"), started)
    recorded = {e["meta"]["call_id"] for path, e in run.manifest.items()
                if not path.startswith(LIVE) and e["status"] == "scored"}
    for relative in names:
        try:
            stamp, call, outcome = _spooled_call(store.read_json(relative))
            if not check_labels(store, stamp):  # only live calls so far
                claim_labels(store, stamp)
        except (ValueError, KeyError, TypeError, ResultsError) as err:
            aside = store.set_aside(relative)
            run.rejected(Rejected(aside, "spool", f"spooled live call not written ({err}); "
                                                  "set aside"))
            continue
        if call.meta.call_id in recorded:
            run.rejected(Rejected(call.path, "superseded", "scored live after its "
                                  "recording had been scored; the recording's rows stand"))
        else:
            if manifest is None and (entry := store.manifest_entry(call.path)):
                run.manifest[call.path] = entry  # its rows from an earlier stream go
            run.scored(call, outcome, stamp)
        store.delete(relative)
    return run.touched


def _scored_live(manifest: dict[str, dict]) -> dict[str, dict]:
    """Manifest entries of live calls, by call id."""
    return {e["meta"]["call_id"]: e for path, e in manifest.items()
            if path.startswith(LIVE) and e["status"] == "scored"}


def score_calls(inputs: list[str], out: str, model_dir: str, config: ScoreConfig,
                progress: bool = True) -> RunSummary:
    """Score what is new or changed under `inputs` into the results folder `out`.

    progress: show progress (a bar on a terminal, a line every 30 s in a log).
    """
    clock = time.perf_counter()
    started = _now()
    model_dir = str(Path(model_dir).resolve())
    model = cached_model(model_dir)
    stamp = ModelStamp.of(model)
    files, rejected, hidden = scan(inputs, config.include, config.exclude, config.metadata,
                                   source_zone(config.source_timezone), config.follow_links)
    summary = RunSummary(f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
                         len(files) + len(rejected), hidden_skipped=hidden)
    store = ResultsStore(out)
    with store.lock(LIVE_WRITE_S):
        store.remove_leftovers()
        claim_labels(store, stamp)
        store.write_json(CONFIG, asdict(config))
        store.add_input_roots([str(input_root(item)) for item in inputs])
        manifest = store.manifest()
        store.finish_compaction(manifest)
        write_spooled_calls(store, config, manifest)
        live = _scored_live(manifest)
        todo = _to_score(files, manifest, live, store, config.rescore)
        summary.files_unchanged = len(files) - len(todo)  # incl. recordings scored live
        run = _Run(store, stamp, config, manifest, summary, started)
        run.record_run(0.0, "running")  # stays so if the run is killed
        status = "failed: interrupted"
        for item in rejected:
            run.rejected(item)
        try:
            todo = _claim_call_ids(todo, manifest, run)
            by_path = {call.path: call for call in todo}
            hours = {call.path: _audio_seconds(call.path) / 3600 for call in todo}
            bar = progress_bar(total=sum(hours.values()), unit="h",
                               disable=not progress, desc="scoring",
                               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f}"
                                          " h of audio [{elapsed}<{remaining}{postfix}]")
            held: list[FileOutcome] = []  # scored files, with prior_shift="em"
            with bar:
                for done, outcome in enumerate(_outcomes(todo, model_dir, config), 1):
                    call = by_path[outcome.path]
                    if outcome.error_kind:
                        run.failed(call, outcome.error_kind, outcome.error, outcome.sha256)
                    elif config.prior_shift == "em":
                        held.append(outcome)
                    else:
                        run.scored(call, outcome)
                    bar.set_postfix_str(f"files {done}/{len(todo)}", refresh=False)
                    bar.update(hours[call.path])
            if held:
                summary.priors = shift_priors(held, model.labels)
                for outcome in held:
                    run.scored(by_path[outcome.path], outcome)
            # merged too: the days of calls whose files no run merged yet (scored live, or
            # by a run killed before its compaction), and of live calls that ended during
            # the run (spooled: the run held the folder)
            loose = {partition_of(part) for entry in run.manifest.values()
                     for part in entry.get("parts", []) if not is_compacted(part)}
            loose |= write_spooled_calls(store, config, run.manifest)
            store.compact(run.touched | loose, run.manifest)
            status = "finished"
        except Exception as err:
            status = f"failed: {type(err).__name__}: {err}"
            raise
        finally:
            summary.wall_s = time.perf_counter() - clock
            run.record_run(summary.wall_s, status)
    return summary
