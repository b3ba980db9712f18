"""lockout-restart (live): wrong passwords lock a login out, and a restart does not
undo it (I-AUTH-1).

The user names the device's HTML form login (``--login-port N --login-path /login``,
TLS unless ``--login-plain``) and, to test the restart, a command that restarts the
device's process and returns (``--restart-command``; the manufacturer supplies it, as
TS 103 701's IXIT does). The probe:

1. fetches the login page, reads its form (hidden fields such as a CSRF token, and the
   password field) and posts it with a random wrong password; at most
   :data:`MAX_GUESSES` times (and the attempt budget), until the answer is a lockout:
   HTTP 429, 423 or 503, or a ``Retry-After`` header;
2. runs the restart command (bounded), waits for the port to accept again (bounded);
3. posts one more wrong password: still locked out passes; checked (any other answer)
   fails: the restart reset the wait.

No lockout within the guesses fails. Locked out but no restart command: not-tested (the
"across restarts" half was not shown). The probe never tries a password it could
guess right (each is 32 random characters), and it leaves the login locked: the owner
waits out the policy's delay (it says so in the evidence).
"""

from __future__ import annotations

import html.parser
import http.client
import secrets
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urljoin, urlsplit

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, cut_off, for_all
from tinyward.assess.target import Target

NAME = "lockout-restart"
MAX_GUESSES = 12  # a 5-free-attempts policy locks on the 6th; 12 leaves room, stays small
LOCKED_STATUSES = (423, 429, 503)
RESTART_SECONDS = 60.0
BACK_UP_SECONDS = 30.0


@dataclass(frozen=True)
class LoginSpec:
    """Where the form login is: port, path of the page with the form, TLS or not."""

    port: int
    path: str = "/login"
    tls: bool = True


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer
    retry_after: str | None = None
    note: str = ""

    @property
    def locked(self) -> bool:
        return self.status in LOCKED_STATUSES or self.retry_after is not None


@dataclass(frozen=True)
class Observed:
    """What the probe saw: each guess's answer, whether the restart ran and the answer
    after it (None: not reached)."""

    guesses: tuple[Answer, ...]
    restart: str | None = None  # None: no restart command; "" ran; else why it did not
    after: Answer | None = None


def verdict(where: str, seen: Observed, context: Context) -> list[Evidence]:
    """From the answers (pure)."""
    if not seen.guesses or all(a.status is None for a in seen.guesses):
        note = seen.guesses[0].note if seen.guesses else "no guess was made"
        return for_all(context, NAME, "not-tested", "live",
                       f"the login at {where} did not answer ({note})")
    if seen.guesses[0].locked:
        # No checked guess came before the lockout: the login was locked before the probe
        # (an earlier run), or answers everything so (429 or Retry-After on every page).
        # Either way no lockout was shown, and a restart cannot show one kept.
        first = seen.guesses[0]
        wait = f", Retry-After {first.retry_after}" if first.retry_after else ""
        return for_all(context, NAME, "not-tested", "live",
                       f"the first wrong password was already answered as locked out (HTTP "
                       f"{first.status}{wait}): locked before the probe began (wait out the "
                       "delay and run again) or locked for everyone; no lockout was shown",
                       where)
    checked = [a for a in seen.guesses if a.status is not None and not a.locked]
    if not any(a.locked for a in seen.guesses):
        if any(a.status is None for a in seen.guesses):
            return for_all(context, NAME, "not-tested", "live",
                           f"{len(checked)} wrong passwords were checked, then the login "
                           "stopped answering (budget or connection): no lockout seen, none "
                           "disproved")
        return for_all(context, NAME, "fail", "live",
                       f"{len(checked)} wrong passwords in a row were all checked (HTTP "
                       f"{_statuses(checked)}): no lockout", where)
    locked_at = next(i for i, a in enumerate(seen.guesses, 1) if a.locked)
    first = seen.guesses[locked_at - 1]
    wait = f", Retry-After {first.retry_after} s" if first.retry_after else ""
    found = (f"locked out after {locked_at - 1} wrong password(s) (HTTP {first.status}{wait}); "
             "the owner waits out the policy's delay after this probe")
    if seen.restart is None:
        return for_all(context, NAME, "not-tested", "live",
                       f"{found}; no --restart-command, so whether a restart resets the wait "
                       "was not shown", where)
    if seen.restart or seen.after is None or seen.after.status is None:
        why = seen.restart or (seen.after.note if seen.after else "not reached")
        return for_all(context, NAME, "not-tested", "live",
                       f"{found}; after the restart nothing was shown ({why})", where)
    if seen.after.locked:
        return for_all(context, NAME, "pass", "live",
                       f"{found}; after a restart of the device's process still locked out "
                       f"(HTTP {seen.after.status})", where)
    return for_all(context, NAME, "fail", "live",
                   f"{found}; after a restart of the device's process the next wrong password "
                   f"was checked again (HTTP {seen.after.status}): the restart reset the wait",
                   where)


def _statuses(answers: list[Answer]) -> str:
    return ", ".join(sorted({str(a.status) for a in answers}))


