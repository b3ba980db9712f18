"""Live attacks on the link, reusable by the demo, the tests and the assessment.

Each function *performs* one attack with real parts (real TLS, real certificates, real
sockets on loopback or in a network namespace the caller created) and returns an
:class:`Outcome` saying whether the system under test refused it and how. Nothing here
decides a pass or a fail for a tier; that is the assessment's job.

- :func:`server_credentials_other_ca`, :func:`server_credentials_wrong_key`: certificates
  for a rogue fleet server (another CA; the right CA but a key other than the pinned one).
- :class:`RogueServer`: a TLS server on loopback holding such a certificate; it records
  whether a device completed a handshake and whether any request byte ever arrived.
- :func:`client_with_rogue_certificate`: a client with a self-signed or other-CA
  certificate trying to post to the fleet server.
- :func:`post_as`: post arbitrary bytes with a device's real TLS identity (replay, flipped
  byte, a report signed by another device).
- :func:`listening_sockets`, :func:`nmap_open_ports`: is anything listening?
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tinyward.fleet.profiles import make_root_ca, make_server_certificate
from tinyward.link.client import REPORT_CONTENT_TYPE, REPORTS_PATH, client_context


@dataclass(frozen=True)
class Outcome:
    """What happened: ``refused`` is True when the system under test said no."""

    attack: str
    refused: bool
    detail: str
    #: What success is called: "refused" for an attack, "verified" for a control check.
    label: str = "refused"
    #: Why, in a few plain words (the demo's table); ``detail`` has the whole story.
    reason: str = ""


# ---- refusals in plain words ------------------------------------------------------------

#: The fleet server's refusal codes (tinyward.fleet.ingest), as a person would say them.
HTTP_REFUSALS = {
    "replay": "already stored: a replay",
    "bad_signature": "signature does not verify",
    "signer_mismatch": "signed by another device",
    "unknown_device": "not a device of this fleet",
    "revoked": "device revoked",
    "client_certificate_required": "no device certificate",
    "malformed": "not a well-formed report",
    "bad_size": "wrong report size",
    "bad_padding": "padding is not zeros",
    "clock_skew": "dated outside the clock window",
    "rate_limited": "too many reports",
}


def tls_refusal_in_words(error: BaseException) -> str:
    """What a failed TLS connection means, in plain words, instead of OpenSSL's text
    (``EOF occurred in violation of protocol (_ssl.c:2393)``)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"server certificate refused: {error.verify_message}"
    text = f"{getattr(error, 'reason', '') or ''} {error}".upper()
    if "UNKNOWN_CA" in text or "UNKNOWN CA" in text:
        return "certificate's CA not trusted by peer"
    if "CERTIFICATE_REQUIRED" in text or "CERTIFICATE REQUIRED" in text:
        return "the peer requires a certificate"
    if any(word in text for word in ("BAD_CERTIFICATE", "BAD CERTIFICATE",
                                      "CERTIFICATE_UNKNOWN", "CERTIFICATE UNKNOWN")):
        return "certificate not accepted by the peer"
    if isinstance(error, (ssl.SSLEOFError, ConnectionResetError, ConnectionAbortedError,
                          http.client.RemoteDisconnected)) or "EOF" in text:
        # TLS 1.3: a server that refuses the client's certificate closes the session after
        # the client's Finished, before any answer.
        return "server hung up in the TLS handshake"
    if isinstance(error, ConnectionRefusedError):
        return "nothing listens there"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return f"TLS failed: {getattr(error, 'reason', None) or type(error).__name__}"


# ---- credentials --------------------------------------------------------------------------


def _write_pair(directory: Path, name: str, cert: x509.Certificate,
                key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt.pem", directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def server_credentials_other_ca(directory: Path, names: tuple[str, ...] = ("127.0.0.1",
                                                                          "localhost")
                                ) -> tuple[Path, Path]:
    """A valid server certificate from a CA that is not the fleet's."""
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_root_ca(root_key, now)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_server_certificate(key.public_key(), list(names), root, root_key, now)
    return _write_pair(directory, "server-other-ca", cert, key)


