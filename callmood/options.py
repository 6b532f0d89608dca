"""What the subcommands share on the command line: the recorders' time zone option, the
call analytics settings, an object store's options and the model folder's default."""

from __future__ import annotations

import click


def model_dir_or_bundled(model_dir: str | None) -> str:
    """--model, or the bundled model; a clear error where that is not installed."""
    from callmood.model.folder import default_model_dir

    if model_dir:
        return model_dir
    bundled = default_model_dir()
    if not bundled.is_dir():
        raise click.ClickException(f"the bundled model ({bundled}) is not installed; pass "
                                   "--model DIR with a model folder from `callmood train`")
    return str(bundled)


def source_timezone_option(help: str):
    """--source-timezone (or $CALLMOOD_SOURCE_TIMEZONE): the zone in which times written
    without an offset are read."""
    return click.option("--source-timezone", envvar="CALLMOOD_SOURCE_TIMEZONE", default="UTC",
                        show_default=True, metavar="ZONE", help=help)


def analytics_option():
    """--analytics FILE: the call analytics settings (persistence, the escalation rule, the
    live alert's thresholds and confirmation) as JSON, e.g. refitted on a team's own
    labelled calls."""
    return click.option("--analytics", "analytics_file", type=click.Path(dir_okay=False),
                        metavar="FILE",
                        help="JSON of call analytics settings (CallAnalytics fields, or a "
                             "fit_call_analytics.py report, whose `chosen` is used), over "
                             "those fitted with the model (its call_analytics.json)")


def read_analytics(path: str | None) -> dict:
    """The settings of --analytics, checked ({} without it), which CallAnalytics.of_model
    puts over the model's own; a clear error naming the file otherwise."""
    import json

    from callmood.results.call_summary import CallAnalytics

    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if isinstance(values, dict) and isinstance(values.get("chosen"), dict):
            values = values["chosen"]
        if not isinstance(values, dict):
            raise ValueError("expected a JSON object of settings")
        CallAnalytics.from_dict(values)
        return values
    except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise click.ClickException(f"--analytics {path}: {err}") from None


def storage_options_option():
    """--storage-options JSON (or $CALLMOOD_STORAGE_OPTIONS): fsspec options for an object
    store's URL, e.g. its endpoint or profile. Credentials are better left to the
    environment or the provider's profile files; given here they are used, never written."""
    from callmood.results.location import STORAGE_OPTIONS_ENV

    return click.option("--storage-options", envvar=STORAGE_OPTIONS_ENV,
                        metavar="JSON",
                        help="fsspec options for s3:// and other URLs, as a JSON object, "
                             'e.g. \'{"endpoint_url": "http://minio:9000", "profile": '
                             '"nightly"}\' (or $CALLMOOD_STORAGE_OPTIONS); credentials '
                             "come from the environment or profile files otherwise")
