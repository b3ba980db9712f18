"""Pages from templates: jinja2 with autoescaping on for every template, always.

Everything a device chose (result names and values, incident kinds, versions, evidence)
reaches a page only through ``{{ … }}``, which escapes it; no template marks anything
``|safe``. ``unsafe_no_autoescape`` exists only so a test can show the attack that the
escaping stops.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2


def make_environment(*, unsafe_no_autoescape: bool = False) -> jinja2.Environment:
    options: dict[str, Any] = {
        "loader": jinja2.PackageLoader("tinyward.fleet.dashboard", "templates"),
        "undefined": jinja2.StrictUndefined,  # a misspelt name is an error, not an empty cell
        "trim_blocks": True, "lstrip_blocks": True,
    }
    if unsafe_no_autoescape:  # tests only: shows what the escaping stops
        env = jinja2.Environment(autoescape=False, **options)  # noqa: S701
    else:
        env = jinja2.Environment(autoescape=True, **options)
    env.filters["when"] = when
    env.filters["age"] = age
    env.filters["short"] = short_id
    env.filters["value"] = value_text
    return env


def when(t: float | None) -> str:
    """Unix seconds as UTC ``YYYY-MM-DD HH:MM:SSZ`` (``—`` for none)."""
    if t is None:
        return "—"
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(t)


def age(t: float | None, now: float | None = None) -> str:
    """How long ago: ``42 s``, ``5 min``, ``3 h``, ``2 d`` (``never`` for none)."""
    if t is None:
        return "never"
    seconds = max(0, int((time.time() if now is None else now) - t))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def short_id(device_id: str) -> str:
    return device_id[:12] + "…"


def value_text(value: object) -> str:
    """A result value as text (escaped later by the template, like every other text)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "null"
    return str(value)


def render(env: jinja2.Environment, template: str, context: Mapping[str, Any]) -> str:
    return env.get_template(template).render(**context)
