"""Finding calls: audio files under the inputs, their metadata, and what is new since last run.

Metadata comes from CSV sidecars (a ``calls.csv`` in a scanned folder, or files given
with ``--metadata``) with the columns ``file`` (relative to the CSV) and any of
``call_id, agent_id, queue, started_at, customer_channel``. Without a sidecar row a call
is named by its path below the input folder, anchored at the last date in the input
folder's own path (see ``call_path``): ``in/2026-11-20/0001.wav`` is the call
``2026-11-20/0001`` whether ``in`` or ``in/2026-11-20`` was scanned, and two nights'
``0001.wav`` are two calls. The extension is left out of the id unless another file
differs only by it (``x.wav`` and ``x.mp3`` are the calls ``x.wav`` and ``x.mp3``). The
start time is a date written in that path (``2026-11-20``, ``20261120_143000``,
``2026/11/20/``), or else the file's mtime. Times written without an offset (in paths,
and sidecar times such as ``2026-11-20 09:30``) are read in the recorders' zone
(``source_zone``, UTC unless the run says otherwise) and stored in UTC.

An input may be an object store's URL (``s3://bucket/calls/2026-11-20``): its objects
are listed once (size, ETag, modification time: the object store's stat), ``calls.csv``
objects are its sidecars, and the same rules name and date its calls (``Objects``).

What is new or changed since the last run is the ledger's business (batch/ledger.py).
"""

from __future__ import annotations

import csv
import fnmatch
import functools
import io
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path, PurePosixPath

from callmood.results.location import explain, is_url, open_location, url_of
from callmood.results.location import shown as shown_url
from callmood.results.meta import YEARS, CallMeta, parse_time
from callmood.results.writer import CallFile, Rejected

AUDIO_PATTERNS = ("*.wav", "*.flac", "*.ogg", "*.oga", "*.opus", "*.mp3")


SIDECAR = "calls.csv"


METADATA_COLUMNS = ("call_id", "agent_id", "queue", "started_at", "customer_channel")


_DATE_IN_PATH = re.compile(
    r"(?<!\d)(20\d\d)[-_/]?(0[1-9]|1[0-2])[-_/]?(0[1-9]|[12]\d|3[01])"
    r"(?:[T_-]?([01]\d|2[0-3])[-:]?([0-5]\d)[-:]?([0-5]\d))?(?!\d)")


class ScanError(ValueError):
    """Inputs or metadata that cannot be used; the message says which and why."""


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    """Patterns with a '/' match the path below the input; others the file name."""
    relative = relative.lower()
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative if "/" in p else name, p.lower())
               for p in patterns)


def input_root(item: str) -> Path:
    """The folder an input names: itself, or a file's folder (links resolved)."""
    path = Path(item).resolve()
    return path.parent if path.is_file() else path


def shown(path: str | Path) -> str:
    """A path as text that any table or terminal takes: bytes of a file name that are not
    UTF-8 (Linux names are bytes) are written as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _inside(path: str | Path, roots: list[Path]) -> bool:
    return any(Path(path).is_relative_to(root) for root in roots)


class Files:
    """What the scan reads of the local file system (stat, sidecar bytes)."""

    def is_file(self, path: PurePosixPath) -> bool:
        return Path(path).is_file()

    def stat(self, path: PurePosixPath) -> tuple[int, int, str | None]:
        """(size, mtime in ns, ETag: None for a local file)."""
        result = Path(path).stat()
        return result.st_size, result.st_mtime_ns, None

    def read_bytes(self, path: PurePosixPath) -> bytes:
        return Path(path).read_bytes()

    def url(self, path: PurePosixPath) -> str:
        return shown(path)


class Objects(Files):
    """The objects under an object store's URL, listed once: their sizes, ETags and
    modification times are what a stat gives of a local file. Paths are the store's
    (`bucket/key`), as PurePosixPath, so the local rules (call ids, dates in paths,
    sidecars by folder) apply unchanged."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.fs, root = open_location(url, storage_options)
        try:
            listed = self.fs.find(root, detail=True)
        except Exception as err:
            raise ScanError(str(explain(url, err))) from None
        if not listed:
            raise ScanError(f"{shown_url(url)}: no such object or prefix (nothing is "
                            "stored under it)")
        self.infos = {PurePosixPath(p): info for p, info in listed.items()
                      if info.get("type") != "directory"}
        self.single = PurePosixPath(root) in self.infos  # the URL names one object
        self.root = PurePosixPath(root).parent if self.single else PurePosixPath(root)

    def is_file(self, path: PurePosixPath) -> bool:
        return path in self.infos

    def stat(self, path: PurePosixPath) -> tuple[int, int, str | None]:
        info = self.infos[path]
        modified = info.get("LastModified") or info.get("mtime")
        mtime_ns = int(modified.timestamp() * 1e9) if isinstance(modified, datetime) \
            else int(float(modified or 0) * 1e9)
        return int(info["size"]), mtime_ns, info.get("ETag")

    def read_bytes(self, path: PurePosixPath) -> bytes:
        return self.fs.cat_file(str(path))

    def url(self, path: PurePosixPath) -> str:
        return url_of(self.fs, str(path))


