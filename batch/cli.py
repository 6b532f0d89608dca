"""Subcommands of this package (registered by callmood/cli.py)."""

from __future__ import annotations

import click

from callmood.options import (
    analytics_option,
    model_dir_or_bundled,
    read_analytics,
    source_timezone_option,
    storage_options_option,
)
from callmood.workers import usable_cores


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "-o", required=True,
              help="Results folder or fsspec URL (s3://bucket/results); one Parquet "
                   "dataset per table inside.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False),
              help="Model folder [default: the model bundled with callmood].")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=usable_cores(),
              show_default="all cores", help="Parallel worker processes (one core each).")
@click.option("--rescore", is_flag=True, help="Score every file again, changed or not.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Only files matching (name, or path below INPUT if it has a '/'); "
                   "repeatable [default: common audio extensions].")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip matching files.")
@click.option("--follow-links", is_flag=True,
              help="Score links to files, and walk links to folders, outside the inputs "
                   "(refused as error rows otherwise).")
@click.option("--metadata", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Extra metadata CSV (columns file, call_id, agent_id, queue, started_at, "
                   "customer_channel); calls.csv beside the audio is read anyway.")
@source_timezone_option(
              help="The recorders' time zone (IANA name, e.g. Europe/Berlin; or "
                   "$CALLMOOD_SOURCE_TIMEZONE): times in file names and sidecar times "
                   "without an offset are local times there. Results hold UTC.")
@click.option("--max-hours", type=click.FloatRange(min=0, min_open=True), default=6.0,
              show_default=True, help="Longer files are recorded as errors.")
@click.option("--file-minutes", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="A file not scored within this (a decoder that "
                                      "crawls) becomes an error row; the run goes on.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Windows per model forward pass.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="Model arithmetic; bf16 is about 2x faster on CPUs "
                                      "with AVX512-BF16 or AMX, with slightly different "
                                      "probabilities.")
@click.option("--backend", type=click.Choice(["loky", "dask"]), default="loky",
              show_default=True, help="joblib backend: local processes or a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS", help="Dask scheduler, with --backend dask.")
@click.option("--prior-shift", type=click.Choice(["off", "em"]), default="off",
              show_default=True,
              help="em: re-estimate the emotions' shares over the run's segments and correct "
                   "the probabilities for them (calls are written after the last file; "
                   "see README, Prior shift, for when it helps).")
@analytics_option()
@storage_options_option()
@click.option("--progress/--no-progress", default=True,
              help="Show progress (hours of audio, ETA): a bar on a terminal, a line every "
                   "30 s in a log [default: on].")
@click.pass_context
def score(ctx, inputs, out, model_dir, workers, rescore, include, exclude, follow_links, metadata,
          source_timezone, max_hours, file_minutes, batch_size, precision, backend, scheduler,
          prior_shift, analytics_file, storage_options, progress):
    """Score recorded calls under INPUT... into Parquet under --out.

    An INPUT may be a folder, a file or an object store's URL (s3://bucket/prefix).
    Finds audio files recursively, scores the speech of each channel with the model and
    writes the segments, calls and errors tables. Only new or changed files are scored.
    Exits with status 1 if any file could not be scored (see the errors table); a sidecar
    problem is an errors row too, but its calls score with default metadata, so it alone
    does not fail the run.
    """
    from callmood.batch.scan import AUDIO_PATTERNS, ScanError
    from callmood.batch.score import ScoreConfig, score_calls
    from callmood.model.folder import ModelFolderError
    from callmood.results.location import LocationError, parse_storage_options
    from callmood.results.store import ResultsError

    model_dir = model_dir_or_bundled(model_dir)
    analytics = read_analytics(analytics_file)
    try:
        config = ScoreConfig(workers=workers, backend=backend, scheduler=scheduler,
                             batch_size=batch_size, precision=precision,
                             max_hours=max_hours, file_minutes=file_minutes,
                             rescore=rescore,
                             include=include or AUDIO_PATTERNS, exclude=exclude,
                             follow_links=follow_links,
                             metadata=metadata, source_timezone=source_timezone,
                             prior_shift=prior_shift, analytics=analytics)
        summary = score_calls(list(inputs), out, model_dir, config, progress=progress,
                              storage_options=parse_storage_options(storage_options))
    except (ValueError, ScanError, ResultsError, ModelFolderError, LocationError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(summary.line())
    if summary.files_failed:
        ctx.exit(1)


COMMANDS = [score]
