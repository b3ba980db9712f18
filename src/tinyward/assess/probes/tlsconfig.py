"""tls-config (live): every open TCP port must speak current TLS (C-COMM-1).

Two steps per port (at most :data:`MAX_PORTS` ports): a Python ``ssl`` handshake tells TLS
from plaintext (a plaintext service answers a ClientHello with bytes that are no TLS
record: OpenSSL's ``WRONG_VERSION_NUMBER`` and kin); then sslyze (the project's TLS
scanner, already a dependency) enumerates the accepted cipher suites of SSL 2.0 … TLS 1.3.
Pass: TLS 1.3, or TLS 1.2 with forward-secret AEAD suites only, on every port. A listener
that demands a client certificate before it says anything cannot be enumerated without
one: that port is not-tested, never passed.

Only listening services are checked; what the device sends out is not observed here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "tls-config"
MAX_PORTS = 16
OLD_VERSIONS = ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1")
VERSIONS = (*OLD_VERSIONS, "tls_1_2", "tls_1_3")
LABELS = {"ssl_2_0": "SSL 2.0", "ssl_3_0": "SSL 3.0", "tls_1_0": "TLS 1.0",
          "tls_1_1": "TLS 1.1", "tls_1_2": "TLS 1.2", "tls_1_3": "TLS 1.3"}
#: OpenSSL reasons that mean the peer answered with bytes that are not TLS.
_PLAINTEXT_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
                                "RECORD_TOO_LARGE"})


@dataclass(frozen=True)
class PortTLS:
    """What one port showed: ``speaks`` is ``tls``, ``plaintext`` or ``unknown``;
    ``accepted`` maps a version (:data:`VERSIONS`) to the suite names it accepted."""

    port: int
    speaks: str
    accepted: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    note: str = ""


def classify_handshake(error: BaseException | None) -> str:
    """``tls`` (no error), ``plaintext`` (the answer was no TLS) or ``unknown`` (pure)."""
    if error is None:
        return "tls"
    if isinstance(error, ssl.SSLError) and error.reason in _PLAINTEXT_REASONS:
        return "plaintext"
    return "unknown"


def classify_banner(banner: bytes) -> str | None:
    """What a service that speaks first says about itself (pure): ``ssh`` (encrypted, but
    not TLS: its configuration is not judged here), ``plaintext`` (any other greeting: a
    TLS server never speaks first), or None (it waited for the client)."""
    if not banner:
        return None
    if banner.startswith(b"SSH-"):
        return "ssh"
    return "plaintext"


def peek_banner(address: str, port: int, timeout: float) -> bytes:
    """The first bytes a service sends before the client says anything (or b"")."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(256)
    except (OSError, TimeoutError):
        return b""


def strong_tls12_suite(name: str) -> bool:
    """Forward secret (ECDHE/DHE) and AEAD (GCM, CCM, ChaCha20-Poly1305), by IANA name."""
    forward_secret = "_ECDHE_" in name or "_DHE_" in name
    aead = "_GCM_" in name or "_CCM" in name or "CHACHA20_POLY1305" in name
    return forward_secret and aead


def port_problems(result: PortTLS) -> list[str]:
    """What is wrong with one TLS port (empty: nothing) (pure)."""
    problems = [f"{LABELS[version]} accepted"
                for version in OLD_VERSIONS if result.accepted.get(version)]
    weak = [s for s in result.accepted.get("tls_1_2", ()) if not strong_tls12_suite(s)]
    if weak:
        problems.append(f"TLS 1.2 accepts {len(weak)} suite(s) without forward secrecy "
                        f"or AEAD, e.g. {weak[0]}")
    return problems


