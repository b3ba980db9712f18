"""Small formatting helpers for what a person reads (never a Python repr)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def result_text(result: Mapping[str, Any]) -> str:
    """One result as ``name=value, name=value`` (floats to 4 significant digits)."""
    return ", ".join(f"{key}={_value(value)}" for key, value in result.items()) or "(empty)"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bytes):
        return value.hex()
    text = str(value)
    if not text.isprintable():  # the app chose it: no terminal escapes on the screen
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return text
