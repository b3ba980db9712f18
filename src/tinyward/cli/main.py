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
from tinyward.extras import MissingExtra, missing_extra


class _Group(click.Group):
    """A click group that turns tinyward errors into a message and an exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TinywardError as error:
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(error.exit_code)
        except ModuleNotFoundError as error:
            # An optional extra this command imports when it runs (tinyward.extras).
            missing = missing_extra(error)
            if missing is None:
                raise
            click.secho(f"error: {missing}", fg="red", err=True)
            sys.exit(missing.exit_code)


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


# The commands each area registers and the extra it needs, named here so that an area
# whose optional extra is missing still shows its commands and says what to install
# (tinyward.extras). The demo runs a fleet server and devices: both extras.
_AREAS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("demo", "all", ("demo",), ("shaping",)),
    ("fleet", "fleet", ("fleet",), ("fleet",)),
    ("fleet_serve", "fleet", (), ("ingest",)),
    ("device", "device", ("device",), ("trust",)),
    ("attest", "device", ("attest",), ("token",)),
    ("report", "device", ("report",), ()),
    ("app", "device", ("app",), ("sandbox",)),
    ("detect", "detect", ("detect",), ("detect",)),
    ("tcb", "device", ("tcb",), ()),
)


def _unavailable(name: str, missing: MissingExtra) -> click.Command:
    def refuse(args: tuple[str, ...]) -> None:
        raise MissingExtra(missing.project, missing.extra, f"`tinyward {name}`")

    return click.Command(
        name, callback=refuse, help=f"(needs: pip install 'tinyward[{missing.extra}]')",
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "help_option_names": []})


def _register() -> None:
    # Each area module exposes COMMANDS (top-level commands or groups) and
    # BENCH_COMMANDS (subcommands of `tinyward bench`).
    import importlib

    for area, extra, names, bench_names in _AREAS:
        try:
            module = importlib.import_module(f"tinyward.cli.{area}")
        except ModuleNotFoundError as error:
            missing = missing_extra(error)
            if missing is None:
                raise
            missing = MissingExtra(missing.project, extra)
            for name in names:
                if name not in cli.commands:
                    cli.add_command(_unavailable(name, missing))
            for name in bench_names:
                if name not in bench.commands:
                    bench.add_command(_unavailable(f"bench {name}", missing), name)
            continue
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)
        for command in getattr(module, "BENCH_COMMANDS", ()):
            bench.add_command(command)


_register()


def main() -> None:
    cli(prog_name="tinyward")


if __name__ == "__main__":
    main()
