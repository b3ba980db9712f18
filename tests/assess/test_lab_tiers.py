"""Issue 16's lab check: a tinyward device in the lab, assessed from the LAN attacker's
namespace, and the same device with one protection switched off at a time dropping to the
tier the model gives, with the failing requirement named.

One lab for the module (`tinyward.lab.assesslab.LabDevice`: the real fleet server, the real
`device run` processes). The full device gets every probe; each weakening re-runs the
probes whose input it changes (`Weakening.probes`: the network probes for the debug port,
pin-mitm for the pin, traffic-analysis for shaping and the steering application; the
network probes again for the fleet's listener with the client certificate optional) and keeps
the full device's evidence for the rest, so each variant differs from the full device by
exactly one protection. The tier of a variant is then computed by the model's own rule
(`evidence.evaluate`) from those verdicts.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import needs
from tinyward.assess.evidence import Evidence, evaluate
from tinyward.assess.model import load_model
from tinyward.lab.testbed.tools import missing_tools

ROOT = os.geteuid() == 0 and shutil.which("ip") is not None
pytestmark = [pytest.mark.slow,
              # The module's one lab and full assessment (traffic: two 60 s phases and
              # their classifiers) run in its first test: more than the default 600 s
              # on a loaded machine.
              pytest.mark.timeout(1500),
              needs(ROOT, "the lab needs root and iproute2 (network namespaces)"),
              needs(not missing_tools(), f"the lab's tools: {', '.join(missing_tools())} "
                    "(scripts/install-system-deps.sh)"),
              needs(shutil.which("nmap") is not None, "nmap (scripts/install-system-deps.sh)")]

#: weakening -> the requirement that must fail (the model's tier for it follows).
EXPECTED = {
    "debug-port": "C-SURF-1",      # tier 2: no listening ports
    "unpinned": "I-PIN-1",         # tier 2: the server is pinned
    "default-pin": "I-CRED-1",     # tier 1: no universal default credentials
    "unshaped": "C-TRAFFIC-1",     # tier 3: traffic says nothing
    "steering-app": "C-TRAFFIC-1",  # tier 3: ... even steered by the application
    "cert-optional": "A-PREAUTH-1",  # tier 2: certificate-less clients refused in the handshake
}


def tier_of(verdicts: dict[str, dict[str, Any]]) -> int:
    model = load_model()
    evidence = {i: Evidence(i, v["verdict"], "live", v["probe"], v["text"])
                for i, v in verdicts.items()}
    return evaluate(model, evidence).level


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tinyward.lab.assesslab import LabDevice

    with LabDevice(tmp_path_factory.mktemp("assesslab"), prefix="twat") as running:
        yield running


@pytest.fixture(scope="module")
def full(lab: Any) -> dict[str, dict[str, Any]]:
    verdicts: dict[str, dict[str, Any]] = lab.assess()["verdicts"]
    return verdicts


EVENTS, APP = "random events", "application steering its latency"


def phase(text: str, name: str) -> tuple[float, float]:
    """A traffic phase's AUC and the line above which it fails, from the evidence."""
    found = re.search(re.escape(name) + r": AUC ([0-9.]+) \(chance [0-9.]+-[0-9.]+, \d+ "
                      r"intervals of [0-9.]+ s; fails above ([0-9.]+)\)", text)
    assert found, text
    return float(found.group(1)), float(found.group(2))


