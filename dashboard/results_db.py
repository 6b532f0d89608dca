"""DuckDB over a results folder: views, emotion labels, and the read-only guard.

``connect(results)`` opens an in-memory DuckDB with the views ``segments``, ``calls``,
``errors`` and ``runs`` over the hive-partitioned Parquet files present when it connects
(see ``callmood.results.schema``; while a compaction runs, its merged members are left
out), a table ``emotion_labels`` (label, position, valence, negative) and the filter
macros of ``macros.sql`` that every canned query uses.
A table with no Parquet files yet becomes an empty view with the contract's columns,
so every query also works on an empty folder.

The folder may be in an object store (``s3://bucket/results``): it is listed through
fsspec, and DuckDB reads a local copy of its objects that each ``connect`` brings up to
date (dashboard/results_cache.py; DuckDB's httpfs extension is not installable from the
package registry for the DuckDB in use, and reading through a registered fsspec file
system is 10-50 times slower: docs/scale.md has the measurements).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from callmood.dashboard.results_cache import cache_folder, sync, version
from callmood.results.location import LocationError, explain, open_location, shown, url_of
from callmood.results.schema import (
    ERRORS_SCHEMA,
    PARTITION_KEYS,
    RUNS_SCHEMA,
    calls_schema,
    segments_schema,
)
from callmood.results.store import (
    JOURNAL,
    LABELS_FILE,
    ResultsError,
    is_compacted,
    live_parts,
)
from callmood.valence import DEFAULT_VALENCE  # when the folder has no labels.json

TABLES = tuple(PARTITION_KEYS)
MACROS_SQL = Path(__file__).with_name("macros.sql")


class ReadOnlyError(Exception):
    """A statement would do something other than read."""


@dataclass(frozen=True)
class LabelInfo:
    labels: tuple[str, ...]
    valence: dict[str, float]

    def is_negative(self, label: str) -> bool:
        return self.valence.get(label, 0) < 0


@dataclass(frozen=True)
class Folder:
    """A results folder to read: a local one, or one in an object store."""

    fs: AbstractFileSystem
    root: str  # the folder's path in fs
    url: str  # as given (a local folder: its absolute path)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}"

    def source(self, path: str) -> str:
        """What DuckDB reads for a path in fs: a local path, or the object's URL."""
        return url_of(self.fs, path)

    def __str__(self) -> str:
        return self.url


def resolve_results(results: str | os.PathLike | Folder,
                    storage_options: dict | None = None) -> Folder:
    if isinstance(results, Folder):
        return results
    try:
        fs, root = open_location(str(results), storage_options)
    except LocationError as err:
        raise ResultsError(str(err)) from None
    if isinstance(fs, LocalFileSystem):
        path = Path(results).expanduser()
        if not path.exists():
            raise ResultsError(f"results folder {str(path)!r} does not exist")
        if not path.is_dir():
            raise ResultsError(f"results path {str(path)!r} is not a folder")
        return Folder(fs, str(path.resolve()), str(path.resolve()))
    try:
        listed = fs.find(root, maxdepth=1, withdirs=True)
    except Exception as err:
        raise ResultsError(f"cannot open the results: {explain(str(results), err)}") from None
    if not listed:
        raise ResultsError(f"results folder {shown(str(results))!r} does not exist (nothing "
                           "is stored under it)")
    return Folder(fs, root, str(results))


def _journal(folder: Folder) -> dict | None:
    try:
        return json.loads(folder.fs.cat_file(folder.path(JOURNAL)))
    except (OSError, ValueError):
        return None


def parquet_files(folder: Folder) -> dict[str, dict[str, dict]]:
    """Each table's finished Parquet files (path in the folder's file system: its listing
    entry), without those a compaction under way has already merged (the journal is read
    before and after listing, so a merge that starts meanwhile is seen too)."""
    before = _journal(folder)
    prefix = folder.root.rstrip("/") + "/"
    found = {t: folder.fs.glob(folder.path(f"{t}/*/*.parquet"), detail=True) for t in TABLES}
    journals = [before, _journal(folder)]
    return {t: {folder.path(p): found[t][folder.path(p)]
                for p in live_parts(sorted(p[len(prefix):] for p in found[t]), journals)}
            for t in TABLES}


