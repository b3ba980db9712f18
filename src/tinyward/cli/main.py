"""The ``tinyward`` command.

A thin layer over the Python API: each area keeps its commands in its own module
(``cli/fleet.py``, ``cli/device.py`` …) and registers them here. Every
:class:`~tinyward.errors.TinywardError` is caught in one place and printed for a person,
with a non-zero exit code; a traceback means a bug.
"""

from __future__ import annotations

import sys

import click

from tinyward import __version__
from tinyward.errors import TinywardError


class _Group(click.Group):
    """A click group that turns tinyward errors into a message and an exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TinywardError as error:
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(error.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tinyward")
def cli() -> None:
    """Build ML sensors that defend themselves, and prove that they do.

    Start with `tinyward demo`, which creates a fleet and devices in a temporary
    folder and walks through what tinyward does.
    """


@cli.group()
def bench() -> None:
    """Measure speeds and costs; every figure is printed next to a baseline."""


def _register() -> None:
    # Each area module exposes COMMANDS (top-level commands or groups) and
    # BENCH_COMMANDS (subcommands of `tinyward bench`).
    from tinyward.cli import app as app_cli
    from tinyward.cli import attest as attest_cli
    from tinyward.cli import demo as demo_cli
    from tinyward.cli import detect as detect_cli
    from tinyward.cli import device as device_cli
    from tinyward.cli import fleet as fleet_cli
    from tinyward.cli import fleet_serve as fleet_serve_cli
    from tinyward.cli import report as report_cli
    from tinyward.cli import tcb as tcb_cli

    for module in (demo_cli, fleet_cli, fleet_serve_cli, device_cli, attest_cli, report_cli,
                   app_cli, detect_cli, tcb_cli):
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)
        for command in getattr(module, "BENCH_COMMANDS", ()):
            bench.add_command(command)


_register()


def main() -> None:
    cli(prog_name="tinyward")


if __name__ == "__main__":
    main()
