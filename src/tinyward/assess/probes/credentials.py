"""credentials (live): no login the device offers accepts a well-known default (I-CRED-1).

A bounded Python client, not hydra: it first has to find out what each open port speaks
(a telnet-style ``login:`` prompt, HTTP with Basic authentication, over TLS or not), and
then tries at most :data:`MAX_ATTEMPTS` pairs from ``data/default-credentials.txt`` per
login, one connection per attempt, each with a timeout. Pass only when the port scan
covered every TCP port and no login on them accepted a default; an HTML form login is
recognised but not tried (not-tested, never passed).
"""

from __future__ import annotations

import base64
import re
import socket
import ssl
import time
from dataclasses import dataclass
from importlib import resources

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "credentials"
MAX_ATTEMPTS = 20
MAX_PORTS = 16
_READ = 4096
_PAGE = 1 << 16  # an HTTP answer is read whole up to this size: a form can come late
_PROMPT = re.compile(rb"(login|username|user name)\s*:\s*$", re.IGNORECASE)
_PASSWORD = re.compile(rb"password\s*:\s*$", re.IGNORECASE)
_REFUSED = re.compile(rb"incorrect|invalid|denied|fail|wrong|bad password|login\s*:",
                      re.IGNORECASE)
_ANSWER_END = re.compile(rb"[#$>]\s*$|(login|username|user name|password)\s*:\s*$",
                         re.IGNORECASE)
_SHELL = re.compile(rb"([#$>]\s*$)|welcome|last login", re.IGNORECASE)


def default_credentials() -> list[tuple[str, str]]:
    text = (resources.files("tinyward.assess") / "data" / "default-credentials.txt"
            ).read_text(encoding="utf-8")
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            user, _, password = line.partition(":")
            pairs.append((user, password))
    return pairs


@dataclass(frozen=True)
class LoginFinding:
    """One port: what login it offers (``telnet``, ``http-basic``, ``http-form``,
    ``none``, ``unknown``), how many defaults were tried, and the one accepted (if any)."""

    port: int
    login: str
    tried: int = 0
    accepted: tuple[str, str] | None = None
    note: str = ""


def telnet_logged_in(answer: bytes) -> bool:
    """After the password: a shell prompt or greeting, and no refusal in the last line
    (pure). Only the last line: a successful Linux login greets with "Last failed login"
    and "There were 3 failed login attempts" (the probe's own earlier guesses)."""
    lines = answer.rstrip().splitlines()
    last = lines[-1] if lines else b""
    return bool(_SHELL.search(answer)) and not _REFUSED.search(last)


def http_status(head: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else None


def classify_http(head: bytes) -> str:
    """``http-basic`` (401 asking for Basic), ``http-auth`` (401 or 407 asking for
    another scheme: Digest, Bearer, …), ``http-form`` (a password field), ``redirect``
    (a 3xx: most web interfaces send "/" to their login page), ``none`` (HTTP without a
    login) or ``unknown`` (not HTTP) (pure). ``none`` holds only for the whole answer."""
    status = http_status(head)
    if status is None:
        return "unknown"
    if status == 401 and re.search(rb"(?im)^www-authenticate:\s*basic", head):
        return "http-basic"
    if status in (401, 407):
        return "http-auth"
    if re.search(rb"(?i)type\s*=\s*[\"']?password", head):
        return "http-form"
    if 300 <= status < 400:
        return "redirect"
    return "none"


def whole_answer(data: bytes, closed: bool) -> bool:
    """Whether ``data`` is the whole HTTP answer: the server closed, or the body reached
    its Content-Length (pure). A device that starts a page and stalls, or pads it past
    what is read, must not be judged on the part that came."""
    if closed:
        return True
    head, separator, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d{1,9})\s*$", head)
    return bool(separator and length and len(body) >= int(length.group(1)))


def verdict(address: str, findings: list[LoginFinding], complete_scan: bool,
            context: Context) -> list[Evidence]:
    """Fail on any accepted default; else pass only if every port of a complete scan
    was classified and no login was left untried (pure)."""
    accepted = [f for f in findings if f.accepted is not None]
    if accepted:
        text = "; ".join(f"port {f.port} ({f.login}) accepts the default "
                         f"{f.accepted[0]!r}/{f.accepted[1]!r}"
                         for f in accepted if f.accepted is not None)
        return for_all(context, NAME, "fail", "live", text, f"tcp://{address}:{accepted[0].port}")
    open_questions = [f for f in findings if f.login in ("unknown", "http-form") or f.note]
    logins = [f for f in findings if f.login in ("telnet", "http-basic")]
    summary = "; ".join(f"port {f.port} ({f.login}) refused {f.tried} defaults"
                        for f in logins)
    if open_questions:
        text = "; ".join(f"port {f.port}: {f.note or f.login + ' not tried'}"
                         for f in open_questions)
        return for_all(context, NAME, "not-tested", "live",
                       text + (f"; {summary}" if summary else ""))
    if not complete_scan:
        return for_all(context, NAME, "not-tested", "live",
                       (summary + "; " if summary else "") +
                       "only the named ports were scanned: a login elsewhere was not looked for")
    return for_all(context, NAME, "pass", "live",
                   summary or f"no login recognised on any open TCP port of {address}")


def _connect(address: str, port: int, tls: bool, timeout: float) -> socket.socket:
    raw = socket.create_connection((address, port), timeout=timeout)
    if not tls:
        return raw
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # looking for a login, not checking the server
    return context.wrap_socket(raw)


