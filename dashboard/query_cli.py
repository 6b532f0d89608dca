"""What ``callmood query`` does, apart from argument parsing."""

from __future__ import annotations

import duckdb
import pandas as pd

from callmood.dashboard.canned import QueryError, load_queries, run_canned
from callmood.dashboard.results_db import (
    ReadOnlyError,
    ResultsError,
    connect,
    list_views,
    run_sql,
)
from callmood.dashboard.summary import summarize
from callmood.results.location import LocationError, parse_storage_options

USER_ERRORS = (ResultsError, ReadOnlyError, QueryError, LocationError, duckdb.Error)
# a spreadsheet runs a cell starting with one of these as a formula (OWASP, CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text_columns(df: pd.DataFrame) -> list[int]:
    """Positions (a query may repeat a name) of the columns that can hold text."""
    return [i for i, dtype in enumerate(df.dtypes) if dtype.kind == "O"]  # and str dtypes


def neutralise_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a ' before every text cell that starts with FORMULA_STARTS, so that a
    spreadsheet shows it instead of running it; numbers (-3.5) stay numbers."""
    out = df.copy()
    for i in _text_columns(df):
        out.isetitem(i, df.iloc[:, i].map(
            lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v))
    return out


def to_csv(df: pd.DataFrame, raw: bool = False) -> str:
    """CSV with formulas neutralised unless `raw`. A cell holding a CR must be quoted, or
    readers end the row there (and a formula after it starts a cell); Python before
    3.11.9 quotes it only when the line ends hold a CR too (CPython gh-67044)."""
    df = df if raw else neutralise_formulas(df)
    has_cr = any(df.iloc[:, i].map(lambda v: isinstance(v, str) and "\r" in v).any()
                 for i in _text_columns(df))
    ending = "\r\n" if has_cr else "\n"
    return df.to_csv(index=False, lineterminator=ending).removesuffix(ending)


def format_frame(df: pd.DataFrame, fmt: str, csv_raw: bool = False) -> str:
    if fmt == "csv":
        return to_csv(df, csv_raw)
    if fmt == "json":
        return df.to_json(orient="records", date_format="iso", indent=2)
    if df.empty:
        return f"(no rows; columns: {', '.join(map(str, df.columns))})"
    with pd.option_context("display.max_rows", None, "display.max_columns", None,
                           "display.width", 200):
        return df.to_string(index=False)


def describe(con: duckdb.DuckDBPyConnection) -> str:
    lines = ["Views and tables:"]
    for name, columns in list_views(con):
        lines.append(f"  {name}: {', '.join(columns)}")
    lines.append("Canned queries (--canned NAME --param key=value):")
    for query in load_queries().values():
        params = ", ".join(
            p.name + (f"={p.default}" if p.default is not None else "") for p in query.params
        )
        lines.append(f"  {query.name}({params})")
        lines.append(f"      {query.description}")
    return "\n".join(lines)


def run(results, *, sql=None, fmt="table", csv_raw=False, list_only=False, summary=False,
        canned=None, params=None, timezone=None, storage_options=None) -> str:
    """`storage_options`: --storage-options' JSON, for a results folder in an object store."""
    con = connect(results, read_only=True, timezone=timezone,
                  storage_options=parse_storage_options(storage_options))
    try:
        if list_only:
            return describe(con)
        if summary:
            return summarize(con)
        df = run_canned(con, canned, params) if canned else run_sql(con, sql)
        return format_frame(df, fmt, csv_raw)
    finally:
        con.close()