def server_credentials_wrong_key(directory: Path, fleet_dir: Path, ca_passphrase: bytes,
                                 names: tuple[str, ...] = ("127.0.0.1", "localhost")
                                 ) -> tuple[Path, Path]:
    """A server certificate the fleet's own root CA issued, for a key that is not pinned.

    Stands for a mis-issued certificate or a CA key used by an insider; chain checks alone
    accept it, only the pin refuses it.
    """
    from tinyward.fleet.pki import Fleet

    fleet = Fleet.open(fleet_dir)
    root_key = fleet.root_ca_token(ca_passphrase)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_server_certificate(key.public_key(), list(names), fleet.root_ca, root_key,
                                   datetime.now(UTC))
    return _write_pair(directory, "server-wrong-key", cert, key)


def client_credentials(directory: Path, kind: str) -> tuple[Path, Path]:
    """A TLS client certificate that the fleet must refuse: ``self-signed`` or ``other-ca``."""
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tinyward device"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "f" * 64)])
    if kind == "self-signed":
        issuer_name, issuer_key = subject, key
    elif kind == "other-ca":
        issuer_key = ec.generate_private_key(ec.SECP256R1())
        issuer_name = make_root_ca(issuer_key, now).subject
    else:
        raise ValueError(f"unknown client certificate kind {kind!r}")
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(issuer_key, hashes.SHA256()))
    return _write_pair(directory, f"client-{kind}", cert, key)


# ---- a rogue server ------------------------------------------------------------------------


