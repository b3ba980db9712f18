"""The dashboard's HTTP side on the admin listener: pages, login, actions, headers.

Every page is rendered on the server (no script at all); every response under
``/dashboard/`` carries the strict headers of :data:`SECURITY_HEADERS`. A request without a
live session gets the login page and nothing else (status 401). Every ``POST`` must come
from this origin (``Origin`` header) and carry its form's CSRF token. The admin
application's audit middleware writes one line per request; the outcome code of a refusal
or an action (``revoked``, ``bad_csrf``, ``locked_out`` …) is set here.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Protocol

import jinja2
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.fleet.dashboard.auth import (
    LoginGate,
    NoPassword,
    Session,
    Sessions,
    WrongPassword,
    csrf_ok,
)
from tinyward.fleet.dashboard.render import make_environment, render
from tinyward.fleet.devstate import DEVICE_STATES, device_state
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.errors import BadCertificate, UnknownDevice
from tinyward.fleet.pki import EnrolledDevice
from tinyward.fleet.store import DeviceStatus, ReportStore
from tinyward.trust.identity import is_device_id
from tinyward.trust.lockout import LockedOut
from tinyward.trust.report import ReportError, verify_report

PREFIX = "/dashboard"
SESSION_COOKIE = "__Host-tinyward-session"  # __Host-: Secure, Path=/, no Domain (browser-enforced)
LOGIN_COOKIE = "__Host-tinyward-login"
DEVICES_PAGE = 100
RECENT_REPORTS = 10
INCIDENTS_LISTED = 200
#: Seconds an attestation certificate's check is reused for (validity is by the day).
ATTESTATION_RECHECK = 300.0
_CACHE_ENTRIES = 4096

#: On every dashboard response. No inline script or style can run, nothing loads from
#: elsewhere, forms post only here, no framing, no referrer to other sites, nothing cached.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: under it chromium sends "Origin: null" with the dashboard's own
    # forms, and the Origin check below would refuse them (found by the browser test).
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=(), serial=()",
    "Strict-Transport-Security": "max-age=31536000",
    "Cache-Control": "no-store",
}

_NOTICES = {  # ?done=… after an action: fixed texts, nothing from the query is shown
    "revoked": "Revoked: the device's certificates are refused from its next connection on.",
    "quarantined": "Quarantined: its reports are still verified and kept; it is offered no "
                   "update.",
    "released": "Released from quarantine.",
}


class FleetServer(Protocol):
    """What the dashboard uses of :class:`tinyward.fleet.server.FleetServer`."""

    directory: FleetDirectory
    _reader: ReportStore

    async def _admin_call(self, function: Callable[..., Any], *args: Any) -> Any: ...


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_AuthedHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]


class Dashboard:
    """The dashboard of one fleet server (state: the sessions, in memory)."""

    def __init__(self, server: FleetServer, outcome_key: web.RequestKey[str], *,
                 clock: Callable[[], float] = time.time,
                 env: jinja2.Environment | None = None) -> None:
        self.server = server
        self.fleet = server.directory.fleet
        self.gate = LoginGate(self.fleet.directory, clock)
        self.sessions = Sessions()
        self.clock = clock
        self.env = env or make_environment()
        self._outcome = outcome_key
        # Only touched in the admin thread (_admin_call): no lock needed.
        self._attested: dict[tuple[str, int, bool], tuple[float, str]] = {}
        self._verified: dict[tuple[str, int], dict[str, Any]] = {}
        self._css = resources.files("tinyward.fleet.dashboard").joinpath(
            "static/style.css").read_bytes()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.root)
        app.router.add_get(f"{PREFIX}", self.root)
        app.router.add_get(f"{PREFIX}/static/style.css", self.stylesheet)
        app.router.add_get(f"{PREFIX}/login", self.login_page)
        app.router.add_post(f"{PREFIX}/login", self.login)
        app.router.add_post(f"{PREFIX}/logout", self._authed(self.logout))
        app.router.add_get(f"{PREFIX}/", self._authed(self.devices))
        app.router.add_get(f"{PREFIX}/incidents", self._authed(self.incidents))
        app.router.add_get(PREFIX + "/devices/{device_id}", self._authed(self.device))
        for action in ("revoke", "quarantine", "release"):
            app.router.add_post(PREFIX + "/devices/{device_id}/" + action,
                                self._authed(functools.partial(self.act, action)))
        app.on_response_prepare.append(self._headers)

    # -- plumbing -----------------------------------------------------------------------

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path == "/" or request.path.startswith(PREFIX):
            response.headers.update(SECURITY_HEADERS)

    def _page(self, template: str, status: int = 200, **context: Any) -> web.Response:
        context.setdefault("csrf", None)
        context.setdefault("notice", None)
        context.setdefault("page", "")
        return web.Response(text=render(self.env, template, context), status=status,
                            content_type="text/html", charset="utf-8")

    def _refused(self, request: web.Request, status: int, outcome: str,
                 reason: str) -> web.Response:
        request[self._outcome] = outcome
        return self._page("refused.html", status, title="Refused", reason=reason)

    def _same_origin(self, request: web.Request) -> bool:
        # Browsers send Origin with every POST; a cross-site form or fetch carries the
        # other site's. (The TLS certificate is the fleet's, so a rebinding name fails
        # the handshake before this.)
        origin = request.headers.get("Origin")
        return origin is not None and origin == f"https://{request.host}"

    def _authed(self, handler: _AuthedHandler) -> _Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session = await self._session(request)
            if session is None:
                request[self._outcome] = "login_required"
                return await self._login_response(request, status=401)
            if request.method == "POST":
                if not self._same_origin(request):
                    return self._refused(request, 403, "bad_origin",
                                         "This form was not sent from this dashboard.")
                form = await request.post()
                presented = form.get("csrf")
                if not csrf_ok(session, presented if isinstance(presented, str) else None):
                    return self._refused(request, 403, "bad_csrf",
                                         "The form's security token is missing or stale: "
                                         "reload the page and try again.")
            return await handler(request, session)
        return wrapped

    async def _session(self, request: web.Request) -> Session | None:
        version = await self.server._admin_call(self.gate.stored)
        return self.sessions.find(request.cookies.get(SESSION_COOKIE), version)

    # -- login --------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.StreamResponse:
        return _see_other(f"{PREFIX}/")

    async def stylesheet(self, request: web.Request) -> web.Response:
        return web.Response(body=self._css, content_type="text/css", charset="utf-8")

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        if await self._session(request) is not None:
            return _see_other(f"{PREFIX}/")
        return await self._login_response(request)

    async def _login_response(self, request: web.Request, status: int = 200,
                              error: str | None = None) -> web.Response:
        pre = secrets.token_urlsafe(32)
        policy = await self.server._admin_call(self.gate.policy)
        configured = await self.server._admin_call(self.gate.stored) is not None
        response = self._page("login.html", status, title="Log in", error=error,
                              configured=configured,
                              login_csrf=self.sessions.login_token(pre),
                              free_attempts=policy.free_attempts,
                              max_wait=f"{policy.max_delay / 60:.0f} min")
        response.set_cookie(LOGIN_COOKIE, pre, secure=True, httponly=True, samesite="Strict",
                            path="/", max_age=3600)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            return self._refused(request, 403, "bad_origin",
                                 "This form was not sent from this dashboard.")
        form = await request.post()
        token, password = form.get("csrf"), form.get("password")
        if not self.sessions.login_token_ok(request.cookies.get(LOGIN_COOKIE),
                                            token if isinstance(token, str) else None):
            request[self._outcome] = "bad_csrf"
            return await self._login_response(
                request, 403, "The login form was stale: enter the password again.")
        if not isinstance(password, str):
            password = ""
        try:
            version = await self.server._admin_call(self.gate.attempt, password)
        except LockedOut as error:
            request[self._outcome] = "locked_out"
            response = await self._login_response(
                request, 429, f"Too many wrong passwords: the next one is checked in "
                f"{error.wait_seconds:.0f} s (the wait doubles with every further failure).")
            response.headers["Retry-After"] = str(max(1, int(error.wait_seconds + 0.999)))
            return response
        except WrongPassword:
            request[self._outcome] = "bad_password"
            return await self._login_response(request, 401, "Wrong password.")
        except NoPassword:
            request[self._outcome] = "no_password"
            return await self._login_response(request, 401, "No dashboard password is set.")
        token_value, _ = self.sessions.create(version)
        request[self._outcome] = "logged_in"
        response = _see_other(f"{PREFIX}/")
        response.set_cookie(SESSION_COOKIE, token_value, secure=True, httponly=True,
                            samesite="Strict", path="/", max_age=int(self.sessions.maximum))
        response.del_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True,
                            samesite="Strict")
        return response

    async def logout(self, request: web.Request, session: Session) -> web.StreamResponse:
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        request[self._outcome] = "logged_out"
        response = _see_other(f"{PREFIX}/login")
        response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True,
                            samesite="Strict")
        return response

    # -- pages --------------------------------------------------------------------------

    def _summary(self, enrolled: EnrolledDevice, status: DeviceStatus | None,
                 now: float) -> dict[str, Any]:
        state = device_state(status, revoked=enrolled.revoked,
                             quarantined=enrolled.quarantined, now=now,
                             interval=enrolled.report_interval)
        incidents = status.incidents if status else {}
        update = status.update if status else None
        return {
            "id": enrolled.device_id, "state": state, "cohort": enrolled.cohort,
            "last_seen": status.last_received_at if status else None,
            "attestation": self._attestation(enrolled),
            "versions": sorted(update.versions.items()) if update else [],
            "update_state": (f"{update.state}" + (f" ({update.why})" if update.why else "")
                             if update else "not reported"),
            "incident_total": sum(incidents.values()),
            "incident_kinds": sorted(incidents.items(), key=lambda kv: (-kv[1], kv[0]))[:4],
            "results": [],
            "interval": enrolled.report_interval,
            "quarantined": enrolled.quarantined,
            "quarantined_at": _iso(enrolled.quarantined_at),
            "revoked_at": _iso(enrolled.revoked_at),
            "enrolled_at": _iso(enrolled.enrolled_at),
            "reports": status.reports if status else 0,
            "last_seq": status.last_seq if status else 0,
            "health": status.health if status else "—",
        }

    def _attestation(self, enrolled: EnrolledDevice) -> str:
        """The state of the device's attestation certificate, checked at most
        :data:`ATTESTATION_RECHECK` seconds ago (at once after a revocation: it is part of
        the cache's key)."""
        certificate = enrolled.certificates["attestation"]
        key = (enrolled.device_id, certificate.serial_number, enrolled.revoked)
        cached = self._attested.get(key)
        now = self.clock()
        if cached is not None and now - cached[0] < ATTESTATION_RECHECK:
            return cached[1]
        if len(self._attested) >= _CACHE_ENTRIES:
            self._attested.clear()
        text = self._check_attestation(enrolled)
        self._attested[key] = (now, text)
        return text

    def _check_attestation(self, enrolled: EnrolledDevice) -> str:
        certificate = enrolled.certificates["attestation"]
        try:
            self.fleet.verify_device_certificate(certificate, "attestation")
        except BadCertificate as error:
            return f"refused: {type(error).__name__}"
        except UnknownDevice:
            return "refused: not enrolled"
        except Exception as error:  # noqa: BLE001 - RevokedDevice and the like: say which
            return f"refused: {type(error).__name__}"
        return f"valid until {certificate.not_valid_after_utc:%Y-%m-%d}"

    def _reports(self, enrolled: EnrolledDevice, status: DeviceStatus | None,
                 count: int) -> list[dict[str, Any]]:
        """The newest ``count`` stored reports, each verified again with the report key."""
        signed_report = getattr(self.server._reader, "signed_report", None)
        if status is None or not callable(signed_report):
            return []
        key = enrolled.public_key("report")
        found: list[dict[str, Any]] = []
        # Sequence numbers may have gaps (reports a device dropped): look a bounded way back.
        for seq in range(status.last_seq, max(0, status.last_seq - 4 * count), -1):
            # A stored report never changes: each is verified once per process.
            shown = self._verified.get((enrolled.device_id, seq))
            if shown is None:
                data = signed_report(enrolled.device_id, seq)
                if data is None:
                    continue
                shown = _shown_report(seq, data, key)
                if len(self._verified) >= _CACHE_ENTRIES:
                    self._verified.clear()
                self._verified[(enrolled.device_id, seq)] = shown
            found.append(shown)
            if len(found) >= count:
                break
        return found

    async def devices(self, request: web.Request, session: Session) -> web.Response:
        after = request.query.get("after", "")
        if after and not is_device_id(after):
            after = ""

        def collect() -> tuple[list[dict[str, Any]], list[tuple[str, int]], str | None]:
            now = self.clock()
            everyone = sorted(self.fleet.devices(), key=lambda d: d.device_id)
            page = [d for d in everyone if d.device_id > after]
            shown: list[dict[str, Any]] = []
            for enrolled in page[:DEVICES_PAGE]:
                status = self.server._reader.device_status(enrolled.device_id)
                summary = self._summary(enrolled, status, now)
                latest = self._reports(enrolled, status, 1)
                summary["results"] = latest[0]["results"][:3] if latest else []
                shown.append(summary)
            counts = {state: 0 for state in DEVICE_STATES}
            for summary in shown:
                counts[summary["state"]] += 1
            totals = [(state, n) for state, n in counts.items() if n]
            next_after = page[DEVICES_PAGE - 1].device_id if len(page) > DEVICES_PAGE else None
            return shown, totals, next_after

        shown, totals, next_after = await self.server._admin_call(collect)
        return self._page("devices.html", title="Devices", page="devices", csrf=session.csrf,
                          devices=shown, totals=totals, next_after=next_after,
                          now=self.clock())

    async def device(self, request: web.Request, session: Session) -> web.Response:
        device_id = request.match_info["device_id"]
        if not is_device_id(device_id):
            return self._refused(request, 404, "unknown_device", "No such device.")

        def collect() -> dict[str, Any] | None:
            try:
                enrolled = self.fleet.device(device_id)
            except UnknownDevice:
                return None
            status = self.server._reader.device_status(device_id)
            return {"d": self._summary(enrolled, status, self.clock()),
                    "reports": self._reports(enrolled, status, RECENT_REPORTS),
                    "incidents": self.server._reader.incidents(device_id, limit=50)}

        found = await self.server._admin_call(collect)
        if found is None:
            return self._refused(request, 404, "unknown_device", "No such device.")
        done = request.query.get("done", "")
        return self._page("device.html", title=f"Device {device_id[:12]}", page="devices",
                          csrf=session.csrf, notice=_NOTICES.get(done), now=self.clock(),
                          **found)

    async def incidents(self, request: web.Request, session: Session) -> web.Response:
        kind = request.query.get("kind") or None
        if kind is not None and len(kind) > 64:
            kind = kind[:64]
        listed = await self.server._admin_call(functools.partial(
            self.server._reader.incidents, kind=kind, limit=INCIDENTS_LISTED))
        return self._page("incidents.html", title="Incidents", page="incidents",
                          csrf=session.csrf, incidents=listed, kind=kind,
                          limit=INCIDENTS_LISTED)

    # -- actions ------------------------------------------------------------------------

    async def act(self, action: str, request: web.Request, session: Session
                  ) -> web.StreamResponse:
        device_id = request.match_info["device_id"]
        if not is_device_id(device_id):
            return self._refused(request, 404, "unknown_device", "No such device.")
        form = await request.post()
        if action == "revoke" and form.get("confirm") != "yes":
            return self._refused(request, 400, "not_confirmed",
                                 "Tick 'revoke for good' to revoke a device.")
        actions: dict[str, Callable[[str], object]] = {
            "revoke": self.fleet.revoke, "quarantine": self.fleet.quarantine,
            "release": self.fleet.release}
        do = actions[action]
        try:
            await self.server._admin_call(do, device_id)
        except UnknownDevice:
            return self._refused(request, 404, "unknown_device", "No such device.")
        outcome = {"revoke": "revoked", "quarantine": "quarantined", "release": "released"}
        request[self._outcome] = outcome[action]
        return _see_other(f"{PREFIX}/devices/{device_id}?done={outcome[action]}")


def _shown_report(seq: int, data: bytes, key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    try:
        report = verify_report(data, key, size=len(data))
    except ReportError:
        return {"seq": seq, "time": None, "mode": "—", "health": "signature does not verify",
                "results": [], "incidents": []}
    return {"seq": seq, "time": report.timestamp, "mode": report.mode, "health": report.health,
            "results": [sorted(r.items()) for r in report.results],
            "incidents": sorted(report.incidents.items())}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _see_other(location: str) -> web.Response:
    # Returned, not raised: a raised redirect would pass the audit middleware unrecorded.
    return web.Response(status=303, headers={"Location": location})