LOCAL = Files()


@dataclass
class Found:
    """What walking the inputs found: the recordings (each with the input folder it was
    found under), the paths that cannot be scored, and the hidden recordings skipped."""

    roots: list[Path]  # the input folders: those given, and those of files given
    files: dict[Path, Path] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    hidden: int = 0


def find_audio(inputs: list[str], include: tuple[str, ...] = AUDIO_PATTERNS,
               exclude: tuple[str, ...] = (), follow_links: bool = False) -> Found:
    """Every audio file under the inputs, sorted, no repeats, found by these rules:

    - a name starting with '.' (file or folder) is hidden, e.g. an upload in progress: its
      recordings are counted, not scored;
    - a link whose target lies under an input folder is scored where it is (a file) or
      left to the walk that reaches its target (a folder; one under the folder of a file
      given as an input, which is not walked, is walked through the link);
    - a link whose target lies elsewhere is refused as an error row (`outside_link`), unless
      `follow_links`: then a file link is scored and a folder link walked (each real
      folder once, so a link loop ends);
    - a name that is not UTF-8 is refused (`bad_name`): results hold text;
    - a folder that cannot be listed is an error row (`unreadable_folder`), not a silent gap.
    """
    found = Found(roots=[input_root(item) for item in inputs])
    roots = found.roots
    walked_roots = [Path(item).resolve() for item in inputs if Path(item).resolve().is_dir()]

    def matches(relative: str) -> bool:
        return _matches(relative, include) and not _matches(relative, exclude)

    def reject(path: Path, kind: str, message: str) -> None:
        found.rejected.append(Rejected(shown(path), kind, message))

    for item in inputs:
        root = Path(item).resolve()
        if root.is_file():
            found.files.setdefault(root, input_root(item))
            continue
        if not root.is_dir():
            raise ScanError(f"{shown(item)}: no such file or folder")
        walked = {root}
        folders = [root]
        while folders:
            folder = folders.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
            except OSError as err:
                reject(folder, "unreadable_folder",
                       f"folder cannot be listed ({err.strerror or err}); its recordings "
                       "are not scored: check its owner and mode")
                continue
            for entry in entries:
                path = Path(entry.path)
                relative = path.relative_to(root).as_posix()
                try:
                    is_folder = entry.is_dir()  # links followed
                except OSError:  # a link loop: regular_file says so
                    is_folder = False
                if entry.name.startswith("."):
                    found.hidden += _count_matches(path, root, matches) if is_folder \
                        else matches(relative)
                    continue
                if not is_folder and not matches(relative):
                    continue
                if entry.is_symlink():
                    target = os.path.realpath(path)
                    if not _inside(target, roots) and not follow_links:
                        reject(path, "outside_link",
                               f"a link to {shown(target)}, outside the input folders; not "
                               "followed (give the target as an input, or --follow-links)")
                        continue
                    if is_folder and _inside(target, walked_roots):
                        continue  # its files are found where they are
                if is_folder:
                    if (real := Path(os.path.realpath(path))) not in walked:
                        walked.add(real)
                        folders.append(path)
                elif shown(path) != str(path):
                    reject(path, "bad_name", "the file name is not UTF-8 text; rename the "
                                             "file to score it")
                else:
                    found.files.setdefault(path, root)
    found.files = dict(sorted(found.files.items()))
    return found