class RogueServer:
    """A TLS 1.3 server on ``host`` that impersonates the fleet server.

    It records how many clients completed a handshake and how many application bytes it
    received: a device that checks its pin completes the handshake (the chain is good)
    but must send nothing after it.
    """

    def __init__(self, cert: Path, key: Path, host: str = "127.0.0.1") -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_3
        self._context.load_cert_chain(str(cert), str(key))
        self._sock = socket.create_server((host, 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.host = host
        self.handshakes = 0
        self.bytes_received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rogue-server", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(3.0)
        try:
            with self._context.wrap_socket(raw, server_side=True) as tls:
                self.handshakes += 1
                data = b""
                while len(data) < 1 << 16:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                    self.bytes_received += len(chunk)
                    if b"\r\n\r\n" in data:
                        body = json.dumps({"stored_seq": 0}).encode()
                        tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                    % (len(body), body))
                        break
        except (OSError, ssl.SSLError):
            pass


# ---- clients -------------------------------------------------------------------------------


def _post(host: str, port: int, context: ssl.SSLContext, body: bytes,
          timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        conn.request("POST", REPORTS_PATH, body=body,
                     headers={"Content-Type": REPORT_CONTENT_TYPE})
        response = conn.getresponse()
        raw = response.read(65536)
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = {"raw": raw[:200].decode("latin-1")}
        return response.status, document if isinstance(document, dict) else {}
    finally:
        conn.close()


def client_with_rogue_certificate(host: str, port: int, root_ca_pem: bytes, cert: Path,
                                  key: Path, kind: str, report: bytes) -> Outcome:
    """Post ``report`` to the fleet server holding a client certificate it must refuse."""
    context = client_context(root_ca_pem)
    context.load_cert_chain(str(cert), str(key))
    name = f"client with a {kind} certificate"
    try:
        status, document = _post(host, port, context, report)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected) as error:
        # TLS 1.3: the server checks the client certificate after the client has sent its
        # Finished, so a refusal often shows as the session ending before any HTTP answer.
        words = tls_refusal_in_words(error)
        if "hung up" in words:  # the usual TLS 1.3 refusal: say what it means here
            return Outcome(name, True, "the server closed the TLS session during the "
                           "handshake, before any HTTP answer: it did not accept this "
                           "certificate, and the report was never read",
                           reason="certificate refused in the handshake")
        return Outcome(name, True, f"{words}; no HTTP answer, the report was never read",
                       reason=words)
    return Outcome(name, False, f"the server answered HTTP {status}: {document}",
                   reason=f"accepted: HTTP {status}")


def post_as(device: Any, host: str, port: int, data: bytes, name: str) -> Outcome:
    """Post ``data`` with ``device``'s real TLS identity; refused unless a 2xx comes back."""
    from tinyward.link.client import device_context

    context, _pin = device_context(device)
    try:
        status, document = _post(host, port, context, data)
    except (OSError, ssl.SSLError, http.client.HTTPException) as error:
        words = tls_refusal_in_words(error)
        return Outcome(name, True, f"connection failed: {words}", reason=words)
    refused = not 200 <= status < 300
    code = str(document.get("code") or document.get("error") or "")
    reason = str(document.get("reason") or document.get("detail") or "")
    words = HTTP_REFUSALS.get(code, code.replace("_", " ")) if refused else "stored"
    return Outcome(name, refused, f"HTTP {status} {code} {reason}".strip(),
                   reason=f"{words} (HTTP {status})")


def flip_byte(data: bytes, index: int) -> bytes:
    """``data`` with one bit of byte ``index`` flipped (a tampered report)."""
    out = bytearray(data)
    out[index % len(out)] ^= 0x01
    return bytes(out)


# ---- is anything listening? -------------------------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _proc_listeners(pid: int) -> list[str]:
    """LISTEN TCP sockets of ``pid`` from /proc/PID/net (the process's own namespace)."""
    mine = _socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in mine:  # 0A = LISTEN
                found.append(f"{table} {fields[1]}")
    return found


def listening_sockets(pids: list[int]) -> list[tuple[int, str]]:
    """Every LISTEN TCP socket (and bound UDP socket) held by these processes and children.

    Two views: psutil, and the process's own /proc/PID/net tables (which also see a
    process inside another network namespace, where psutil's system-wide view does not).
    """
    found: list[tuple[int, str]] = []
    procs: list[psutil.Process] = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            conns = []
        for conn in conns:
            udp_bound = conn.type == socket.SOCK_DGRAM and conn.laddr
            if conn.status == psutil.CONN_LISTEN or udp_bound:
                found.append((proc.pid, f"{conn.laddr.ip}:{conn.laddr.port}"))
        found += [(proc.pid, entry) for entry in _proc_listeners(proc.pid)]
    return found


def established_connections(pid: int) -> int:
    """How many ESTABLISHED TCP connections ``pid`` holds (from its own /proc/PID/net)."""
    mine = _socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        count += sum(1 for line in lines
                     if len(f := line.split()) > 9 and f[3] == "01" and f[9] in mine)
    return count


def nmap_open_ports(address: str, netns: str | None = None, timeout: float = 120.0
                    ) -> tuple[list[int], str]:
    """Scan every TCP port (1-65535) of ``address`` with nmap; return open ports and a summary.

    ``netns`` runs nmap inside that network namespace. Raises FileNotFoundError without nmap.
    """
    nmap = shutil.which("nmap")
    if nmap is None:
        raise FileNotFoundError("nmap is not installed (scripts/install-system-deps.sh)")
    command = [nmap, "-n", "-Pn", "-sT", "-p-", "-T5", "--max-retries", "1", "-oX", "-", address]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nmap failed: {done.stderr.strip()[:300]}")
    root = ET.fromstring(done.stdout)  # noqa: S314 - nmap's own output, of a scan we ran
    open_ports = [int(port.get("portid", "0")) for port in root.iter("port")
                  if (state := port.find("state")) is not None and state.get("state") == "open"]
    closed = 0
    for extra in root.iter("extraports"):
        closed += int(extra.get("count", "0"))
    return open_ports, f"{len(open_ports)} open, {closed} closed or filtered of 65535"


__all__ = ["HTTP_REFUSALS", "Outcome", "RogueServer", "client_credentials",
           "client_with_rogue_certificate", "established_connections", "flip_byte",
           "listening_sockets", "nmap_open_ports", "post_as", "server_credentials_other_ca",
           "server_credentials_wrong_key", "tls_refusal_in_words"]
