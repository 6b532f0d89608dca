"""Subcommands of this package (registered by callmood/cli.py)."""

from __future__ import annotations

import click

from callmood.options import storage_options_option

FORMATS = ("table", "csv", "json")


def _parse_params(items: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--param")
        params[key.strip()] = value
    return params


_timezone_option = click.option(
    "--timezone", envvar="CALLMOOD_TIMEZONE", metavar="ZONE",
    help="Show times in this IANA time zone, e.g. Europe/Berlin (hour of day, start "
         "times); default UTC. Also read from $CALLMOOD_TIMEZONE.")


@click.command()
@click.argument("results", type=click.Path(file_okay=False))
@click.argument("sql", required=False)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Output format.")
@click.option("--csv-raw", is_flag=True,
              help="With --format csv: write text cells as they are. By default a text "
                   "cell starting with =, +, -, @, a tab or a carriage return gets a "
                   "leading ' so that a spreadsheet shows it instead of running it as a "
                   "formula (agent ids, queues and call ids come from sidecar CSVs).")
@click.option("--list", "list_only", is_flag=True, help="Show the views and the canned queries.")
@click.option("--summary", is_flag=True, help="Print a short summary of the results.")
@click.option("--canned", metavar="NAME", help="Run a canned query (see --list).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the canned query, e.g. --param date_from=2026-03-01.")
@_timezone_option
@storage_options_option()
def query(results, sql, fmt, csv_raw, list_only, summary, canned, params, timezone,
          storage_options):
    """Run read-only SQL over the Parquet results in RESULTS (a folder, or an object
    store's URL such as s3://bucket/results).

    The views segments, calls, errors and runs are defined, plus the emotion_labels
    table and the filtered_calls / filtered_segments macros. Only SELECT statements run.
    CSV output neutralises spreadsheet formulas in text cells (see --csv-raw).
    """
    from callmood.dashboard import query_cli

    chosen = sum(bool(x) for x in (sql, list_only, summary, canned))
    if chosen != 1:
        raise click.UsageError("give exactly one of SQL, --list, --summary or --canned NAME")
    if params and not canned:
        raise click.UsageError("--param goes with --canned")
    if csv_raw and fmt != "csv":
        raise click.UsageError("--csv-raw goes with --format csv")
    try:
        text = query_cli.run(results, sql=sql, fmt=fmt, csv_raw=csv_raw, list_only=list_only,
                             summary=summary, canned=canned, params=_parse_params(params),
                             timezone=timezone, storage_options=storage_options)
    except query_cli.USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(text)


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_extra_args": True})
@click.argument("results", type=click.Path(file_okay=False))
@click.argument("streamlit_options", nargs=-1, type=click.UNPROCESSED)
@_timezone_option
@storage_options_option()
def dashboard(results, streamlit_options, timezone, storage_options):
    """Open the Streamlit dashboard on RESULTS (a folder, or an object store's URL such
    as s3://bucket/results).

    Extra options go to `streamlit run`, e.g. --server.port 8502. The page has no login
    and listens on 127.0.0.1 only; --server.address 0.0.0.0 exposes it (put an
    authenticating proxy in front, see the README).
    """
    from callmood.dashboard.launch import exec_dashboard
    from callmood.results.location import LocationError
    from callmood.results.store import ResultsError

    try:
        exec_dashboard(results, list(streamlit_options), timezone, storage_options)
    except (ResultsError, LocationError) as exc:
        raise click.ClickException(str(exc)) from exc


COMMANDS = [query, dashboard]