def local_copy(folder: Folder) -> Folder:
    """A folder in an object store as its local copy, brought up to date (what DuckDB
    reads; dashboard/results_cache.py), named by its URL in messages."""
    prefix = folder.root.rstrip("/") + "/"
    try:
        wanted = {path[len(prefix):]: version(info)
                  for files in parquet_files(folder).values() for path, info in files.items()}
        with contextlib.suppress(FileNotFoundError):
            wanted[LABELS_FILE] = version(folder.fs.info(folder.path(LABELS_FILE)))
    except OSError as err:
        raise explain(folder.url, err) from None
    try:
        copy = sync(folder.fs, folder.root, folder.url, wanted)
    except OSError as err:  # the local side; the store's errors are LocationErrors
        raise ResultsError(f"cannot keep the local copy of {shown(folder.url)} in "
                           f"{cache_folder(folder.url)}: {err}") from None
    return Folder(LocalFileSystem(), str(copy), folder.url)


def read_label_file(folder: Folder) -> dict | None:
    path = folder.path(LABELS_FILE)
    try:
        data = json.loads(folder.fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"cannot read {folder.source(path)}: {exc}") from exc
    if not isinstance(data, dict):
        raise ResultsError(f"{folder.source(path)} must hold a JSON object with 'labels' "
                           "and 'valence'")
    return data


def label_info(root: Folder, columns: list[str]) -> LabelInfo:
    """Labels from the ``p_`` columns (model order), else from labels.json; valence from
    labels.json when present, else the default negative set."""
    labels = [c[2:] for c in columns if c.startswith("p_")]
    data = read_label_file(root) or {}
    if not labels:
        labels = [str(label) for label in data.get("labels", [])]
    if "valence" in data:
        valence = {str(k): float(v) for k, v in data["valence"].items()}
    else:
        valence = {label: float(v) for label, v in DEFAULT_VALENCE.items()}
    return LabelInfo(tuple(labels), valence)


def _stamp(info: dict) -> str:
    when = info.get("mtime") or info.get("LastModified") or info.get("ETag")
    return f"{info['name'].rsplit('/', 1)[-1]}:{when}:{info.get('size')}"


def _listed(folder: Folder, path: str) -> list[dict]:
    try:
        return sorted(folder.fs.ls(path, detail=True), key=lambda e: e["name"])
    except FileNotFoundError:
        return []


def fingerprint(results: str | os.PathLike | Folder, storage_options: dict | None = None
                ) -> str:
    """Changes whenever a file is added to or removed from the results (a nightly run, a
    compaction), so the dashboard opens a fresh connection over the files then present.

    Cheap enough to compute on every dashboard rerun: on a local folder it looks at folder
    times (a folder's mtime moves when a file in it is added, renamed or deleted), never
    lists segment files; an object store has no folder times, so there it lists each
    partition's objects (one or two a day once compacted).
    """
    folder = resolve_results(results, storage_options)
    parts = [_stamp(e) for e in _listed(folder, folder.root)
             if e["name"].rsplit("/", 1)[-1] in (LABELS_FILE, *TABLES)]
    for table in TABLES:
        for partition in _listed(folder, folder.path(table)):
            timeless = partition["type"] == "directory" and not partition.get("mtime")
            parts.append(_stamp(partition))
            if timeless or table in ("runs", "errors"):  # these rewritten in place
                parts += [_stamp(e) for e in _listed(folder, partition["name"])]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _null_columns(con: duckdb.DuckDBPyConnection, schema: pa.Schema,
                  skip: set[str] = frozenset()) -> list[str]:
    """`CAST(NULL AS type) AS "column"` for each contract column not in `skip`."""
    rel = con.from_arrow(schema.empty_table())
    return [f'CAST(NULL AS {t}) AS "{c}"'
            for c, t in zip(rel.columns, rel.types, strict=True) if c not in skip]


def _empty_view_sql(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema) -> str:
    """A view with the contract's columns and no rows."""
    return f"CREATE VIEW {name} AS SELECT {', '.join(_null_columns(con, schema))} WHERE false"


def _missing_columns(con: duckdb.DuckDBPyConnection, source: str, schema: pa.Schema) -> str:
    """`, NULL AS column` for each contract column a folder's files predate (columns are
    only ever added to the schema, so an old results folder still opens)."""
    present = set(con.sql(f"SELECT * FROM {source} LIMIT 0").columns)
    return "".join(f", {column}" for column in _null_columns(con, schema, present))


# A call's rows are a version (their scored_at), and its calls row commits it: the batch
# job writes a call's segments first, and a re-scored call's new rows sit beside its old
# ones until the night's compaction. A partition whose files a compaction merged into one
# holds only each call's newest committed version (batch.write.newest_rows); in any other
# (a run under way, or killed) readers take each call's newest committed version, whole,
# and nothing of a call not committed yet. (By day as well as call id, so that date
# filters still skip files; a call whose day changed is rewritten at once.)
COMMITTED = {
    "calls": "SELECT * FROM {files} QUALIFY row_number() OVER ("
             "PARTITION BY call_date, call_id ORDER BY scored_at DESC) = 1",
    "segments": "SELECT s.* FROM {files} AS s SEMI JOIN calls AS c "
                "ON s.call_id = c.call_id AND s.scored_at = c.scored_at",
}


