"""Load the example sensors' modules from examples/<name>/ (they are scripts, not a package)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import tomllib
from types import ModuleType
from typing import Any

from tests.conftest import needs_shared

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SKAB = EXAMPLES.parents[1] / "shared" / "data" / "skab"


def load(example: str, module: str) -> ModuleType:
    """Import examples/<example>/<module>.py under a name unique to the example.

    The example's folder goes on sys.path so its own imports (``import skab``) resolve.
    """
    folder = EXAMPLES / example
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    name = f"_example_{example}_{module}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, folder / f"{module}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def manifest(example: str) -> dict[str, Any]:
    with (EXAMPLES / example / "sensor.toml").open("rb") as handle:
        return tomllib.load(handle)


def entry(example: str) -> Any:
    """Build the app the way the sandbox does: module file + callable + model paths from the
    manifest."""
    spec = manifest(example)["app"]
    module_name, _, attr = spec["entry"].partition(":")
    module = load(example, module_name)
    return getattr(module, attr)([EXAMPLES / example / m for m in spec["models"]])


def check_result(result: dict[str, Any], fields: dict[str, Any]) -> None:
    """Assert one result obeys the manifest's output contract."""
    assert set(result) == set(fields), result
    for name, value in result.items():
        field = fields[name]
        if field["type"] == "int":
            assert isinstance(value, int) and not isinstance(value, bool)
            assert field["min"] <= value <= field["max"]
        elif field["type"] == "enum":
            assert value in field["values"]
        elif field["type"] == "bool":
            assert isinstance(value, bool)
        else:  # float
            assert isinstance(value, float) and field["min"] <= value <= field["max"]


requires_skab = needs_shared("data", "skab")
