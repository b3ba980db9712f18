"""Check an output path before any work is done, so a typo costs nothing.

Every command that writes a file (``-o``/``--out``) or creates a folder checks its target
first, through :func:`output_file` or :func:`new_folder` (click callbacks), and refuses with
one :class:`OutputPathError` line: a file's missing folder, a file where a folder should be
(or the reverse), a folder that cannot be written. Nothing is recorded,
trained or enrolled before the check.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from tinyward.errors import BadInput


class OutputPathError(BadInput):
    """An output file or folder cannot be written where the command was asked to put it."""


def _existing_ancestor(target: Path, what: str) -> Path:
    """The nearest folder above ``target`` that exists; refuses a file or a dangling link."""
    probe = target.parent
    while not probe.exists():
        if probe.is_symlink():
            raise OutputPathError(f"{what} {target}: {probe} is a broken symbolic link")
        if probe == probe.parent:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{what} {target}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {target}: the folder {probe} cannot be written")
    return probe


def check_output_file(target: Path, what: str = "cannot write") -> Path:
    """Refuse early an output file that could not be written; return ``target`` unchanged."""
    if target.is_dir():
        raise OutputPathError(f"{what} {target}: it is a folder, not a file")
    if _existing_ancestor(target, what) != target.parent:
        raise OutputPathError(f"{what} {target}: the folder {target.parent} does not exist "
                              "(create it first)")
    return target


def check_new_folder(target: Path, what: str = "cannot create") -> Path:
    """Refuse early a folder that could not be created (a file in the way, no write access).

    Missing parent folders are fine: the commands that make folders create them.
    """
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{what} {target}: a file is in the way, not a folder")
    if not target.exists():
        _existing_ancestor(target, what)
    return target


def output_file(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """click callback for an output-file option or argument (``None`` passes through)."""
    return None if value is None else check_output_file(Path(value))


def new_folder(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """click callback for a folder the command creates (or fills, if it is empty)."""
    return None if value is None else check_new_folder(Path(value))