def _read_until(sock: socket.socket, pattern: re.Pattern[bytes], timeout: float) -> bytes:
    """Read until ``pattern`` matches the data so far, the peer closes, or ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < _READ and not pattern.search(data):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(_READ)
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _read_answer(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Up to :data:`_PAGE` bytes until the peer closes (True) or ``timeout`` (False)."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < _PAGE and not whole_answer(data, False):
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        sock.settimeout(left)
        try:
            chunk = sock.recv(_READ)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return data, True  # closed, with or without TLS's close_notify
        except (TimeoutError, OSError):
            return data, False
        if not chunk:
            return data, True
        data += chunk
    return data, whole_answer(data, False)


def _http_head(address: str, port: int, tls: bool, timeout: float,
               authorization: str | None = None) -> tuple[bytes, bool]:
    """The answer to GET / and whether it is whole (:func:`whole_answer`)."""
    request = f"GET / HTTP/1.0\r\nHost: {address}\r\nUser-Agent: tinyward-assess\r\n"
    if authorization:
        request += f"Authorization: {authorization}\r\n"
    with _connect(address, port, tls, timeout) as sock:
        sock.sendall((request + "\r\n").encode())
        return _read_answer(sock, timeout)  # HTTP/1.0: until the server closes


def _telnet_try(address: str, port: int, user: str, password: str, timeout: float) -> bytes:
    with _connect(address, port, False, timeout) as sock:
        if not _PROMPT.search(_read_until(sock, _PROMPT, timeout)):
            return b""
        sock.sendall(user.encode() + b"\r\n")
        if not _PASSWORD.search(_read_until(sock, _PASSWORD, timeout)):
            return b""
        sock.sendall(password.encode() + b"\r\n")
        # Until a prompt ends the answer (a shell's, or a new login's), or it closes: a
        # refusal word alone does not end it ("Last failed login: …" precedes a shell).
        return _read_until(sock, _ANSWER_END, timeout)


def probe_port(address: str, port: int, tls: bool, budget: Budget,
               pairs: list[tuple[str, str]]) -> LoginFinding:
    timeout = min(3.0, max(0.5, budget.left()))
    if not tls:
        try:
            with _connect(address, port, False, timeout) as sock:
                banner = _read_until(sock, _PROMPT, min(timeout, 1.5))
        except OSError as error:
            return LoginFinding(port, "unknown", note=f"connection failed ({error})")
        if _PROMPT.search(banner):
            tried = 0
            for user, password in pairs[:MAX_ATTEMPTS]:
                if not budget.spend():
                    return LoginFinding(port, "telnet", tried, note="budget used up")
                tried += 1
                try:
                    answer = _telnet_try(address, port, user, password, timeout)
                except OSError:
                    continue
                if telnet_logged_in(answer):
                    return LoginFinding(port, "telnet", tried, (user, password))
            return LoginFinding(port, "telnet", tried)
        if banner:
            return LoginFinding(port, "unknown", note="a banner that is not a login prompt")
    try:
        head, whole = _http_head(address, port, tls, timeout)
    except OSError as error:
        return LoginFinding(port, "unknown", note=f"no HTTP answer ({error})")
    login = classify_http(head)
    if login == "none" and not whole:
        return LoginFinding(port, login, note="the page did not end within the time and "
                            f"{_PAGE // 1024} KiB read: a login further on was not looked for")
    if login == "redirect":
        found = re.search(rb"(?im)^location:[ \t]*(.{0,100})", head)
        where = found.group(1).decode("latin-1").strip() if found else "?"
        return LoginFinding(port, login, note=f"HTTP {http_status(head)} to {where}: not "
                            "followed, so a login there was not looked for")
    if login == "http-auth":
        return LoginFinding(port, login, note="an HTTP login other than Basic (Digest, "
                            "Bearer, …): not tried")
    if login != "http-basic":
        note = "not HTTP and no login prompt: protocol not recognised" if login == "unknown" \
            else ""
        return LoginFinding(port, login, note=note)
    tried = 0
    for user, password in pairs[:MAX_ATTEMPTS]:
        if not budget.spend():
            return LoginFinding(port, login, tried, note="budget used up")
        tried += 1
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        try:
            status = http_status(_http_head(address, port, tls, timeout,
                                            f"Basic {token}")[0])
        except OSError:
            continue
        if status is not None and 200 <= status < 400:
            return LoginFinding(port, login, tried, (user, password))
    return LoginFinding(port, login, tried)


class Credentials:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        found = self._network(target, context, budget)
        from tinyward.assess.probes import readout

        folder = target.device_dir
        if folder is not None and readout.has_readout(folder) and budget.spend():
            extra = readout.defaults_evidence(readout.try_defaults(folder),
                                              f"{folder} (local readout)")
            if extra is not None:
                found.append(extra)  # the worst of the two parts wins (evidence.complete)
        return found

    def _network(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        if target.address is None:
            return for_all(context, NAME, "not-tested", "live", "no address to log in to")
        ports = context.open_ports if context.open_ports is not None else target.ports
        if ports is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no port scan ran and no ports were named")
        pairs = default_credentials()
        findings = [probe_port(target.address, port, context.services.get(port) == "tls",
                               budget, pairs) for port in ports[:MAX_PORTS]]
        if len(ports) > MAX_PORTS:
            findings.append(LoginFinding(ports[MAX_PORTS], "unknown",
                                         note=f"{len(ports) - MAX_PORTS} more ports not tried"))
        complete = target.ports is None and context.open_ports is not None
        return verdict(target.address, findings, complete, context)


__all__ = ["Credentials", "LoginFinding", "classify_http", "default_credentials",
           "http_status", "probe_port", "telnet_logged_in", "verdict", "whole_answer"]
