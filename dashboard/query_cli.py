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

USER_ERRORS = (ResultsError, ReadOnlyError, QueryError, duckdb.Error)


def format_frame(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
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


def run(results, *, sql=None, fmt="table", list_only=False, summary=False, canned=None,
        params=None, timezone=None) -> str:
    con = connect(results, read_only=True, timezone=timezone)
    try:
        if list_only:
            return describe(con)
        if summary:
            return summarize(con)
        df = run_canned(con, canned, params) if canned else run_sql(con, sql)
        return format_frame(df, fmt)
    finally:
        con.close()
