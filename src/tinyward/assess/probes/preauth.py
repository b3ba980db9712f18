"""preauth-exhaustion (live): idle, unauthenticated connections must not keep a real
client out (A-PREAUTH-1).

Per port (at most :data:`MAX_PORTS`): first a **baseline**, a client is served without a
flood (TLS ports with ``--client-cert`` if one was given; served means an answer to
``GET /``, or for TLS a completed handshake); then :data:`FLOOD` connections (bounded by
the attempt budget) are opened and held: silent ones (a handshake never started) and
slow ones (half a request line, for plaintext ports), from 127.0.0.2 when the target is
on loopback (else from the probe's one address, which the evidence then shares with the
fresh client); while they are held, a fresh client
must be served within :data:`BOUND` seconds. A connection the server refuses during the
flood counts for it (a per-address cap is a defence). A port whose baseline fails is
not-tested: the flood would prove nothing there.

A device that listens on no port is reached through its uplink, a listener that demands
the device's certificate (the manufacturer's test credential, ``--client-cert``, says so).
There, before the flood, a client **without a certificate** must be refused in the TLS
handshake (:func:`without_certificate`): a listener that lets it finish the handshake
and answers its HTTP request (even with a 401) has its HTTP stack open to anyone before
authentication, and every such connection takes a slot kept for devices (the fleet
counts connections that finished the handshake against ``max_connections``). That
fails A-PREAUTH-1 whatever the flood shows; its control is the certificate required in
the handshake.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "preauth-exhaustion"
MAX_PORTS = 4
FLOOD = 160
BOUND = 15.0  # seconds a fresh client may wait during the flood (generous: not a speed claim)


@dataclass(frozen=True)
class FloodRun:
    port: int
    baseline: bool
    opened: int
    refused: int
    served: bool
    note: str = ""


def verdict(address: str, runs: list[FloodRun], context: Context) -> list[Evidence]:
    """Fail if a fresh client went unserved during a flood; pass only if every port was
    tested and served (pure)."""
    if not runs:
        return for_all(context, NAME, "not-tested", "live", f"no open port on {address}")
    starved = [r for r in runs if r.baseline and not r.served]
    if starved:
        first = starved[0]
        return for_all(context, NAME, "fail", "live",
                       "; ".join(f"port {r.port}: with {r.opened} idle connections held, a "
                                 f"fresh client was not served within {BOUND:.0f} s"
                                 for r in starved), f"tcp://{address}:{first.port}")
    parts = [f"port {r.port}: served with {r.opened} idle connections held "
             f"({r.refused} more refused by the server)" if r.baseline else
             f"port {r.port}: not served even without a flood ({r.note or 'baseline failed'})"
             for r in runs]
    if any(not r.baseline for r in runs):
        return for_all(context, NAME, "not-tested", "live", "; ".join(parts))
    return for_all(context, NAME, "pass", "live", "; ".join(parts))


@dataclass(frozen=True)
class Anonymous:
    """What a client without a certificate met: ``refused`` True (in the handshake: an
    alert, a reset, or the session closed before any answer), False (the handshake
    finished and its request was answered: ``answer`` holds the first line), or None
    (could not tell: no connection, or no answer and no refusal in time)."""

    refused: bool | None
    what: str
    answer: str = ""


def without_certificate(address: str, port: int, timeout: float) -> Anonymous:
    """Connect to a TLS listener offering no client certificate and send one request.

    TLS 1.3 finishes the client's side of the handshake before the server has checked for
    a certificate, so the refusal shows on the first read: an alert or the end of the
    stream with no byte of HTTP. Any answer at all means the server took the session."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # who the server is does not matter here
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except OSError as error:
        return Anonymous(None, f"no connection ({type(error).__name__})")
    with contextlib.closing(raw):
        try:
            with context.wrap_socket(raw) as tls:
                tls.settimeout(timeout)
                tls.sendall(b"GET / HTTP/1.1\r\nHost: " + address.encode()
                            + b"\r\nConnection: close\r\n\r\n")
                answer = tls.recv(256)
        except TimeoutError:
            return Anonymous(None, f"neither an answer nor a refusal within {timeout:.0f} s")
        except ssl.SSLError as error:
            return Anonymous(True, f"refused in the handshake ({error.reason or error})")
        except OSError as error:  # reset, broken pipe: the server hung up during it
            return Anonymous(True, f"refused in the handshake ({type(error).__name__})")
    if not answer:
        return Anonymous(True, "refused in the handshake (the session closed before any "
                         "answer)")
    first = answer.split(b"\r\n", 1)[0].decode("latin-1")[:80]
    return Anonymous(False, "finished the TLS handshake and was answered", first)


def anonymous_verdict(where: str, seen: Anonymous) -> str | None:
    """Why a listener that demands a device certificate fails A-PREAUTH-1 for what a
    client without one met, or None if it did not (pure)."""
    if seen.refused is not False:
        return None
    return (f"{where} let a client with no certificate finish the TLS handshake and "
            f"answered its request ({seen.answer!r}): its HTTP stack is open before "
            "authentication, and each such connection holds a slot kept for devices "
            "(the certificate must be required in the handshake)")


