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


def missing_tests(text: str) -> list[str]:
    """``file::function`` for each test the text names that does not exist under tests/."""
    missing = []
    for path, function in named_tests(text):
        source = ROOT / "tests" / path
        if not source.is_file() or not re.search(
                rf"^\s*(async )?def {function}\(", source.read_text(encoding="utf-8"), re.M):
            missing.append(f"{path}::{function}")
    return missing


def test_every_test_the_threat_model_names_exists() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8")
    assert len(named_tests(text)) > 50, "the table names fewer tests than it did when written"
    missing = missing_tests(text)
    assert not missing, f"docs/threat-model.md names tests that do not exist: {missing}"


def test_the_checker_notices_a_missing_test() -> None:
    text = ("`trust/test_storage.py::test_roundtrip_and_versions`, `…::no_such_test` and "
            "`no/such_file.py::test_x`")
    assert named_tests(text) == [("trust/test_storage.py", "test_roundtrip_and_versions"),
                                 ("trust/test_storage.py", "no_such_test"),
                                 ("no/such_file.py", "test_x")]
    assert missing_tests(text) == ["trust/test_storage.py::no_such_test",
                                   "no/such_file.py::test_x"]