def _count_matches(folder: Path, root: Path, matches) -> int:
    """Matching files below a hidden folder (links not followed)."""
    return sum(matches((Path(dirpath) / name).relative_to(root).as_posix())
               for dirpath, _, names in os.walk(folder) for name in names)


MAX_VALUE = 1000  # characters of a metadata value; a longer one is a mistake, not an id


MAX_SIDECAR_BYTES = 256 << 20


def read_sidecar(csv_path: Path, roots: list[Path], zone: tzinfo = timezone.utc,
                 files: Files = LOCAL) -> tuple[dict[Path, dict], list[Rejected]]:
    """Rows of a metadata CSV keyed by the absolute path of their audio file, which must
    lie under one of the input folders `roots`, and its problems; times without an offset
    are read in `zone`. A bad value costs only that field (the call falls back to the path
    and the file's time), a bad row only that row, an unreadable sidecar only its metadata:
    the calls are scored either way, and each problem names the sidecar, the line and the
    field.
    """
    problems: list[Rejected] = []

    def problem(line: int | None, message: str) -> None:
        where = f"line {line}: " if line else ""
        problems.append(Rejected(files.url(csv_path), "metadata", f"{where}{message}"))

    try:
        if files.stat(csv_path)[0] > MAX_SIDECAR_BYTES:
            problem(None, f"larger than {MAX_SIDECAR_BYTES >> 20} MB; its metadata is ignored")
            return {}, problems
        text = files.read_bytes(csv_path).decode("utf-8-sig")  # a byte-order mark is no column
    except UnicodeDecodeError as err:
        problem(None, f"not UTF-8 text ({err.reason} at byte {err.start}); its metadata is "
                      "ignored, the calls score with defaults from their paths and file times")
        return {}, problems
    except OSError as err:
        problem(None, f"cannot be read ({err.strerror or err})")
        return {}, problems
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = reader.fieldnames
    except csv.Error as err:
        columns, reason = None, f" ({err})"
    else:
        reason = ""
    if not columns or "file" not in columns:
        problem(1, f"a metadata CSV needs a 'file' column{reason}; its metadata is ignored")
        return {}, problems
    rows: dict[Path, dict] = {}
    rows_iter = iter(reader)
    line = 1  # the last line read
    while True:
        after = line
        try:
            row = next(rows_iter)
        except StopIteration:
            break
        except csv.Error as err:  # a field over the csv module's limit (128 KiB)
            line = after + 1
            problem(line, f"unreadable row ({err}); it is ignored")
            continue
        line = first = reader.line_num  # a row is one line (blank lines are skipped)
        if None in row or any("\n" in (v or "") for v in row.values() if isinstance(v, str)):
            problem(after + 1, "malformed row (an unterminated quote or extra fields); "
                               f"lines {after + 1}-{line} are ignored")
            continue
        name = (row.get("file") or "").strip()
        path, error = _sidecar_file(csv_path, name, roots, files)
        if error or path in rows:
            error = error or f"{_short(name)!r} is already described on line " \
                             f"{rows[path]['line']}"  # the first description stands
            problem(first, f"field file: {error}; the row is ignored")
            continue
        values = {k: (row.get(k) or "").strip() or None for k in METADATA_COLUMNS}
        for column, check in (("started_at", functools.partial(_check_time, zone=zone)),
                              ("customer_channel", _check_channel),
                              *((k, _check_text) for k in ("call_id", "agent_id", "queue"))):
            if values[column] is not None:
                values[column], error = check(values[column])
                if error:
                    problem(first, f"field {column}: {error}; the call uses its default")
        rows[path] = {**values, "line": first}
    return rows, problems


def _sidecar_file(csv_path: Path, name: str, roots: list[Path],
                  files: Files) -> tuple[Path | None, str]:
    """The recording a sidecar row names (relative to the CSV), or why it names none. A
    name outside the input folders is refused whether or not it exists, so a sidecar
    cannot probe the file system."""
    if not name:
        return None, "empty"
    if "\0" in name or len(name) > 4096:
        return None, f"{_short(name)!r} is no file name (a NUL byte, or over 4096 characters)"
    path = type(csv_path)(os.path.normpath(csv_path.parent / name))
    if not _inside(path, roots):
        return None, f"{_short(name)!r} lies outside the input folders"
    try:
        if files.is_file(path):
            return path, ""
    except OSError:  # a name too long for the file system, a loop of links
        pass
    return None, f"{_short(name)!r} names no recording here"


