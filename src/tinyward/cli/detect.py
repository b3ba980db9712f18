"""`tinyward` commands for the detect area (see cli/main.py for how they are registered)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []
