"""The docs keep up with the CLI: every `callmood` subcommand has help and is in README.md."""

from pathlib import Path

import pytest

from callmood.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
COMMANDS = sorted(main.commands)


def test_there_are_subcommands():
    assert {"train", "evaluate", "tune", "predict"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_has_help_text(name):
    command = main.commands[name]
    assert command.help and command.help.strip(), f"`callmood {name}` has no help text"


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_is_in_readme(name):
    assert README.is_file(), f"{README} is missing"
    assert f"callmood {name}" in README.read_text(), \
        f"README.md never mentions `callmood {name}`"
