"""Both example manifests parse and have the documented shape; their files exist."""

from __future__ import annotations

import math

import pytest

from tests.examples.conftest import EXAMPLES, load, manifest

EXAMPLE_NAMES = ("people_counter", "pump_monitor")
DTYPES = {"int8", "uint8", "int16", "uint16", "int32", "float32", "float64"}


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_manifest_shape(name: str) -> None:
    m = manifest(name)
    assert set(m) == {"app", "input", "output"}
    app = m["app"]
    assert app["name"] == name
    assert [int(p) for p in app["version"].split(".")] and len(app["version"].split(".")) == 3
    module, sep, attr = app["entry"].partition(":")
    assert sep and module.isidentifier() and attr.isidentifier()
    assert (EXAMPLES / name / f"{module}.py").is_file()
    assert callable(getattr(load(name, module), attr))
    assert app["models"] and all((EXAMPLES / name / p).is_file() for p in app["models"])
    inp = m["input"]
    assert inp["dtype"] in DTYPES
    assert inp["sample_rate_hz"] > 0
    assert len(inp["frame_shape"]) == 2 and inp["frame_shape"][1] == len(inp["channels"])
    assert len(set(inp["channels"])) == len(inp["channels"])
    out = m["output"]
    assert isinstance(out["max_results_per_minute"], int) and out["max_results_per_minute"] > 0
    # The apps emit at most one result per frame: the declared rate must allow that.
    frames_per_minute = 60 * inp["sample_rate_hz"] / inp["frame_shape"][0]
    assert out["max_results_per_minute"] >= frames_per_minute
    assert out["fields"]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_contract_is_finite(name: str) -> None:
    """Each field has a finite number of values, so the leakage bound is finite."""
    bits = 0.0
    for field in manifest(name)["output"]["fields"].values():
        if field["type"] == "int":
            assert field["min"] <= field["max"]
            bits += math.log2(field["max"] - field["min"] + 1)
        elif field["type"] == "enum":
            assert len(set(field["values"])) == len(field["values"]) >= 2
            bits += math.log2(len(field["values"]))
        else:
            pytest.fail(f"unexpected field type {field['type']}")
    assert 0 < bits < 16


def test_field_names_match_apps() -> None:
    assert set(manifest("people_counter")["output"]["fields"]) == {"count"}
    pump = manifest("pump_monitor")["output"]["fields"]
    assert pump == {"state": {"type": "enum", "values": ["normal", "anomaly"]}}


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_the_sandbox_parser_accepts_the_manifest(name: str) -> None:
    from tinyward.app.contract import leakage_bound
    from tinyward.app.manifest import load_manifest

    parsed = load_manifest(EXAMPLES / name / "sensor.toml")
    raw = manifest(name)
    assert parsed.name == name
    assert parsed.input.frame_shape == tuple(raw["input"]["frame_shape"])
    assert [f.name for f in parsed.contract.fields] == list(raw["output"]["fields"])
    bound = leakage_bound(parsed.contract)
    assert 0 < bound.bits_per_result < 16 and bound.results_per_minute == 60