def _served(address: str, port: int, tls: bool, client_cert: tuple[Path, Path] | None,
            timeout: float) -> bool:
    """One fresh client: an answer to GET / (or, over TLS, at least a handshake)."""
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except OSError:
        return False
    with contextlib.closing(raw):
        sock: socket.socket = raw
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if client_cert is not None:
                context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
            try:
                sock = context.wrap_socket(raw)
            except (OSError, ssl.SSLError):
                return False
        try:
            sock.settimeout(min(timeout, 1.0))
            with contextlib.suppress(TimeoutError):
                if sock.recv(1):  # a service that speaks first (a login banner)
                    return True
            sock.settimeout(timeout)
            sock.sendall(b"GET / HTTP/1.0\r\nHost: " + address.encode() + b"\r\n\r\n")
            return bool(sock.recv(1))
        except TimeoutError:
            return False
        except (OSError, ssl.SSLError):
            return tls  # the handshake stood; the service closed on our request
        finally:
            if sock is not raw:
                sock.close()


def _eventually_served(address: str, port: int, tls: bool,
                       client_cert: tuple[Path, Path] | None) -> bool:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if _served(address, port, tls, client_cert, max(0.5, deadline - time.monotonic())):
            return True
        time.sleep(0.5)
    return False


def flood(address: str, port: int, tls: bool, client_cert: tuple[Path, Path] | None,
          budget: Budget) -> FloodRun:
    if not _served(address, port, tls, client_cert, 5.0):
        return FloodRun(port, False, 0, 0, False,
                        "TLS needs a client certificate (--client-cert)" if tls and
                        client_cert is None else "no answer")
    opened, refused = 0, 0
    # On loopback the flood comes from another address than the client it must not keep
    # out, as an attacker's would; a per-address cap is then a defence, not a failure.
    source = ("127.0.0.2", 0) if address.startswith("127.") and address != "127.0.0.2" \
        else None
    with contextlib.ExitStack() as held:
        for index in range(FLOOD):
            if not budget.spend():
                break
            try:
                sock = socket.create_connection((address, port), timeout=2.0,
                                                source_address=source)
            except OSError:
                refused += 1
                continue
            held.callback(sock.close)
            opened += 1
            if not tls and index % 2:  # slow: half a request line, never finished
                with contextlib.suppress(OSError):
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        served = _eventually_served(address, port, tls, client_cert)
    return FloodRun(port, True, opened, refused, served)


class PreauthExhaustion:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        if target.address is None:
            return for_all(context, NAME, "not-tested", "live", "no address")
        ports = context.open_ports if context.open_ports is not None else target.ports
        if ports is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no port scan ran and no ports were named")
        if not ports and target.uplink is not None and target.ports is None \
                and context.open_ports is not None:
            return self._uplink(target, target.uplink, context, budget)
        runs = [flood(target.address, port, context.services.get(port) == "tls",
                      target.client_cert, budget) for port in ports[:MAX_PORTS]]
        evidence = verdict(target.address, runs, context)
        if len(ports) > MAX_PORTS and evidence[0].verdict == "pass":
            return for_all(context, NAME, "not-tested", "live",
                           f"only {MAX_PORTS} of {len(ports)} open ports flooded")
        return evidence

    def _uplink(self, target: Target, uplink: tuple[str, int], context: Context,
                budget: Budget) -> list[Evidence]:
        """A device that listens on no port can only be starved through its server: the
        uplink's listener, flooded before authentication, must still serve the device's
        own client (its certificate); and, since the listener demands a certificate, it
        must refuse a client without one in the handshake (module doc)."""
        address, port = uplink
        where = f"tcp://{address}:{port}"
        prefix = f"no listening port on {target.address}; its uplink: "
        if target.client_cert is None:  # nothing says the uplink demands certificates
            run = flood(address, port, True, None, budget)
            return [replace(e, text=prefix + e.text) for e in verdict(address, [run], context)]
        anonymous = (without_certificate(address, port, min(5.0, budget.left()))
                     if budget.spend() else Anonymous(None, "the budget was used up"))
        why = anonymous_verdict(where, anonymous)
        if why is not None:
            return for_all(context, NAME, "fail", "live", prefix + why, where)
        run = flood(address, port, True, target.client_cert, budget)
        evidence = [replace(e, text=prefix + e.text) for e in verdict(address, [run], context)]
        if anonymous.refused is None:
            # The flood alone does not show that the certificate is required in the handshake.
            return [replace(e, verdict="not-tested" if e.verdict == "pass" else e.verdict,
                            text=f"{e.text}; a client without a certificate: {anonymous.what}")
                    for e in evidence]
        return [replace(e, text=f"{e.text}; a client without a certificate was "
                        f"{anonymous.what}") for e in evidence]


__all__ = ["Anonymous", "FloodRun", "PreauthExhaustion", "anonymous_verdict", "flood",
           "verdict", "without_certificate"]
