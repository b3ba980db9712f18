"""The dashboard in a real browser: Playwright driving Debian's chromium.

One story, as an operator lives it: an unauthenticated visit gets only the login page;
wrong passwords lock the login as the readout's do; a real simulated device reports an
incident through the real device listener and it appears on the device's page; revoking
it from the page makes its next report refused. Screenshots at 1280×800 and on a phone
are saved in ``build/screenshots/`` (or ``$TINYWARD_SCREENSHOTS``).

TLS: the admin listener presents the fleet's own server certificate, issued by the
fleet's CA, which chromium's fresh profile does not know. Rather than ignoring certificate
errors, chromium is told to accept exactly that certificate's public key
(``--ignore-certificate-errors-spki-list`` with its SHA-256, which chromium honours only
with a user-data-dir: Playwright's launch makes a fresh temporary one): any other
certificate still fails.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import needs
from tests.fleet.serverkit import Running, start_running
from tinyward.fleet.dashboard.auth import LoginGate
from tinyward.trust.lockout import LockoutPolicy

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - needs() below says what is missing
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "operator's long password"
ROOT = Path(__file__).resolve().parents[3]
SHOTS = Path(os.environ.get("TINYWARD_SCREENSHOTS", ROOT / "build" / "screenshots"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

pytestmark = [
    needs(sync_playwright is not None, "needs the playwright package (pip install playwright)"),
    needs(shutil.which(CHROMIUM) is not None,
          f"needs Debian's chromium at {CHROMIUM} (scripts/install-system-deps.sh)"),
]


def _spki_sha256(running: Running) -> str:
    cert = x509.load_pem_x509_certificate(running.fleet.server_certificate_path.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    state = start_running(tmp_path, ("sensor", "neighbour"))
    yield state
    state.server.stop()


@pytest.fixture
def browser(running: Running) -> Iterator[Browser]:
    # launch() gives chromium a fresh temporary --user-data-dir of its own (and refuses one
    # passed in args), so every run starts from an empty profile.
    assert sync_playwright is not None
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  f"--ignore-certificate-errors-spki-list={_spki_sha256(running)}"])
        try:
            yield browser
        finally:
            browser.close()


def _no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"


def test_dashboard_in_chromium(running: Running, browser: Browser) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    base = f"https://127.0.0.1:{running.admin_port}"
    sensor = running.devices["sensor"].device_id
    gate = LoginGate(running.fleet.directory)
    gate.set_password(PASSWORD, LockoutPolicy(free_attempts=2, base_delay=900, max_delay=900))

    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    problems: list[str] = []  # CSP violations and script errors show up on the console

    def console(message: ConsoleMessage) -> None:
        # The 401/403/429 answers this story provokes are logged as "Failed to load
        # resource": expected. Anything else (a CSP refusal, a script error) is not.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))

    # 1. Unauthenticated: only the login page, whatever is asked for.
    for path in ("/dashboard/", f"/dashboard/devices/{sensor}", "/dashboard/incidents"):
        answer = page.goto(base + path)
        assert answer is not None and answer.status == 401
        expect(page.get_by_label("Password")).to_be_visible()
        assert sensor[:12] not in page.content()
    page.screenshot(path=str(SHOTS / "login-1280x800.png"))

    # 2. Wrong passwords lock the login, then even the right one is not checked.
    for guess in ("guess one, wrong", "guess two, wrong"):
        page.get_by_label("Password").fill(guess)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("Wrong password.")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Too many wrong passwords")
    page.screenshot(path=str(SHOTS / "locked-out-1280x800.png"))
    assert page.goto(base + "/dashboard/").status == 401  # still no session
    assert gate.lockout().failures == 2

    # 3. A real device reports an incident through the real device listener.
    status, _ = running.post("sensor", running.report(
        "sensor", results=({"label": "<script>document.title='pwned'</script>",
                            "score": 0.97},), incidents={"net.anomaly": 4}))
    assert status == 200
    assert running.post("neighbour", running.report("neighbour"))[0] == 200

    # The owner sets the password again (as `device readout-enrol` does for a readout),
    # which ends the lockout, and logs in.
    gate.set_password(PASSWORD)
    page.goto(base + "/dashboard/login")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SHOTS / "devices-1280x800.png"), full_page=True)

    # 4. The incident on the device's page; the device's markup shown as text, not run.
    page.get_by_role("link", name=sensor[:12] + "…").click()
    incidents = page.locator("#incidents")
    expect(incidents).to_contain_text("net.anomaly")
    expect(incidents).to_contain_text("report seq 1")
    expect(page.locator("#reports")).to_contain_text("<script>document.title='pwned'</script>")
    assert page.title() != "pwned"
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SHOTS / "device-1280x800.png"), full_page=True)

    # 5. On a phone (the same session): one card per row, nothing wider than the screen.
    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                device_scale_factor=2, storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(base + "/dashboard/")
    expect(small.get_by_role("heading", name="Devices")).to_be_visible()
    _no_horizontal_scroll(small)
    small.screenshot(path=str(SHOTS / "devices-phone.png"), full_page=True)
    small.goto(base + f"/dashboard/devices/{sensor}")
    _no_horizontal_scroll(small)
    small.screenshot(path=str(SHOTS / "device-phone.png"), full_page=True)
    phone.close()

    # 6. Revoke from the page; the device's next report is refused.
    page.get_by_label("revoke for good").check()
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("Revoked")
    expect(page.locator(".badge").first).to_have_text("revoked")
    page.screenshot(path=str(SHOTS / "revoked-1280x800.png"), full_page=True)
    assert running.fleet.device(sensor).revoked
    status, body = running.post("sensor", running.report("sensor"))
    assert status == 403 and body["error"] == "revoked"
    assert running.post("neighbour", running.report("neighbour"))[0] == 200

    assert problems == []
    context.close()
    for name in ("login-1280x800", "locked-out-1280x800", "devices-1280x800",
                 "device-1280x800", "devices-phone", "device-phone", "revoked-1280x800"):
        assert (SHOTS / f"{name}.png").stat().st_size > 5000, name