def _read_sql(table: str, files: list[str]) -> str:
    listed = "[" + ", ".join(_sql_string(p) for p in files) + "]"
    return (f"read_parquet({listed}, hive_partitioning = true, union_by_name = true, "
            f"hive_types = {{'{PARTITION_KEYS[table]}': DATE}})")


def _table_sql(table: str, files: list[str]) -> str:
    """The query a table's view runs over its files (see COMMITTED)."""
    if table not in COMMITTED:
        return f"SELECT * FROM {_read_sql(table, files)}"
    by_partition: dict[str, list[str]] = {}
    for path in files:
        by_partition.setdefault(path.rsplit("/", 1)[0], []).append(path)
    merged, others = [], []
    for paths in by_partition.values():
        if len(paths) == 1 and is_compacted(paths[0]):
            merged += paths
        else:
            others += paths
    branches = ([f"SELECT * FROM {_read_sql(table, merged)}"] if merged else []) + \
        ([f"({COMMITTED[table].format(files=_read_sql(table, others))})"] if others else [])
    return " UNION ALL BY NAME ".join(branches)


def _create_views(con: duckdb.DuckDBPyConnection, root: Folder) -> LabelInfo:
    files = {t: [root.source(p) for p in found] for t, found in parquet_files(root).items()}
    sources = {t: f"({_table_sql(t, files[t])})" for t in TABLES if files[t]}
    # Labels decide the empty schemas, so look at segments (then calls) first.
    if files["segments"]:
        columns = con.sql(f"SELECT * FROM {_read_sql('segments', files['segments'])}").columns
    elif files["calls"]:
        columns = [
            "p_" + c.removeprefix("customer_share_")
            for c in con.sql(f"SELECT * FROM {_read_sql('calls', files['calls'])}").columns
            if c.startswith("customer_share_")
        ]
    else:
        columns = []
    info = label_info(root, columns)
    empty = {
        "segments": segments_schema(list(info.labels)),
        "calls": calls_schema(list(info.labels)),
        "errors": ERRORS_SCHEMA,
        "runs": RUNS_SCHEMA,
    }
    for table in sorted(TABLES, key=lambda t: t == "segments"):  # segments read calls
        if table in sources:
            added = _missing_columns(con, sources[table], empty[table])
            con.execute(f"CREATE VIEW {table} AS SELECT *{added} FROM {sources[table]}")
        else:
            schema = empty[table].append(pa.field(PARTITION_KEYS[table], pa.date32()))
            con.execute(_empty_view_sql(con, table, schema))
    _local_days(con)
    return info


def _local_days(con: duckdb.DuckDBPyConnection) -> None:
    """`call_date` becomes the call's day in the connection's time zone: a call at 20:00 in
    New York is on that day's bar, not the next (the files are partitioned by UTC day,
    kept as `utc_date`, which date filters also use, with a day's margin, to skip files).
    In UTC the two are the same, and the segments are spared the join with the calls."""
    con.execute("ALTER VIEW calls RENAME TO calls_by_utc_day")
    con.execute("ALTER VIEW segments RENAME TO segments_by_utc_day")
    if timezone_of(con) == "UTC":
        for table in ("calls", "segments"):
            con.execute(f"CREATE VIEW {table} AS SELECT *, call_date AS utc_date "
                        f"FROM {table}_by_utc_day")
        return
    con.execute("CREATE VIEW calls AS SELECT * REPLACE (CAST(started_at AS DATE) AS call_date), "
                "call_date AS utc_date FROM calls_by_utc_day")
    con.execute("CREATE VIEW segments AS SELECT s.* REPLACE (coalesce(c.call_date, s.call_date) "
                "AS call_date), s.call_date AS utc_date FROM segments_by_utc_day AS s "
                "LEFT JOIN (SELECT call_id, call_date FROM calls) AS c ON c.call_id = s.call_id")


def _create_label_table(con: duckdb.DuckDBPyConnection, info: LabelInfo) -> None:
    con.execute(
        "CREATE TABLE emotion_labels (label VARCHAR PRIMARY KEY, position INTEGER, "
        "valence DOUBLE, negative BOOLEAN)"
    )
    # Negative labels the model does not have still count if they show up in data.
    names = list(info.labels) + sorted(set(info.valence) - set(info.labels))
    rows = [
        (name, i if name in info.labels else None, info.valence.get(name, 0.0),
         info.is_negative(name))
        for i, name in enumerate(names)
    ]
    if rows:
        con.executemany("INSERT INTO emotion_labels VALUES (?, ?, ?, ?)", rows)


