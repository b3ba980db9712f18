"""`tinyward` commands for the attest area (see cli/main.py for how they are registered)."""

from __future__ import annotations

import click

from tinyward.cli.attest_bench import bench_token

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = [bench_token]
