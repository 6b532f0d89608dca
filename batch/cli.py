"""Subcommands of this package (registered by callmood/cli.py)."""

COMMANDS = []