def _short(text: str) -> str:
    return text if len(text) <= 80 else f"{text[:77]}..."


def _check_text(text: str) -> tuple[str | None, str | None]:
    if len(text) > MAX_VALUE:
        return None, f"{_short(text)!r} is longer than {MAX_VALUE} characters"
    return text, None


def _check_time(text: str, zone: tzinfo) -> tuple[datetime | None, str | None]:
    try:
        return parse_time(text, zone), None
    except ValueError as err:
        return None, str(err)


def _check_channel(text: str) -> tuple[int | None, str | None]:
    # ASCII digits only: int() also reads other scripts' digits ('١' is 1)
    if not (text.isascii() and text.isdigit()) or int(text) >= 256:
        return None, f"{_short(text)!r} is not a channel number (0-255)"
    return int(text), None


def _time_from_path(relative: str, zone: tzinfo) -> datetime | None:
    match = _DATE_IN_PATH.search(relative)
    if not match:
        return None
    parts = [int(g) if g else 0 for g in match.groups()]
    try:
        return datetime(*parts, tzinfo=zone).astimezone(timezone.utc)
    except ValueError:
        return None


def call_path(path: Path, root: Path) -> str:
    """The path that names a call found under the input folder `root`: relative to it, and
    if that holds no date, prefixed with the input folder's path from its last date on
    (`/data/in/2026-11-20` + `0001.wav` -> `2026-11-20/0001.wav`), so that a night's
    folder names its calls the same whether it or its parent was scanned."""
    relative = path.relative_to(root).as_posix()
    if _DATE_IN_PATH.search(relative):
        return relative
    dates = list(_DATE_IN_PATH.finditer(root.as_posix()))
    return f"{root.as_posix()[dates[-1].start():]}/{relative}" if dates else relative


def describe(path: Path, name: str, sidecar: dict | None,
             zone: tzinfo = timezone.utc, files: Files = LOCAL) -> CallFile:
    """The call's metadata: sidecar values first, then defaults from its `name` (its
    call_path, extension kept only where needed to tell files apart, a time in it read in
    `zone`) and mtime. Raises ValueError for a call dated by an mtime outside YEARS (a
    broken clock, or `touch -d`), OSError for a file gone since the scan listed it."""
    size, mtime_ns, etag = files.stat(path)
    sidecar = sidecar or {}
    started_at = sidecar.get("started_at") or _time_from_path(name, zone)
    dated_by_mtime = started_at is None
    if dated_by_mtime:
        started_at = _file_time(mtime_ns / 1e9)
    meta = CallMeta(sidecar.get("call_id") or name, sidecar.get("agent_id"),
                    sidecar.get("queue"), started_at, sidecar.get("customer_channel"))
    return CallFile(files.url(path), size, mtime_ns, meta, dated_by_mtime=dated_by_mtime,
                    etag=etag)


def _file_time(mtime: float) -> datetime:
    try:
        value = datetime.fromtimestamp(mtime, timezone.utc)
    except (OverflowError, ValueError, OSError):
        value = None
    if value is None or not YEARS[0] <= value.year <= YEARS[1]:
        raise ValueError(f"dated only by its modification time, which lies outside "
                         f"{YEARS[0]}-{YEARS[1]}: give it a started_at in calls.csv or fix "
                         "the file's time")
    return value


def call_names(files: list[tuple[Path, Path]]) -> dict[Path, str]:
    """Each file's default call id: its call_path without the extension, unless another
    file of the scan differs from it only by the extension."""
    paths = {path: call_path(path, root) for path, root in files}
    stems = Counter(p.rsplit(".", 1)[0] for p in paths.values())
    return {path: p if stems[p.rsplit(".", 1)[0]] > 1 else p.rsplit(".", 1)[0]
            for path, p in paths.items()}


