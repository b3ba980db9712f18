"""Under CI=true a missing tool, kernel feature, root or data set fails; locally it skips.
And CI runs hypothesis on one fixed, stated sequence of examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import conftest

REPO = Path(__file__).resolve().parents[1]


def test_a_missing_requirement_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true and needs gcc"):
        conftest.require_or_skip("needs gcc")


def test_a_missing_requirement_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "CI", False)
    with pytest.raises(pytest.skip.Exception, match="needs gcc"):
        conftest.require_or_skip("needs gcc")


def _profile(ci: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    env["CI"] = ci
    code = ("import tests.conftest\nfrom hypothesis import settings\n"
            "s = settings.default\nprint(s.derandomize, s.database, s.max_examples)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.split()


def test_ci_runs_hypothesis_on_fixed_examples() -> None:
    assert _profile("true") == ["True", "None", "100"]
    derandomize, _database, examples = _profile("false")
    assert derandomize == "False" and examples == "100"


def test_a_needs_marker_fails_the_test_under_ci(pytester: pytest.Pytester,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a test marked with an unavailable requirement, run with CI=true."""
    pytester.makeconftest(f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
                          "from tests.conftest import pytest_configure, pytest_runtest_setup\n")
    pytester.makepyfile("from tests.conftest import needs\n"
                        "@needs(False, 'needs a tool that is not there')\n"
                        "def test_x():\n    pass\n")
    monkeypatch.setenv("CI", "true")
    assert pytester.runpytest_subprocess("-p", "no:cacheprovider").ret != 0
    monkeypatch.setenv("CI", "false")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
