"""Emotion analytics over the Parquet results: DuckDB SQL and a Streamlit dashboard.

From a notebook::

    from callmood.dashboard import connect, run_canned
    con = connect("results")
    con.sql("SELECT queue, avg(customer_negative_share) FROM calls GROUP BY queue").df()
    run_canned(con, "agents", {"date_from": "2026-03-01"})
"""

_API = {
    "connect": "callmood.dashboard.results_db",
    "run_sql": "callmood.dashboard.results_db",
    "run_canned": "callmood.dashboard.canned",
    "load_queries": "callmood.dashboard.canned",
}
__all__ = list(_API)


def __getattr__(name):
    # Imported lazily so that `callmood --help` does not load DuckDB.
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
