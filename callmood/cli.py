"""The `callmood` command. Each package owns its subcommands in its own cli.py; this
module only gathers them, so `callmood --help` stays fast (heavy imports happen inside
the commands)."""

import click

from callmood import __version__


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """--version: the package's version and the bundled model's name and weights version
    (the model_version its scores carry). Loads the model, so torch is imported only here."""
    if not value or ctx.resilient_parsing:
        return
    from callmood.model.folder import (
        ModelFolderError,
        default_model_dir,
        load_model_folder,
    )

    try:
        model = load_model_folder(default_model_dir())
    except ModelFolderError as err:
        raise click.ClickException(f"callmood {__version__}: the bundled model does not "
                                   f"load ({err})") from err
    click.echo(f"callmood {__version__}\nbundled model: {model.name} (weights {model.version})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version,
              help="Show the version and the bundled model's name and weights version, then exit.")
def main():
    """callmood: emotion analytics for call-center recordings.

    Train and evaluate the spectrogram ViT (train, evaluate, tune, predict), score
    recorded calls every night (score) or live (live), and look at the results (query,
    dashboard).
    """


def _register() -> None:
    from callmood.batch import cli as batch_cli
    from callmood.dashboard import cli as dashboard_cli
    from callmood.live import cli as live_cli
    from callmood.training import cli as training_cli

    for module in (training_cli, batch_cli, dashboard_cli, live_cli):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
