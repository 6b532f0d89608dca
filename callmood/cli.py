"""The `callmood` command. Each package owns its subcommands in its own cli.py; this
module only gathers them, so `callmood --help` stays fast (heavy imports happen inside
the commands)."""

import click

from callmood import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="callmood")
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
