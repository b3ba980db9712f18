"""Lazy package exports: ``from tinyward.trust import Device`` without importing the whole
package on ``import tinyward.trust``.

Every CLI command and every server worker imports some tinyward package; loading all of a
package's modules (and scikit-learn, matplotlib, SQLite behind them) for one name would
slow each of them. A package lists its public names and the module each comes from; a
name's module is imported on first use (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(
    namespace: dict[str, Any], table: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the package whose ``globals()`` is ``namespace``;
    ``table`` maps each submodule (relative name) to the public names it provides."""
    package = namespace["__name__"]
    where = {name: module for module, names in table.items() for name in names}

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(where))

    return getattr_, dir_
