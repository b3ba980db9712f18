"""`tinyward tcb`: the trusted computing base, in lines (see :mod:`tinyward.tcb`)."""

from __future__ import annotations

import json
from collections import defaultdict

import click

from tinyward.tcb import Tcb, measure, package_of


@click.command("tcb")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--modules", "per_module", is_flag=True,
              help="List every module a device process imports, with its lines.")
def tcb(as_json: bool, per_module: bool) -> None:
    """How much of tinyward a device trusts: the core (tinyward.trust) and every tinyward
    module a connected or an air-gapped device process imports.

    Lines are non-blank, non-comment lines, docstrings included. Each device process is
    imported in a fresh interpreter; "reachable" also follows imports inside functions
    (code a run may load later). Third-party packages are named, not counted.
    """
    result = measure()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    _print(result, per_module)


def _by_package(modules: dict[str, int]) -> str:
    totals: dict[str, int] = defaultdict(int)
    for name, lines in modules.items():
        totals[package_of(name)] += lines
    return ", ".join(f"{package} {lines:,}" for package, lines in sorted(totals.items()))


def _print(result: Tcb, per_module: bool) -> None:
    click.echo(f"trusted core (tinyward.trust): {result.core_lines:,} lines in "
               f"{len(result.core)} modules")
    for name, lines in result.core.items():
        click.echo(f"  {lines:6,}  {name}")
    for process in result.processes:
        click.echo("")
        click.echo(f"{process.kind} process ({', '.join(process.entry_points)}):")
        click.echo(f"  imports {process.imported_lines:,} lines in {len(process.imported)} "
                   f"tinyward modules ({_by_package(process.imported)})")
        click.echo(f"  can reach {process.reachable_lines:,} lines in "
                   f"{len(process.reachable)} modules (lazy imports followed)")
        click.echo(f"  third-party packages loaded: {', '.join(process.third_party) or 'none'}")
        if per_module:
            for name, lines in process.imported.items():
                click.echo(f"  {lines:6,}  {name}")


COMMANDS: list[click.Command] = [tcb]
