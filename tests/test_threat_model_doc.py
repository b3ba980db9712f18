"""docs/threat-model.md names the test behind every defence: each name must exist.

A renamed or deleted test would otherwise leave the auditor's table pointing at nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"`([a-z0-9_/]+\.py)::([A-Za-z0-9_]+)`|`…::([A-Za-z0-9_]+)`")


def named_tests(text: str) -> list[tuple[str, str]]:
    """(file, function) for each test the document names; `…::f` reuses the last file."""
    found: list[tuple[str, str]] = []
    current = ""
    for match in NAMED.finditer(text):
        if match.group(1):
            current, function = match.group(1), match.group(2)
        else:
            assert current, f"`…::{match.group(3)}` before any file is named"
            function = match.group(3)
        found.append((current, function))
    return found


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")
    named = named_tests(text)
    assert len(named) > 50, "the table names fewer tests than it did when written"
    missing = [
        f"{path}::{function}"
        for path, function in named
        if not (ROOT / "tests" / path).is_file()
        or not re.search(
            rf"^\s*(async )?def {function}\(", (ROOT / "tests" / path).read_text(), re.M
        )
    ]
    assert not missing, f"docs/threat-model.md names tests that do not exist: {missing}"


def test_the_checker_notices_a_missing_test() -> None:
    assert named_tests("`trust/test_storage.py::nope` and `…::also_nope`") == [
        ("trust/test_storage.py", "nope"), ("trust/test_storage.py", "also_nope")]
