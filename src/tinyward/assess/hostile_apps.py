"""The hostile applications: one copy, for the hostile-app probe and for the tests.

They are package data in ``assess/data/hostile/NAME/`` (``app.py.txt``, ``sensor.toml``;
the README there says what each one attacks), because the installed probe runs them. The
``.txt`` keeps them out of what tools take for tinyward's own code (ruff, mypy, byte
compiling at install); :func:`copy_app` writes one out as a runnable app folder.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from tinyward.errors import Misuse


def _root() -> Traversable:
    return resources.files("tinyward.assess") / "data" / "hostile"


def names() -> tuple[str, ...]:
    """Every hostile app shipped, sorted."""
    return tuple(sorted(entry.name for entry in _root().iterdir() if entry.is_dir()))


def source(name: str) -> Traversable:
    """The packaged folder of app ``name`` (``app.py.txt``, ``sensor.toml``)."""
    if name not in names():
        raise Misuse(f"no hostile app named {name!r} (there are: {', '.join(names())})")
    return _root() / name


def copy_app(name: str, folder: Path) -> Path:
    """Write app ``name`` into ``folder`` (created; it must not exist yet) as ``app.py`` and
    ``sensor.toml``, readable by everyone (the sandbox's uid must read it); return ``folder``.

    The app reads its targets from ``target.json``, which the caller writes.
    """
    packaged = source(name)
    folder.mkdir()
    (folder / "app.py").write_text((packaged / "app.py.txt").read_text())
    (folder / "sensor.toml").write_text((packaged / "sensor.toml").read_text())
    for written in (folder / "app.py", folder / "sensor.toml"):
        written.chmod(0o644)
    folder.chmod(0o755)
    return folder