def verdict(address: str, results: list[PortTLS], context: Context) -> list[Evidence]:
    """Fail on any plaintext port or weak TLS; not-tested when a port could not be
    enumerated or there was nothing to check; pass only when every port is strong (pure)."""
    if not results:
        return for_all(context, NAME, "not-tested", "live",
                       f"no listening TCP service on {address} to check (what the device "
                       "sends out is not observed by this probe)")
    failures, unknown, good = [], [], []
    for result in results:
        where = f"tcp://{address}:{result.port}"
        if result.speaks == "plaintext":
            failures.append((where, f"port {result.port} speaks plaintext, not TLS"))
        elif result.speaks == "tls" and result.accepted:
            problems = port_problems(result)
            if problems:
                failures.append((where, f"port {result.port}: {'; '.join(problems)}"))
            else:
                versions = [LABELS[v] for v in VERSIONS if result.accepted.get(v)]
                good.append(f"port {result.port}: {', '.join(versions)} only, AEAD suites")
        else:
            unknown.append(f"port {result.port}: {result.note or 'not enumerated'}")
    if failures:
        return for_all(context, NAME, "fail", "live",
                       "; ".join(text for _, text in failures), failures[0][0])
    if unknown:
        return for_all(context, NAME, "not-tested", "live", "; ".join(unknown + good))
    return for_all(context, NAME, "pass", "live",
                   "; ".join(good) + " (listening services only)")


def handshake(address: str, port: int, timeout: float,
              client_cert: tuple[Path, Path] | None = None) -> BaseException | None:
    """One TLS handshake offering every version; the error, or None if it completed.

    TLS 1.3 finishes the client's side of the handshake before the server has checked a
    client certificate, so one byte is read: a refusal for want of a certificate arrives
    then (and makes the port ``unknown``, never ``plaintext``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we test the protocol, not who the server is
    if client_cert is not None:
        context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=None) as tls:
            tls.settimeout(min(timeout, 0.5))
            with contextlib.suppress(TimeoutError):  # the server waits for a request
                tls.recv(1)
            return None
    except (OSError, ssl.SSLError) as error:
        return error


def enumerate_suites(address: str, port: int, timeout: float,
                     client_cert: tuple[Path, Path] | None = None) -> PortTLS:
    """sslyze's accepted suites per version (or an ``unknown`` result saying why)."""
    from sslyze import (  # type: ignore[attr-defined]  # lazy: heavy, only for TLS ports
        ClientAuthenticationCredentials,
        ScanCommand,
        Scanner,
        ServerNetworkConfiguration,
        ServerNetworkLocation,
        ServerScanRequest,
        ServerScanStatusEnum,
    )
    commands = {v: getattr(ScanCommand, f"{v.upper()}_CIPHER_SUITES") for v in VERSIONS}
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(address, port),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication=address, network_timeout=max(1, int(timeout)),
            network_max_retries=1,
            tls_client_auth_credentials=None if client_cert is None else
            ClientAuthenticationCredentials(certificate_chain_path=client_cert[0],
                                            key_path=client_cert[1])),
        scan_commands=set(commands.values()))
    scanner = Scanner(per_server_concurrent_connections_limit=4,
                      concurrent_server_scans_limit=1)
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    if result.scan_status != ServerScanStatusEnum.COMPLETED or result.scan_result is None:
        trace = str(result.connectivity_error_trace or "no connectivity").splitlines()[-1:]
        why = trace[0][:120] if trace else ""
        return PortTLS(port, "unknown", note=f"sslyze could not connect ({why}); a listener "
                       "that requires a client certificate looks like this")
    accepted: dict[str, tuple[str, ...]] = {}
    for version in VERSIONS:
        attempt = getattr(result.scan_result, f"{version}_cipher_suites")
        if attempt.result is None:
            return PortTLS(port, "unknown", note=f"sslyze could not enumerate {version}")
        accepted[version] = tuple(s.cipher_suite.name
                                  for s in attempt.result.accepted_cipher_suites)
    return PortTLS(port, "tls", accepted)


def _enumerate_in_child(channel: Any, address: str, port: int, timeout: float,
                        client_cert: tuple[Path, Path] | None) -> None:
    try:
        result = enumerate_suites(address, port, timeout, client_cert)
    except ModuleNotFoundError:
        result = PortTLS(port, "unknown", note="sslyze is not installed "
                         "(pip install 'tinyward[assess]')")
    except Exception as error:  # noqa: BLE001 - whatever the device made sslyze raise
        result = PortTLS(port, "unknown", note=f"sslyze stopped: {type(error).__name__}")
    channel.send(result)