def regular_file(path: Path) -> Rejected | None:
    """Why `path` (links followed) is not a regular file, without opening it: a FIFO would
    block the first read for ever, a device such as /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return Rejected(str(path), "broken_link",
                        f"cannot be followed ({err.strerror or err}): a dangling or looping "
                        "link, or a file removed during the scan")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        return Rejected(str(path), "not_a_file", f"is {kind}, not a recording; not opened")
    return None


def scan(inputs: list[str], include: tuple[str, ...] = AUDIO_PATTERNS,
         exclude: tuple[str, ...] = (), metadata: tuple[str, ...] = (),
         zone: tzinfo = timezone.utc, follow_links: bool = False,
         storage_options: dict | None = None,
         ) -> tuple[list[CallFile], list[Rejected], int]:
    """Every audio file under the inputs (see find_audio for which; an input may be an
    object store's URL, see Objects), with its metadata (times without an offset read in
    `zone`); the matching paths that cannot be scored and the sidecar problems; and how
    many hidden recordings were skipped."""
    local = [item for item in inputs if not is_url(item)]
    if metadata and (len(local) < len(inputs) or any(is_url(m) for m in metadata)):
        raise ScanError("--metadata works with local folders only; in a bucket, put a "
                        "calls.csv beside the recordings it describes")
    found = find_audio(local, include, exclude, follow_links) if local else Found([])
    rejected = found.rejected
    rejected += [r for r in (regular_file(path) for path in found.files) if r is not None]
    bad = {r.path for r in rejected}
    files = [(path, root) for path, root in found.files.items() if str(path) not in bad]
    calls, problems = _described(files, found.roots, [Path(m).resolve() for m in metadata],
                                 zone, LOCAL)
    hidden = found.hidden
    for url in (item for item in inputs if is_url(item)):
        objects = Objects(url, storage_options)
        listed, count = _matching_objects(objects, include, exclude)
        more, more_problems = _described(listed, [objects.root], [], zone, objects)
        calls, problems, hidden = calls + more, problems + more_problems, hidden + count
    return calls, rejected + problems, hidden


def _matching_objects(objects: Objects, include: tuple[str, ...], exclude: tuple[str, ...],
                      ) -> tuple[list[tuple[PurePosixPath, PurePosixPath]], int]:
    """The objects find_audio would score, as (path, root), and how many are hidden (a
    name in their path starting with '.')."""
    files, hidden = [], 0
    for path in sorted(objects.infos):
        relative = path.relative_to(objects.root).as_posix()
        if not (objects.single or _matches(relative, include)) or _matches(relative, exclude):
            continue
        if any(part.startswith(".") for part in relative.split("/")):
            hidden += 1
        else:
            files.append((path, objects.root))
    return files, hidden


def _described(files: list[tuple[Path, Path]], roots: list[Path], metadata: list[Path],
               zone: tzinfo, store: Files) -> tuple[list[CallFile], list[Rejected]]:
    """The calls of `files`, found under `roots` in `store`: their sidecars read (those
    beside them, then `metadata`), each described; and the problems met."""
    rejected: list[Rejected] = []
    sidecars: dict[Path, dict] = {}
    csvs = {folder / SIDECAR for path, root in files
            for folder in [path.parent, *path.parent.parents]
            if folder.is_relative_to(root) and store.is_file(folder / SIDECAR)}
    for csv_path in sorted(csvs) + metadata:
        if not store.is_file(csv_path):
            raise ScanError(f"{shown(csv_path)}: metadata file not found")
        rows, problems = read_sidecar(csv_path, roots, zone, store)
        rejected += problems
        for path, row in rows.items():
            if path in sidecars:  # the first description of a file stands
                first = sidecars[path]
                rejected.append(Rejected(store.url(csv_path), "metadata", (
                    f"line {row['line']}: field file: {shown(path)} is already described "
                    f"on line {first['line']} of {shown(first['sidecar'])}; the row is "
                    "ignored")))
            else:
                sidecars[path] = {**row, "sidecar": csv_path}
    names = call_names(files)
    calls = []
    for path, _ in files:
        try:
            calls.append(describe(path, names[path], sidecars.get(path), zone, store))
        except OSError as err:  # removed (e.g. by a retention job) since it was listed
            rejected.append(Rejected(str(path), "missing", f"removed during the scan "
                                                           f"({err.strerror or err})"))
        except ValueError as err:
            rejected.append(Rejected(store.url(path), "bad_time", str(err)))
    return calls, rejected
