"""After an attack in the lab, the watching device's incident is on its dashboard page.

Issue 15's dashboard check, lab half: a lab with on-device detection (quick training: for
wiring), the dashboard password set with `tinyward fleet dashboard-password`, an nmap SYN
scan from the LAN attacker at the device, then Debian's chromium driven by Playwright logs
in to the lab fleet's admin listener and finds, on the device's page, the incident that a
report received after the scan started carried (its evidence ``report seq N`` names the
report). Screenshot at 1280×800 in ``build/screenshots/lab-device-1280x800.png`` (or
``$TINYWARD_SCREENSHOTS``).

The browser runs inside the lab's fleet namespace (the lab has no link to this host):
Playwright starts chromium through a two-line wrapper, ``ip netns exec NS chromium "$@"``;
it still talks to it over its pipe. TLS as tests/fleet/dashboard/test_browser.py: chromium
accepts exactly the lab fleet's server key (``--ignore-certificate-errors-spki-list``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import needs
from tinyward.lab.testbed.lab import Lab
from tinyward.lab.testbed.plan import make_plan
from tinyward.lab.testbed.tools import PROFILES, attack_steps, missing_tools

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - needs() below says what is missing
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "lab operator's long password"
ROOT_DIR = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("TINYWARD_SCREENSHOTS", ROOT_DIR / "build" / "screenshots"))
PREFIX = "twdash"
#: How long the test waits for the device's incident to reach the fleet (bounded).
INCIDENT_WAIT = 90.0

pytestmark = [
    needs(os.geteuid() == 0 and shutil.which("ip") is not None,
          "the lab needs root and iproute2 (network namespaces)"),
    needs(not missing_tools(), f"the lab's tools: {', '.join(missing_tools())} "
          "(scripts/install-system-deps.sh)"),
    needs(sync_playwright is not None, "needs the playwright package (pip install playwright)"),
    needs(shutil.which(CHROMIUM) is not None,
          f"needs Debian's chromium at {CHROMIUM} (scripts/install-system-deps.sh)"),
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    testbed = Lab(make_plan(1, PREFIX), tmp_path / "lab", train_seconds=PROFILES["quick"].train)
    try:
        testbed.up()
        yield testbed
    finally:
        testbed.down()


def _spki_sha256(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def _detector_incidents(lab: Lab) -> list[tuple[int, str, str]]:
    """(fleet receive time, kind, evidence) of device-1's detector incidents."""
    from tinyward.fleet.store import MAX_INCIDENTS_LISTED, open_store

    store = open_store(f"sqlite:///{lab.folder / 'fleet' / 'reports.db'}")
    try:
        rows = store.incidents(lab.device_ids["device-1"], limit=MAX_INCIDENTS_LISTED)
    finally:
        store.close()
    return [(r.at, r.kind, r.evidence) for r in rows if r.kind.startswith(("net.", "sensor."))]


def test_lab_attack_incident_appears_on_the_devices_dashboard_page(lab: Lab,
                                                                   tmp_path: Path) -> None:
    assert lab.detection and lab.dashboard, "this build has on-device detection and a dashboard"
    # The operator sets the password (the lab's own was random and never shown).
    done = subprocess.run([sys.executable, "-m", "tinyward", "fleet", "dashboard-password",
                           str(lab.folder / "fleet")], capture_output=True, text=True,
                          env={**os.environ, "TINYWARD_DASHBOARD_PASSWORD": PASSWORD},
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr

    # The attack: nmap's SYN scan from the device's LAN at the device (and the fleet).
    time.sleep(16.0)  # the watcher's warm-up (DEFAULT_NET_WARMUP) ends
    before = set(_detector_incidents(lab))
    started = time.time()
    procs = [lab.start(step.vantage, list(step.argv), f"attack-{step.vantage}")
             for step in attack_steps(lab.plan, PROFILES["quick"], "nmap-syn", tmp_path)]
    for proc in procs:
        proc.wait(timeout=60)
    new: list[tuple[int, str, str]] = []
    deadline = time.monotonic() + INCIDENT_WAIT
    while not new and time.monotonic() < deadline:
        new = [i for i in _detector_incidents(lab)
               if i not in before and i[0] >= int(started)]
        time.sleep(0.5)
    assert new, f"no incident from the device within {INCIDENT_WAIT:g} s of the scan"
    _at, kind, evidence = min(new)
    assert evidence.startswith("report seq ")

    wrapper = tmp_path / "chromium-in-lab"
    fleet_ns = lab.plan.host("fleet").netns
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {fleet_ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o700)
    spki = _spki_sha256(lab.folder / "fleet" / "ca" / "server.cert.pem")
    SHOTS.mkdir(parents=True, exist_ok=True)
    device_id = lab.device_ids["device-1"]
    assert sync_playwright is not None
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(wrapper), headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  f"--ignore-certificate-errors-spki-list={spki}"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            answer = page.goto(f"{lab.admin_url}/dashboard/devices/{device_id}")
            assert answer is not None and answer.status == 401  # only the login page
            assert device_id[:12] not in page.content()
            page.goto(f"{lab.admin_url}/dashboard/login")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Devices")).to_be_visible()
            page.get_by_role("link", name=device_id[:12] + "…").click()
            incidents = page.locator("#incidents")
            expect(incidents).to_contain_text(kind)
            expect(incidents).to_contain_text(evidence)
            shot = SHOTS / "lab-device-1280x800.png"
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert shot.stat().st_size > 5000