TIMEZONE_ENV = "CALLMOOD_TIMEZONE"


def resolve_timezone(timezone: str | None) -> str:
    """The zone times are shown in: `timezone`, else $CALLMOOD_TIMEZONE, else UTC."""
    return timezone or os.environ.get(TIMEZONE_ENV) or "UTC"


def set_timezone(con: duckdb.DuckDBPyConnection, timezone: str | None) -> str:
    """Times come out in `timezone` (an IANA name, see resolve_timezone): hour of day,
    start times and run times. The Parquet files hold UTC either way."""
    name = resolve_timezone(timezone)
    try:
        # GLOBAL: the cursors that the dashboard opens per thread must see it too
        con.execute(f"SET GLOBAL TimeZone = {_sql_string(name)}")
    except duckdb.Error as exc:
        raise ResultsError(f"unknown time zone {name!r}: give an IANA name such as "
                           "Europe/Berlin or America/New_York") from exc
    return name


@functools.cache
def _private_spill_folder() -> str:
    folder = tempfile.mkdtemp(prefix="callmood-duckdb-")  # mode 0700, removed at exit
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def connect(results: str | os.PathLike | Folder, read_only: bool = True,
            timezone: str | None = None, storage_options: dict | None = None,
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the results views, labels and macros.

    With ``read_only`` (the default) the connection can read only the results folder
    and its configuration is locked: no extension installs, no file access elsewhere,
    no SET. Statements are still checked with ``check_read_only`` before they run,
    since COPY ... TO inside the results folder would otherwise be allowed. A folder in
    an object store is read from its local copy (``local_copy``), brought up to date
    first; the connection can read only that copy.
    Use ``cursor()`` on the returned connection for each thread.
    """
    root = resolve_results(results, storage_options)
    if not root.local:
        try:
            root = local_copy(root)
        except LocationError as err:
            raise ResultsError(f"cannot read the results: {err}") from None
    con = duckdb.connect(":memory:")
    try:
        set_timezone(con, timezone)
        info = _create_views(con, root)
        _create_label_table(con, info)
        con.execute(MACROS_SQL.read_text())
        if read_only:
            # DuckDB may always read its spill folder (default: .tmp under the working
            # directory, which may hold anything); give it one of this process's own
            con.execute(f"SET temp_directory = {_sql_string(_private_spill_folder())}")
            allowed = root.source(root.root).rstrip("/") + "/"
            con.execute(f"SET allowed_directories = [{_sql_string(allowed)}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        raise ResultsError(f"cannot open the results in {shown(root.url)}: {exc}") from exc
    except ResultsError:
        con.close()
        raise
    return con


def timezone_of(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT current_setting('TimeZone')").fetchall()[0][0]


def labels(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The model's emotion labels, in model order."""
    rows = con.execute(
        "SELECT label FROM emotion_labels WHERE position IS NOT NULL ORDER BY position"
    ).fetchall()
    return [r[0] for r in rows]


def check_read_only(sql: str) -> None:
    """Refuse anything but a single SELECT (DESCRIBE, SHOW, SUMMARIZE are SELECTs).

    Parsed by DuckDB itself, so comments, case and CTEs cannot hide a write."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ReadOnlyError(f"cannot parse the query: {exc}") from exc
    if len(statements) != 1:
        raise ReadOnlyError(f"expected one statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ReadOnlyError(
            f"only SELECT queries are allowed on the results (got {kind.name}); "
            "the results are read-only"
        )


def fetch_frame(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None
                ) -> pd.DataFrame:
    """A query's result as pandas, via Arrow (DuckDB's own ``df()`` warns under pandas 3
    for time-zone-aware timestamps). Dates come back as datetime64."""
    rel = con.sql(sql, params=params or None)
    return rel.to_arrow_table().to_pandas(date_as_object=False)


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None
            ) -> pd.DataFrame:
    """Run user SQL after ``check_read_only``."""
    check_read_only(sql)
    return fetch_frame(con, sql, params)


def list_views(con: duckdb.DuckDBPyConnection) -> list[tuple[str, list[str]]]:
    """(name, columns) of the views and tables a query can use."""
    names = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal "
        "UNION ALL SELECT table_name FROM duckdb_tables() ORDER BY 1"
    ).fetchall()
    return [(name, con.sql(f'SELECT * FROM "{name}"').columns) for (name,) in names]