def test_the_full_device_passes_every_requirement_a_weakening_breaks(full) -> None:
    for requirement in (set(EXPECTED.values()) - {"C-TRAFFIC-1"}) | {
            "C-COMM-1", "A-PREAUTH-1", "I-AUTH-1", "I-REPLAY-1", "I-UPD-1", "I-ATTEST-1"}:
        assert full[requirement]["verdict"] == "pass", (requirement, full[requirement])
    # Every tier-1 and tier-2 requirement, live (update-tamper, failure-reporting and
    # outage-recovery included).
    assert tier_of(full) >= 2, {i: v for i, v in full.items() if v["verdict"] != "pass"}
    # No listener at all, on every TCP port; its only traffic is the TLS 1.3 uplink.
    assert "all 65535 TCP ports" in full["C-SURF-1"]["text"]
    assert "uplink" in full["C-COMM-1"]["text"] and "TLS 1.3 only" in full["C-COMM-1"]["text"]
    # Shaping hides the events. The application phase is measured and decided by the
    # rule, but not asserted: the busy-device leak (docs/link.md, open) lets the app's CPU
    # use reach the send times on this shared machine, and the probe says so when it does.
    traffic = full["C-TRAFFIC-1"]["text"]
    auc, line = phase(traffic, EVENTS)
    assert auc <= line, traffic  # never a fail (0.558 once: inconclusive, not a leak)
    phase(traffic, APP)
    print("full device, C-TRAFFIC-1:", full["C-TRAFFIC-1"]["verdict"], traffic)


def test_the_full_device_is_described_to_the_tier_3_probes(full) -> None:
    """Leakage (the lab application's manifest), on-device detection (device-1 watching
    its own traffic, its reports in the fleet's store) and the air-gapped mode (the lent
    unit run air-gapped, its readout enrolled) are tested live, and pass."""
    for requirement in ("C-LEAK-1", "A-DETECT-1", "C-AIRGAP-1", "I-ATTEST-1"):
        assert full[requirement]["verdict"] == "pass", (requirement, full[requirement])
        print(requirement, full[requirement]["text"])  # the figures (pytest -s)
    assert "declared bound 657.9 bits/min" in full["C-LEAK-1"]["text"]
    assert "net." in full["A-DETECT-1"]["text"], full["A-DETECT-1"]
    assert "'air-gapped'" in full["C-AIRGAP-1"]["text"], full["C-AIRGAP-1"]
    # Nothing but traffic-analysis (the xfail below) stands between it and Tier 3.
    blocking = {i: v["verdict"] for i, v in full.items() if v["verdict"] != "pass"}
    assert set(blocking) <= {"C-TRAFFIC-1"}, blocking


# Not strict: the leak is intermittent on this shared machine (the application phase
# failed at 0.799 in one run and passed at 0.531 in the next), so a run may reach Tier 3.
# What is strict is the test above: nothing else blocks it.
@pytest.mark.xfail(strict=False, reason="C-TRAFFIC-1 only: the busy-device leak (docs/link.md, "
                   "open; h-busyleak) fails the application phase when the machine is busy")
def test_the_full_device_reaches_tier_3(full) -> None:
    blocking = {i: v["verdict"] for i, v in full.items() if v["verdict"] != "pass"}
    assert tier_of(full) == 3, blocking


@pytest.mark.parametrize("name", list(EXPECTED))
def test_one_protection_off_drops_to_the_right_tier_naming_it(lab, full, name: str) -> None:
    from tinyward.lab.assesslab import WEAKENINGS

    weakening = WEAKENINGS[name]
    found = lab.assess(weakening, name=name)["verdicts"]
    ran = {i for i, v in found.items() if v["probe"] in weakening.probes}
    requirement = EXPECTED[name]
    assert found[requirement]["verdict"] == "fail", found[requirement]
    if requirement == "C-TRAFFIC-1":
        # The phase this weakening opens fails beyond doubt, and tells the eavesdropper
        # more than the same phase of the full device did.
        which = EVENTS if name == "unshaped" else APP
        auc, line = phase(found[requirement]["text"], which)
        assert auc > line, found[requirement]["text"]
        assert auc > phase(full[requirement]["text"], which)[0], (found, full[requirement])
    else:
        # Only that requirement changed among those its probes decide (the variant is the
        # full device with one protection off, not a different device).
        changed = {i for i in ran if found[i]["verdict"] != full[i]["verdict"]}
        assert changed == {requirement}, {i: found[i] for i in changed}
    verdicts = {**full, **{i: found[i] for i in ran}}
    level = load_model().requirement(requirement).tier - 1
    assert tier_of(verdicts) == min(tier_of(full), level)
    print(name, requirement, found[requirement]["text"])  # the evidence (pytest -s)
