"""The ``tinyward`` command.

A thin layer over the Python API: each area keeps its commands in its own module
(``cli/fleet.py``, ``cli/device.py`` …) and registers them here. Every
:class:`~tinyward.errors.TinywardError` is caught in one place and printed for a person
as one ``error: …`` line, with the exit code of its family (:data:`tinyward.errors.EXIT_CODES`,
shown by ``tinyward --help`` and in docs/cli.md). A file-system error the command did not
foresee (``OSError``) and a usage error end the same way; a traceback means a bug.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import NoReturn

import click

from tinyward import __version__
from tinyward.errors import EXIT_CODES, TinywardError
from tinyward.extras import MissingExtra, missing_extra

FAILURE_EXIT_CODE = 1
USAGE_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report it


def _fail(message: str, code: int) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _os_message(error: OSError) -> str:
    text = error.strerror or str(error)
    where = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
    return f"{text}: {where}" if where else text


def _usage_message(error: click.UsageError) -> str:
    hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
    return f"{error.format_message()}{hint}"


class _Group(click.Group):
    """A click group that turns every expected failure into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TinywardError as error:
            _fail(str(error), error.exit_code)
        except ModuleNotFoundError as error:
            # An optional extra this command imports when it runs (tinyward.extras).
            missing = missing_extra(error)
            if missing is None:
                raise
            _fail(str(missing), missing.exit_code)
        except click.UsageError as error:  # a subcommand's arguments, parsed in here
            _fail(_usage_message(error), USAGE_EXIT_CODE)
        except OSError as error:
            if error.errno == errno.EPIPE:  # `tinyward … | head`: the reader left; say nothing
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(FAILURE_EXIT_CODE)
            _fail(_os_message(error), FAILURE_EXIT_CODE)


def _exit_code_epilog() -> str:
    # "\b" keeps click from re-wrapping the table into one paragraph.
    rows = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES)
    return f"\b\nExit codes:\n{rows}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_exit_code_epilog())
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
    ("fleet_serve", "fleet", (), ("ingest", "handshake")),
    ("update_rollout", "fleet", ("rollout",), ()),
    ("update", "fleet", ("update",), ()),
    ("device", "device", ("device",), ("trust",)),
    ("attest", "device", ("attest",), ("token",)),
    ("report", "device", ("report",), ()),
    ("app", "device", ("app",), ("sandbox",)),
    ("detect", "detect", ("detect",), ("detect",)),
    ("tcb", "device", ("tcb",), ()),
    ("inspect", "device", ("inspect",), ()),
    ("bench_update", "all", (), ("update",)),
    ("bench_fleetload", "all", (), ("fleetload",)),
    ("bench_watch", "all", (), ("watch",)),
    ("assess", "device", ("assess",), ()),
    ("lab", "all", ("lab",), ()),
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
    try:
        # standalone_mode=False: the top level's own usage errors end in one line too.
        result = cli.main(prog_name="tinyward", standalone_mode=False)
    except click.UsageError as error:
        _fail(_usage_message(error), USAGE_EXIT_CODE)
    except click.Abort:
        _fail("aborted (Ctrl-C, or no input where a prompt needed one: set the variable "
              "the prompt stands for, e.g. TINYWARD_FLEET_PASSPHRASE)", INTERRUPTED_EXIT_CODE)
    except click.ClickException as error:
        _fail(error.format_message(), error.exit_code)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
