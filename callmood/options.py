"""What the subcommands share on the command line: the recorders' time zone option and
the model folder's default."""

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