def enumerate_bounded(address: str, port: int, timeout: float,
                      client_cert: tuple[Path, Path] | None, seconds: float) -> PortTLS:
    """:func:`enumerate_suites` in a child process stopped after ``seconds``.

    sslyze makes a few hundred handshakes per port, each with its own ``timeout``; a
    device that answers each one just inside it would hold the probe for an hour, and
    sslyze's threads cannot be stopped from outside. A process can. (spawn, not fork: the
    assessment has threads of its own.)"""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_enumerate_in_child, daemon=True,
                            args=(send, address, port, timeout, client_cert))
    child.start()
    send.close()
    try:
        if receive.poll(max(0.0, seconds)):
            result: PortTLS = receive.recv()
            return result
        return PortTLS(port, "unknown", note=f"sslyze had not finished after {seconds:.0f} "
                       "s (the time budget): stopped, the suites not enumerated")
    except (EOFError, OSError):
        return PortTLS(port, "unknown", note="sslyze ended without a result")
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receive.close()


class TlsConfig:
    name = NAME
    kind = "live"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        if target.address is None:
            return for_all(context, NAME, "not-tested", "live", "no address to connect to")
        ports = context.open_ports if context.open_ports is not None else target.ports
        if ports is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no port scan ran and no ports were named")
        results = []
        for port in ports[:MAX_PORTS]:
            if not budget.spend():
                results.append(PortTLS(port, "unknown", note="time or attempt budget used up"))
                continue
            speaks = classify_banner(peek_banner(target.address, port, 0.5)) or \
                classify_handshake(handshake(target.address, port, min(5.0, budget.left()),
                                             target.client_cert))
            context.services[port] = speaks
            if speaks == "tls":
                results.append(enumerate_bounded(target.address, port,
                                                 min(5.0, max(1.0, budget.left())),
                                                 target.client_cert, budget.left()))
            elif speaks == "plaintext":
                results.append(PortTLS(port, "plaintext"))
            elif speaks == "ssh":
                results.append(PortTLS(port, "unknown", note="SSH: encrypted, but its "
                                       "configuration is not checked by this probe"))
            else:
                results.append(PortTLS(port, "unknown", note="the TLS handshake failed "
                                       "without showing whether the port speaks TLS"))
        if not ports and target.uplink is not None and target.ports is None \
                and context.open_ports is not None:
            return self._uplink(target, context, budget)
        evidence = verdict(target.address, results, context)
        if len(ports) > MAX_PORTS and evidence and evidence[0].verdict == "pass":
            return for_all(context, NAME, "not-tested", "live",
                           f"only the first {MAX_PORTS} of {len(ports)} open ports checked")
        return evidence

    def _uplink(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        """A device that listens on no port (a scan of every port) talks only over its
        uplink: what its fleet server accepts bounds what the device's traffic can be (the
        pin, I-PIN-1, keeps it to that one server)."""
        uplink = target.uplink
        if uplink is None:
            return for_all(context, NAME, "not-tested", "live", "no uplink named")
        address, port = uplink
        if not budget.spend():
            return for_all(context, NAME, "not-tested", "live", "budget used up")
        try:
            result = enumerate_suites(address, port, min(5.0, budget.left()),
                                      target.client_cert)
        except ModuleNotFoundError:
            return for_all(context, NAME, "not-tested", "live", "sslyze is not installed")
        where = f"tcp://{address}:{port}"
        if result.speaks != "tls" or not result.accepted:
            return for_all(context, NAME, "not-tested", "live",
                           f"no listening port on {target.address}; its uplink {where} could "
                           f"not be enumerated ({result.note or 'no TLS'})", where)
        problems = port_problems(result)
        if problems:
            return for_all(context, NAME, "fail", "live",
                           f"no listening port on {target.address}, but its uplink {where} "
                           f"accepts {'; '.join(problems)}", where)
        versions = [LABELS[v] for v in VERSIONS if result.accepted.get(v)]
        return for_all(context, NAME, "pass", "live",
                       f"no listening port on {target.address} (scan of every TCP port); its "
                       f"only traffic, the uplink to {where}, accepts {', '.join(versions)} "
                       "only, AEAD suites", where)


__all__ = ["PortTLS", "TlsConfig", "classify_handshake", "enumerate_bounded",
           "enumerate_suites", "handshake",
           "port_problems", "strong_tls12_suite", "verdict"]
