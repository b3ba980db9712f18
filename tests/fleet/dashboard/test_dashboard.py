"""The dashboard over the fleet's real TLS admin listener, with real devices reporting.

Attacks are named ``test_attack_…``; each shows the refusal and that nothing changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.dashboard.webclient import WebClient
from tests.fleet.serverkit import Running, running_server
from tinyward.fleet.dashboard.auth import LoginGate
from tinyward.fleet.dashboard.render import make_environment, render
from tinyward.fleet.dashboard.views import SECURITY_HEADERS, SESSION_COOKIE
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.runner import ServerThread, admin_ssl_context, server_ssl_context
from tinyward.fleet.server import FleetServer
from tinyward.fleet.store import SQLiteStore
from tinyward.trust.lockout import LockoutPolicy
from tinyward.trust.report import UpdateStatus

PASSWORD = "correct horse battery staple"
XSS = '<script>document.title="pwned"</script>"><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from running_server(tmp_path_factory, ("a", "b", "c", "d", "e"))


def client(running: Running) -> WebClient:
    return WebClient(running.admin_port, running.anonymous_context())


def logged_in(running: Running) -> WebClient:
    LoginGate(running.fleet.directory).set_password(PASSWORD)  # also resets the lockout
    web = client(running)
    assert web.login(PASSWORD).status == 303
    return web


def audit(running: Running) -> list[dict[str, object]]:
    text = (running.fleet.directory / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_unauthenticated_requests_get_only_the_login_page(running: Running) -> None:
    LoginGate(running.fleet.directory).set_password(PASSWORD)
    device = running.devices["a"].device_id
    web = client(running)
    for path in ("/dashboard/", "/dashboard/incidents", f"/dashboard/devices/{device}"):
        page = web.get(path)
        assert page.status == 401
        assert 'action="/dashboard/login"' in page.text
        assert device not in page.text and "Devices" not in page.text
    # An action without a session does nothing.
    refused = web.request("POST", f"/dashboard/devices/{device}/revoke",
                          {"csrf": "x", "confirm": "yes"})
    assert refused.status == 401 and 'action="/dashboard/login"' in refused.text
    assert not running.fleet.device(device).revoked
    assert audit(running)[-1]["outcome"] == "login_required"


def test_login_and_every_page(running: Running) -> None:
    a, b = running.devices["a"].device_id, running.devices["b"].device_id
    status, _ = running.post("a", running.report(
        "a", results=({"label": "person", "score": 0.93},), incidents={"net.novel": 3},
        update=UpdateStatus("accepted", {"app": "1.4.2"})))
    assert status == 200
    web = logged_in(running)
    listing = web.get("/dashboard/")
    assert listing.status == 200
    row_a = listing.text[listing.text.index(a):]
    assert "app 1.4.2" in row_a and "label=person" in row_a and "net.novel 3" in row_a
    assert "valid until" in row_a
    assert f"/dashboard/devices/{b}" in listing.text and "state-never" in listing.text
    page = web.get(f"/dashboard/devices/{a}")
    assert page.status == 200 and "net.novel" in page.text and "report seq" in page.text
    assert web.get("/dashboard/incidents").status == 200
    assert web.get("/dashboard/incidents?kind=net.novel").status == 200
    assert web.get("/dashboard/devices/" + "0" * 64).status == 404
    assert web.get("/dashboard/devices/not-an-id").status == 404


def test_security_headers_on_every_dashboard_response(running: Running) -> None:
    web = logged_in(running)
    device = running.devices["a"].device_id
    answers = [web.get(p) for p in ("/", "/dashboard/", "/dashboard/incidents",
                                    f"/dashboard/devices/{device}", "/dashboard/static/style.css",
                                    "/dashboard/devices/" + "0" * 64)]
    answers.append(client(running).get("/dashboard/login"))
    answers.append(client(running).get("/dashboard/"))
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (name, answer.status)
        # No inline script or style anywhere (the CSP would block it anyway).
        assert "<script" not in answer.text and "style=" not in answer.text
        assert "<style" not in answer.text and " on" + "click" not in answer.text
    assert answers[4].headers.get("Content-Type").startswith("text/css")


def test_session_cookie_is_secure_httponly_samesite_strict(running: Running) -> None:
    LoginGate(running.fleet.directory).set_password(PASSWORD)
    web = client(running)
    answer = web.login(PASSWORD)
    cookie = next(c for c in answer.set_cookies() if c.startswith(SESSION_COOKIE + "="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    assert SESSION_COOKIE.startswith("__Host-") and "domain" not in attributes
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 43  # 256 random bits
    # The server keeps only its hash: the token is in no file of the fleet.
    for path in running.fleet.directory.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_attack_cross_site_form_is_refused(running: Running) -> None:
    web = logged_in(running)
    device = running.devices["c"].device_id
    csrf = web.get(f"/dashboard/devices/{device}").csrf
    for origin in ("https://attacker.example", "null", f"http://127.0.0.1:{web.port}", None):
        refused = web.request("POST", f"/dashboard/devices/{device}/revoke",
                              {"csrf": csrf, "confirm": "yes"}, origin=origin)
        assert refused.status == 403, origin
        assert audit(running)[-1]["outcome"] == "bad_origin"
    assert not running.fleet.device(device).revoked


def test_attack_csrf_token_missing_wrong_or_another_sessions_is_refused(running: Running) -> None:
    web = logged_in(running)
    other = client(running)
    assert other.login(PASSWORD).status == 303
    device = running.devices["c"].device_id
    mine = web.get(f"/dashboard/devices/{device}").csrf
    theirs = other.get(f"/dashboard/devices/{device}").csrf
    assert mine != theirs
    for form in ({"confirm": "yes"}, {"csrf": "", "confirm": "yes"},
                 {"csrf": mine[:-2] + "xx", "confirm": "yes"}, {"csrf": theirs, "confirm": "yes"}):
        refused = web.request("POST", f"/dashboard/devices/{device}/revoke", form)
        assert refused.status == 403
        assert audit(running)[-1]["outcome"] == "bad_csrf"
    assert not running.fleet.device(device).revoked
    # The same form with its own token works (so the refusals above were the token's).
    done = web.request("POST", f"/dashboard/devices/{device}/quarantine", {"csrf": mine})
    assert done.status == 303 and running.fleet.device(device).quarantined
    assert audit(running)[-1]["outcome"] == "quarantined"
    page = web.get(f"/dashboard/devices/{device}?done=quarantined")
    assert "state-quarantined" in page.text and "Release from quarantine" in page.text
    assert web.request("POST", f"/dashboard/devices/{device}/release",
                       {"csrf": mine}).status == 303
    assert audit(running)[-1]["outcome"] == "released"
    assert not running.fleet.device(device).quarantined


def test_attack_login_form_without_its_token_is_refused(running: Running) -> None:
    LoginGate(running.fleet.directory).set_password(PASSWORD)
    web = client(running)
    for form in ({"password": PASSWORD}, {"password": PASSWORD, "csrf": "forged"}):
        refused = web.request("POST", "/dashboard/login", form)
        assert refused.status == 403 and SESSION_COOKIE not in web.cookies
    # Another visitor's token with my pre-login cookie does not pass either.
    theirs = client(running).get("/dashboard/login").csrf
    web.get("/dashboard/login")
    refused = web.request("POST", "/dashboard/login", {"password": PASSWORD, "csrf": theirs})
    assert refused.status == 403 and SESSION_COOKIE not in web.cookies
    assert LoginGate(running.fleet.directory).lockout().failures == 0  # nothing was checked


def test_attack_xss_through_a_devices_report_is_escaped(running: Running) -> None:
    """A device chooses its result texts: markup in them is shown as text, never run."""
    device = running.devices["d"].device_id
    status, _ = running.post("d", running.report(
        "d", results=({"label": XSS, "note": "</td></tr></table><script>x()</script>"},),
        incidents={"net.anomaly": 1}))
    assert status == 200
    # A kind the fleet raises is opaque text too (the report codec limits a device's own).
    running.store.add_incident(device, "<script>alert('kind')</script>", 1_800_000_000,
                               "<b>evidence</b>")
    web = logged_in(running)
    pages = [web.get(p).text for p in (f"/dashboard/devices/{device}", "/dashboard/",
                                       "/dashboard/incidents")]
    for text in pages:
        assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;" in pages[0]
    assert "&lt;script&gt;alert(&#39;kind&#39;)&lt;/script&gt;" in pages[2]


def test_attack_xss_succeeds_with_escaping_switched_off() -> None:
    """The same content through the same template, autoescaping off: the markup is live."""
    context = {"title": "t", "csrf": "c", "notice": None, "page": "incidents", "kind": None,
               "limit": 1, "incidents": [{"at": 0, "device_id": "0" * 64, "kind": XSS,
                                          "count": 1, "evidence": "e"}]}
    unsafe = render(make_environment(unsafe_no_autoescape=True), "incidents.html", context)
    assert '<script>document.title="pwned"</script>' in unsafe
    safe = render(make_environment(), "incidents.html", context)
    assert "<script" not in safe


def test_wrong_passwords_lock_out_as_the_readout_does_across_a_restart(
        running: Running, tmp_path: Path) -> None:
    gate = LoginGate(running.fleet.directory)
    gate.set_password(PASSWORD, LockoutPolicy(free_attempts=2, base_delay=600, max_delay=600))
    web = client(running)
    assert web.login("wrong guess number 1").status == 401
    assert web.login("wrong guess number 2").status == 401
    locked = web.login(PASSWORD)  # the right one, inside the wait: not even checked
    assert locked.status == 429 and "Too many wrong passwords" in locked.text
    assert 590 <= int(locked.headers["Retry-After"]) <= 600
    assert SESSION_COOKIE not in web.cookies
    assert [e["outcome"] for e in audit(running)[-6:] if e["method"] == "POST"] == [
        "bad_password", "bad_password", "locked_out"]
    # A restarted server (new process state, same fleet folder) is still locked.
    store = SQLiteStore(tmp_path / "restarted.db")
    again = ServerThread(FleetServer(FleetDirectory(running.fleet), store),
                         server_ssl_context(running.fleet),
                         admin_context=admin_ssl_context(running.fleet))
    try:
        assert again.admin_port is not None
        fresh = WebClient(again.admin_port, running.anonymous_context())
        assert fresh.login(PASSWORD).status == 429
    finally:
        again.stop()
        store.close()
    gate.set_password(PASSWORD)  # the owner resets it (as readout-enrol does)
    assert client(running).login(PASSWORD).status == 303


def test_logout_and_a_new_password_end_sessions(running: Running) -> None:
    web = logged_in(running)
    stolen = dict(web.cookies)
    csrf = web.get("/dashboard/").csrf
    assert web.request("POST", "/dashboard/logout", {"csrf": csrf}).status == 303
    replay = client(running)
    replay.cookies.update(stolen)
    assert replay.get("/dashboard/").status == 401  # the old cookie is dead server-side
    web = logged_in(running)
    LoginGate(running.fleet.directory).set_password("a brand new long password")
    assert web.get("/dashboard/").status == 401


def test_revoke_from_the_dashboard_refuses_the_devices_next_report(running: Running) -> None:
    device = running.devices["e"].device_id
    assert running.post("e", running.report("e", incidents={"sensor.tamper": 1}))[0] == 200
    web = logged_in(running)
    page = web.get(f"/dashboard/devices/{device}")
    assert "sensor.tamper" in page.text
    unconfirmed = web.request("POST", f"/dashboard/devices/{device}/revoke", {"csrf": page.csrf})
    assert unconfirmed.status == 400 and not running.fleet.device(device).revoked
    done = web.request("POST", f"/dashboard/devices/{device}/revoke",
                       {"csrf": page.csrf, "confirm": "yes"})
    assert done.status == 303
    assert done.headers["Location"] == f"/dashboard/devices/{device}?done=revoked"
    assert running.fleet.device(device).revoked
    line = audit(running)[-1]
    assert line["path"] == f"/dashboard/devices/{device}/revoke" and line["outcome"] == "revoked"
    status, body = running.post("e", running.report("e"))
    assert status == 403 and body["error"] == "revoked"
    after = web.get(f"/dashboard/devices/{device}?done=revoked")
    assert "state-revoked" in after.text and "Revoked: the device" in after.text
    assert not re.search(r'action="[^"]*/revoke"', after.text)


def test_attack_report_altered_in_the_database_is_shown_as_unverified(running: Running) -> None:
    """The pages verify stored reports again: a row edited in the database is not believed."""
    import sqlite3

    device = running.devices["c"].device_id
    report = running.report("c", results=({"label": "honest"},))
    assert running.post("c", report)[0] == 200
    seq = running.store.last_seq(device)
    with sqlite3.connect(running.folder / "reports.db") as db:
        (packed,) = db.execute("SELECT signed_packed FROM reports WHERE device_id = ? AND seq = ?",
                               (device, seq)).fetchone()
        forged = bytes(packed).replace(b"honest", b"forged")
        assert forged != bytes(packed)
        db.execute("UPDATE reports SET signed_packed = ? WHERE device_id = ? AND seq = ?",
                   (forged, device, seq))
    page = logged_in(running).get(f"/dashboard/devices/{device}")
    assert "signature does not verify" in page.text
    assert "forged" not in page.text and "honest" not in page.text
