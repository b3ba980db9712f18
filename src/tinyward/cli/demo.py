"""`tinyward` commands for the demo area (see cli/main.py for how they are registered)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []
