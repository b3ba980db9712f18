"""The trusted computing base: how much of tinyward a device has to trust, in lines.

Three figures, each counted in non-blank, non-comment lines (docstrings count: they are in
the file a reviewer reads; ``tokenize`` decides what a comment is):

- the **core**: every module of :mod:`tinyward.trust`;
- what a **device process imports**: the device's entry points are imported in a fresh
  interpreter (a subprocess, so nothing this process loaded counts) and every ``tinyward``
  module in its ``sys.modules`` is counted, once for a connected device and once for an
  air-gapped one, and for the sandbox wrapper that confines the application;
- what it **can reach**: the same entry points followed through every ``import`` in the
  source, lazy ones inside functions included (an upper bound: code a run may load later,
  such as the sandbox's Landlock and seccomp helpers).

Third-party packages (``cryptography``, ``cbor2``, ``numpy``, the standard library) are
not counted; ``tinyward tcb --json`` lists them by name. The sandboxed application runs
in its own process and is not trusted, so it is not part of the base.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ENTRY_POINTS", "Process", "Tcb", "count_lines", "measure", "package_of"]

_ROOT = Path(__file__).resolve().parent

#: What each kind of device process starts from (the CLI's `device run` builds on these).
ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "connected": ("tinyward.trust.device", "tinyward.link.runner", "tinyward.app.source",
                  "tinyward.update.runtime"),
    "air-gapped": ("tinyward.trust.device", "tinyward.readout.airgapped",
                   "tinyward.readout.screen", "tinyward.app.source"),
    # The sandbox's own process sets up Landlock and seccomp before it loads the
    # application: that wrapper is trusted too (the application itself is not).
    "sandbox wrapper": ("tinyward.app._child",),
}

_THIRD_PARTY = ("cryptography", "cbor2", "numpy", "rich", "segno", "click", "sklearn",
                "aiohttp", "sqlite3", "ssl", "tuf", "securesystemslib")

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({
    "tinyward": sorted(m for m in sys.modules if m == "tinyward" or m.startswith("tinyward.")),
    "third_party": sorted(m for m in %r if m in sys.modules),
}))
"""

_NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
             tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}


def count_lines(source: str) -> int:
    """Lines of ``source`` that hold code: not blank, not only a comment.

    A string spanning several lines (a docstring) counts each of its non-blank lines.
    """
    text_lines = source.splitlines()
    rows: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _NOT_CODE:
            rows.update(range(token.start[0], token.end[0] + 1))
    return sum(1 for row in rows if row <= len(text_lines) and text_lines[row - 1].strip())


def _path(module: str) -> Path | None:
    parts = module.split(".")[1:]
    base = _ROOT.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _lines(module: str) -> int:
    path = _path(module)
    return 0 if path is None else count_lines(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Process:
    """The tinyward modules of one kind of device process, with their line counts."""

    kind: str
    entry_points: tuple[str, ...]
    imported: dict[str, int]
    reachable: dict[str, int]
    third_party: tuple[str, ...] = ()

    @property
    def imported_lines(self) -> int:
        return sum(self.imported.values())

    @property
    def reachable_lines(self) -> int:
        return sum(self.reachable.values())


@dataclass(frozen=True)
class Tcb:
    """The core and each kind of device process (see the module docstring)."""

    core: dict[str, int]
    processes: list[Process] = field(default_factory=list)

    @property
    def core_lines(self) -> int:
        return sum(self.core.values())

    def to_json(self) -> dict[str, object]:
        return {
            "counting": "non-blank, non-comment lines (docstrings included)",
            "core": {"lines": self.core_lines, "modules": self.core},
            "processes": {
                p.kind: {
                    "entry_points": list(p.entry_points),
                    "imported": {"lines": p.imported_lines, "modules": p.imported},
                    "reachable": {"lines": p.reachable_lines, "modules": p.reachable},
                    "third_party": list(p.third_party),
                }
                for p in self.processes
            },
        }


def core_modules() -> dict[str, int]:
    """Every module of ``tinyward.trust`` and its lines."""
    found = {}
    for path in sorted((_ROOT / "trust").glob("*.py")):
        name = "tinyward.trust" if path.stem == "__init__" else f"tinyward.trust.{path.stem}"
        found[name] = count_lines(path.read_text(encoding="utf-8"))
    return found


def imported_modules(
    entry_points: tuple[str, ...], timeout: float = 60.0
) -> tuple[list[str], list[str]]:
    """The tinyward modules (and the known third-party packages) that a fresh interpreter
    holds after importing ``entry_points``.

    Raises:
        RuntimeError: the probe failed (an entry point does not import).
    """
    # Fixed argv: this interpreter, our probe, module names from our own table.
    done = subprocess.run([sys.executable, "-c", _PROBE % (_THIRD_PARTY,), *entry_points],  # noqa: S603
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"importing {', '.join(entry_points)} failed: "
                           f"{done.stderr.strip().splitlines()[-1:]}")
    found = json.loads(done.stdout)
    return list(found["tinyward"]), list(found["third_party"])


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never run)."""
    found: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _imports_of(module: str) -> set[str]:
    path = _path(module)
    if path is None:
        return set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    modules: set[str] = set()
    for name in names:
        if name != "tinyward" and not name.startswith("tinyward."):
            continue
        parts = name.split(".")
        # A module's parents are imported with it; ``from a import b`` names a module or
        # an attribute, and only modules have a file.
        modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1)
                       if _path(".".join(parts[:i])) is not None)
    return modules


def reachable_modules(entry_points: tuple[str, ...]) -> list[str]:
    """Every tinyward module reachable from ``entry_points`` through any import."""
    seen: set[str] = set()
    todo = [m for e in entry_points for m in _imports_of(e) | {e} | _parents(e)]
    while todo:
        module = todo.pop()
        if module in seen or _path(module) is None:
            continue
        seen.add(module)
        todo.extend(_imports_of(module) - seen)
    return sorted(seen)


def package_of(module: str) -> str:
    """The tinyward subpackage a module belongs to (``"(top)"`` for top-level modules)."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (_ROOT / parts[1]).is_dir()):
        return parts[1]
    return "(top)"


def _parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def measure(entry_points: dict[str, tuple[str, ...]] | None = None) -> Tcb:
    """Count the core and every kind of device process (one subprocess each)."""
    processes = []
    for kind, entries in (entry_points or ENTRY_POINTS).items():
        imported, third_party = imported_modules(entries)
        processes.append(Process(
            kind, entries,
            imported={m: _lines(m) for m in imported},
            reachable={m: _lines(m) for m in reachable_modules(entries)},
            third_party=tuple(third_party),
        ))
    return Tcb(core_modules(), processes)

