"""Canned queries: one SQL file per query in ``dashboard/queries/``.

Each file starts with a comment header::

    -- name: agents
    -- description: Per-agent table ...
    -- params: date_from date, queue text, min_confidence float = 0

Parameters are DuckDB ``$name`` placeholders, bound at execution (never pasted into
the SQL). Types: ``text``, ``date``, ``float``, ``int``; a parameter without a default
is NULL when not given, which the filters read as "any".
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from callmood.dashboard.results_db import fetch_frame

QUERIES_DIR = Path(__file__).with_name("queries")
PARAM_TYPES = {
    "text": str,
    "date": dt.date.fromisoformat,
    "float": float,
    "int": int,
}
_HEADER = re.compile(r"^--\s*(name|description|params):\s*(.*)$")
_PARAM = re.compile(r"^(\w+)\s+(\w+)(?:\s*=\s*(\S+))?$")


class QueryError(Exception):
    """Unknown canned query or bad parameters."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: object = None

    def convert(self, value: object) -> object:
        """Turn a value (a string from the command line, or already typed) into the
        parameter's type."""
        if value is None or (self.type == "date" and isinstance(value, dt.date)):
            return value
        if self.type == "date" and isinstance(value, dt.datetime):
            return value.date()
        try:
            return PARAM_TYPES[self.type](value)
        except (TypeError, ValueError) as exc:
            raise QueryError(f"parameter {self.name}: {value!r} is not a {self.type}") from exc


@dataclass(frozen=True)
class CannedQuery:
    name: str
    description: str
    params: tuple[Param, ...]
    sql: str

    def bind(self, values: dict | None = None, strict: bool = True) -> dict:
        """Values for every declared parameter: given ones converted, others defaulted.

        ``strict`` rejects names the query does not declare; the dashboard passes all
        of its filters to every query and lets each take the ones it declares."""
        values = dict(values or {})
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if strict and unknown:
            raise QueryError(
                f"query {self.name!r} has no parameter {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(known)) or 'none'}"
            )
        return {p.name: p.convert(values.get(p.name, p.default)) for p in self.params}


def parse_query(text: str, source: str = "<string>") -> CannedQuery:
    header = {}
    for line in text.splitlines():
        match = _HEADER.match(line.strip())
        if not line.strip().startswith("--"):
            break
        if match and match.group(1) == "params":  # may continue on further lines
            header["params"] = header.get("params", "") + "," + match.group(2)
        elif match:
            header[match.group(1)] = match.group(2).strip()
    if "name" not in header or "description" not in header:
        raise QueryError(f"{source}: needs '-- name:' and '-- description:' header lines")
    params = []
    for item in filter(None, (p.strip() for p in header.get("params", "").split(","))):
        match = _PARAM.match(item)
        if not match or match.group(2) not in PARAM_TYPES:
            raise QueryError(f"{source}: bad parameter declaration {item!r}")
        param = Param(match.group(1), match.group(2))
        if match.group(3) is not None:
            param = Param(param.name, param.type, param.convert(match.group(3)))
        params.append(param)
    return CannedQuery(header["name"], header["description"], tuple(params), text)


def load_queries(directory: Path = QUERIES_DIR) -> dict[str, CannedQuery]:
    queries = {}
    for path in sorted(directory.glob("*.sql")):
        query = parse_query(path.read_text(), str(path))
        queries[query.name] = query
    return queries


def get_query(name: str) -> CannedQuery:
    queries = load_queries()
    if name not in queries:
        raise QueryError(f"no canned query {name!r}; known: {', '.join(queries)}")
    return queries[name]


def run_canned(
    con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None, strict: bool = True
) -> pd.DataFrame:
    query = get_query(name)
    return fetch_frame(con, query.sql, query.bind(params, strict))
