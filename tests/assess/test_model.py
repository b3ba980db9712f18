"""The requirements model: the packaged data is consistent, coverage never over-claims,
and malformed data is refused with a reason."""

from __future__ import annotations

import contextlib
import json
import re
from importlib import resources

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.assess.model import COVERAGE_KINDS, BadRequirements, load_model
from tinyward.cli.main import cli

DATA = resources.files("tinyward.assess") / "data"
REQUIREMENTS = (DATA / "requirements.toml").read_text(encoding="utf-8")
PROVISIONS = (DATA / "en303645.toml").read_text(encoding="utf-8")


def test_packaged_model_loads_with_every_provision_of_clauses_5_and_6() -> None:
    model = load_model()
    ids = [p.id for p in model.provisions]
    assert len(ids) == 67 and ids[0] == "5.1-1" and ids[-1] == "6-5"
    # Every section of EN 303 645 clause 5 (5.1 … 5.13) and clause 6 is there.
    assert {i.rsplit("-", 1)[0] for i in ids} == {f"5.{n}" for n in range(1, 14)} | {"6"}


def test_tiers_are_cumulative_and_hold_what_the_buyer_was_promised() -> None:
    model = load_model()
    tier1 = {r.id for r in model.for_tier(1)}
    tier2 = {r.id for r in model.for_tier(2)}
    tier3 = {r.id for r in model.for_tier(3)}
    assert tier1 < tier2 < tier3 == {r.id for r in model.requirements}
    # Tier 1: no default credentials, unique identity, encryption, updatable, a disclosure
    # contact, a support period.
    assert tier1 == {"I-CRED-1", "I-ID-1", "C-COMM-1", "I-UPD-1", "G-VDP-1", "G-SUP-1"}
    probes = {r.probe for r in model.for_tier(2)}
    assert {"port-scan", "pin-mitm", "lockout-restart", "update-tamper", "hostile-app",
            "preauth-exhaustion", "failure-reporting"} <= probes
    assert {"leakage", "traffic-analysis", "attestation", "on-device-detection",
            "air-gapped"} <= {r.probe for r in model.for_tier(3)} - probes


def test_coverage_counts_a_probe_only_when_it_exists() -> None:
    model = load_model()
    nothing = {row.provision.id: row.kind for row in model.coverage({})}
    assert "live" not in nothing.values() and "static" not in nothing.values()
    assert nothing["5.2-1"] == "declaration"  # read from the target description
    assert nothing["5.6-1"] == "planned"
    with_scan = {row.provision.id: row.kind for row in model.coverage({"port-scan": "live"})}
    assert with_scan["5.6-1"] == "live"
    # A provision takes the strongest evidence among its requirements.
    assert {row.provision.id: row.kind
            for row in model.coverage({"air-gapped": "static"})}["5.6-1"] == "static"
    assert {row.provision.id: row.kind for row in model.coverage(
        {"air-gapped": "static", "port-scan": "live"})}["5.6-1"] == "live"
    # A name registered with a kind that is not evidence does not count.
    assert {row.provision.id: row.kind
            for row in model.coverage({"port-scan": "maybe"})}["5.6-1"] == "planned"


def _with(old: str, new: str) -> str:
    assert old in REQUIREMENTS
    return REQUIREMENTS.replace(old, new, 1)


@pytest.mark.parametrize(("text", "message"), [
    (_with('id = "I-ID-1"', 'id = "I-CRED-1"'), "defined twice"),
    (_with('asset = "keys"', 'asset = "kyes"'), "unknown asset 'kyes'"),
    (_with('en303645 = ["5.1-1", "5.1-2"]', 'en303645 = ["5.1-9"]'),
     "5.1-9 is not an EN 303 645 provision"),
    (_with('en303645 = ["5.1-1", "5.1-2"]', 'en303645 = ["five"]'), "malformed 'five'"),
    (_with('evidence = "live"', 'evidence = "hearsay"'), "evidence must be one of"),
    (_with('nistir8425 = ["Interface Access Control"]', 'nistir8425 = ["Vibes"]'),
     "unknown 'Vibes'"),
    (_with('cwe = [1392, 798, 521]', 'cwe = ["CWE-1392"]'), "list of CWE numbers"),
    (_with('format = "tinyward-requirements/1"', 'format = "x"'), "format is not"),
    (_with('tier = 1\n', 'tier = 7\n'), "unknown tier 7"),
    (REQUIREMENTS + "\n[[requirement]\n", "not valid TOML"),
])
def test_malformed_model_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(BadRequirements, match=re.escape(message)):
        load_model(text, PROVISIONS)


def test_a_tier_without_requirements_is_refused() -> None:
    text = REQUIREMENTS + '\n[[tier]]\nlevel = 4\nname = "x"\nsummary = "y"\n'
    with pytest.raises(BadRequirements, match="tier 4 has no requirement"):
        load_model(text, PROVISIONS)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_property_any_text_loads_or_is_refused_cleanly(text: str) -> None:
    for args in ((text, PROVISIONS), (REQUIREMENTS, text), (REQUIREMENTS + "\n" + text,
                                                            PROVISIONS)):
        with contextlib.suppress(BadRequirements):
            load_model(*args)


def test_cli_prints_the_coverage_share_and_json_agrees() -> None:
    runner = CliRunner()
    text = runner.invoke(cli, ["assess", "requirements"])
    assert text.exit_code == 0, text.output
    assert re.search(r"live probe: +\d+ of 67 provisions", text.output)
    got = runner.invoke(cli, ["assess", "requirements", "--json", "--tier", "1"])
    document = json.loads(got.output)
    assert {r["tier"] for r in document["requirements"]} == {1}
    assert sum(document["counts"].values()) == document["provisions"] == 67
    assert set(document["counts"]) == set(COVERAGE_KINDS)