class _Form(html.parser.HTMLParser):
    """The first form with a password field: its action, hidden fields, password name."""

    def __init__(self) -> None:
        super().__init__()
        self._current: dict[str, str] | None = None
        self._fields: dict[str, str] = {}
        self._password: str | None = None
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.password: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if self.password is not None:
            return  # found already
        if tag == "form":
            self._current, self._fields, self._password = a, {}, None
        elif tag == "input" and self._current is not None:
            kind = a.get("type", "text").lower()
            if kind == "password" and self._password is None:
                self._password = a.get("name", "password")
            elif kind == "hidden" and a.get("name"):
                self._fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._current is not None:
            if self._password is not None and self.password is None:
                self.action = self._current.get("action", "")
                self.fields, self.password = dict(self._fields), self._password
            self._current = None


def _request(address: str, spec: LoginSpec, method: str, path: str, until: float,
             body: bytes | None = None, headers: dict[str, str] | None = None
             ) -> tuple[int, http.client.HTTPMessage, str]:
    """One HTTP exchange that ends by the monotonic time ``until``, however slowly the
    device answers (TimeoutError when the time ran out)."""
    timeout = until - time.monotonic()
    if timeout <= 0:
        raise TimeoutError("no time left for this guess")
    if spec.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the lockout, not the certificate, is under test
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            address, spec.port, context=context, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(address, spec.port, timeout=timeout)
    try:
        with cut_off(connection, timeout) as cut:
            try:
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                text = response.read(1 << 20).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                if not cut.fired:
                    raise
            if cut.fired:  # what came before the cut may parse as a whole (short) answer
                raise TimeoutError(f"the answer was still coming after {timeout:.0f} s: "
                                   "cut off")
            return response.status, response.headers, text
    finally:
        connection.close()


def guess(address: str, spec: LoginSpec, timeout: float) -> Answer:
    """One wrong password through the form, as a browser would post it (cookies, Origin)."""
    scheme = "https" if spec.tls else "http"
    host = f"[{address}]" if ":" in address else address
    origin = f"{scheme}://{host}:{spec.port}"
    until = time.monotonic() + timeout  # the whole guess, both requests
    try:
        status, headers, text = _request(address, spec, "GET", spec.path, until)
        form = _Form()
        form.feed(text)
        if form.password is None:
            return Answer(None, note=f"no form with a password field at {spec.path} "
                                     f"(HTTP {status})")
        cookies = {}
        for line in headers.get_all("Set-Cookie") or []:
            cookies.update({k: m.value for k, m in SimpleCookie(line).items()})
        try:
            action = urlsplit(urljoin(origin + spec.path, form.action or spec.path))
        except ValueError:  # the device wrote the action: "http://[::1" is no URL
            return Answer(None, note="the form's action is not a URL")
        if f"{action.scheme}://{action.netloc}" != origin:
            return Answer(None, note=f"the form posts to another origin ({action.netloc})")
        fields = dict(form.fields)
        fields[form.password] = secrets.token_urlsafe(24)  # never a real password
        head = {"Content-Type": "application/x-www-form-urlencoded", "Origin": origin}
        if cookies:
            head["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        post_path = action.path + (f"?{action.query}" if action.query else "")
        status, headers, _ = _request(address, spec, "POST", post_path, until,
                                      urlencode(fields).encode(), head)
        return Answer(status, headers.get("Retry-After"))
    except (OSError, ssl.SSLError, http.client.HTTPException) as error:
        return Answer(None, note=f"{type(error).__name__}: {error}")


def restart(command: tuple[str, ...], address: str, port: int, seconds: float) -> str:
    """Run the restart command, then wait for the port to accept; "" when it is back."""
    try:
        # Output unread, so not captured: the device's program could write without end.
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # noqa: S603 - the user's own command
                              timeout=seconds, check=False)
    except subprocess.TimeoutExpired:
        return f"the restart command ran past {seconds:.0f} s"
    except OSError as error:
        return f"the restart command did not start: {error}"
    if done.returncode != 0:
        return f"the restart command exited with {done.returncode}"
    deadline = time.monotonic() + BACK_UP_SECONDS
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=2):
                return ""
        except OSError:
            time.sleep(0.2)
    return f"the port did not accept within {BACK_UP_SECONDS:.0f} s of the restart"


class LockoutRestart:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        spec: LoginSpec | None = target.login
        if spec is None and target.device_dir is not None:
            from tinyward.assess.probes import readout

            # A tinyward device's one login is its local readout (no network login: the
            # credentials probe's scan shows that).
            if readout.has_readout(target.device_dir) and budget.spend():
                return [readout.lockout_evidence(readout.try_lockout(target.device_dir),
                                                 f"{target.device_dir} (local readout)")]
        if spec is None or target.address is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no login named (--login-port N --login-path PATH)")
        scheme = "https" if spec.tls else "http"
        where = f"{scheme}://{target.address}:{spec.port}{spec.path}"
        guesses: list[Answer] = []
        while len(guesses) < MAX_GUESSES and budget.spend():
            answer = guess(target.address, spec, min(30.0, max(1.0, budget.left())))
            guesses.append(answer)
            if answer.locked or answer.status is None:
                break
        seen = Observed(tuple(guesses))
        if guesses and guesses[-1].locked and target.restart_command is not None:
            why = restart(target.restart_command, target.address, spec.port,
                          min(RESTART_SECONDS, max(1.0, budget.left())))
            after = guess(target.address, spec, 30.0) if not why and budget.spend() else None
            seen = Observed(tuple(guesses), why, after)
        return verdict(where, seen, context)


__all__ = ["LOCKED_STATUSES", "MAX_GUESSES", "Answer", "LockoutRestart", "LoginSpec",
           "Observed", "guess", "restart", "verdict"]
