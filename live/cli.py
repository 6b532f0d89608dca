"""Subcommands of this package (registered by callmood/cli.py)."""

from __future__ import annotations

import click

from callmood.options import (
    analytics_option,
    model_dir_or_bundled,
    read_analytics,
    source_timezone_option,
)


@click.command()
@click.option("--model", "model_dir", type=click.Path(file_okay=False),
              help="model folder (default: the bundled model)")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0: every interface; there is no login)")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--results", type=click.Path(file_okay=False),
              help="results folder to add each finished call to, as `score` does")
@click.option("--threads", type=click.IntRange(min=1),
              help="calls scored at the same moment (default: the cores)")
@source_timezone_option(
              help="zone of a start message's started_at written without an offset (IANA "
                   "name), as for `score`")
@click.option("--max-calls", type=click.IntRange(min=1),
              help="calls scored at once; a call beyond them is refused at its start with a "
                   "`busy` error (default: 16 per scoring thread, the measured capacity)")
@click.option("--buffer-s", type=click.FloatRange(min=1.0),
              help="seconds of a call's audio that may wait to be scored; a live call that "
                   "falls further behind is cut, and marked incomplete for the nightly run "
                   "(default: 30)")
@analytics_option()
def live(model_dir, host, port, results, threads, source_timezone, max_calls, buffer_s,
         analytics_file):
    """Score calls while they happen, over a WebSocket (ws://HOST:PORT).

    Send callmood's protocol (a JSON start, binary audio, a JSON stop) or a telephony
    platform's media-stream events; get back one JSON event per scored segment, an alert
    when the customer escalates, and a summary. docs/live.md describes the messages.
    """
    import asyncio
    import logging

    from callmood.live.server import LiveServer
    from callmood.model.folder import load_model_folder
    from callmood.results.call_summary import CallAnalytics
    from callmood.results.meta import source_zone
    from callmood.results.store import ResultsError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    given = read_analytics(analytics_file)
    try:
        model = load_model_folder(model_dir_or_bundled(model_dir))
        zone = source_zone(source_timezone)
        analytics = CallAnalytics.of_model(model, given)
    except (ValueError, OSError) as err:  # a bad zone or call_analytics.json: ValueError
        raise click.ClickException(str(err)) from None
    try:
        server = LiveServer(model, results, threads=threads, source_zone=zone,
                            analytics=analytics, max_calls=max_calls, buffer_s=buffer_s)
    except ResultsError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"callmood live: ws://{host}:{port} (model {model.name}, at most "
               f"{server.max_calls} calls at once"
               + (f", results into {results})" if results else ")"), err=True)
    try:
        asyncio.run(server.serve(host, port))
    except OSError as err:
        raise click.ClickException(f"cannot listen on {host}:{port}: {err}") from None


COMMANDS = [live]
