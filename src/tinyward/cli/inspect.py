"""`tinyward inspect …`: placeholder, filled below."""
import click

COMMANDS: list[click.Command] = []
