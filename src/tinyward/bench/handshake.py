"""`tinyward bench handshake`: what a device's mutual-TLS 1.3 connection costs the fleet
server, against OpenSSL's own server measured in the same run.

The limit is OpenSSL alone: ``openssl s_server`` with the fleet's server certificate and
key, requiring a client certificate from the fleet's device CA (``-Verify 1
-verify_return_error -partial_chain``, as the fleet's device listener does), TLS 1.3 only,
no session tickets. The system is the real fleet server (``tinyward fleet serve``, one
worker) with the same certificate, key and CA. One client drives both: ``openssl s_time
-new`` (a full handshake per connection, never a resumed session) with an enrolled
device's TLS certificate and key, so both servers see the same client, the same key types
(ECDSA P-256 on both sides) and negotiate the same cipher suite and key-exchange group
(printed once for each server, from ``openssl s_client -brief``).

The figure is server CPU per handshake, read from ``/proc/PID/stat`` (user + system, all
threads) before and after each round: the inverse is handshakes per CPU-second, i.e. per
core. Rounds alternate between the two servers (OpenSSL, fleet, OpenSSL, fleet, …) so that
a machine shared with other work slows both alike; the ratio is taken per pair of rounds
and its median printed. For the fleet server a connection includes what it does once per
connection after the handshake (:meth:`FleetServer.meet_connection`: the certificate
check, the device's key and schedule, its last sequence number) and aiohttp's connection
set-up: what a reconnecting device costs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from tinyward.errors import StateError
from tinyward.fleet.pki import Fleet
from tinyward.lab.fleetproc import server_environment
from tinyward.lab.simdevice import SimulatedDevice

PASSPHRASE = b"tinyward-bench-passphrase"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: ``openssl s_client -brief`` lines that say what was negotiated.
_NEGOTIATED = ("Protocol version", "Ciphersuite", "Peer signature type", "Signature type",
               "Server Temp Key", "Negotiated TLS1.3 group")


class HandshakeBenchUnavailable(StateError):
    """The handshake bench cannot run here (no ``openssl`` command)."""


@dataclass(frozen=True)
class HandshakeRound:
    """One timed round against one server."""

    server: str  # "openssl" or "fleet"
    handshakes: int
    seconds: float  # wall
    server_cpu_seconds: float

    @property
    def cpu_ms_per_handshake(self) -> float:
        return self.server_cpu_seconds / self.handshakes * 1e3 if self.handshakes else 0.0

    @property
    def per_core(self) -> float:
        """Handshakes per server CPU-second."""
        return self.handshakes / self.server_cpu_seconds if self.server_cpu_seconds else 0.0


@dataclass(frozen=True)
class HandshakeResult:
    """What one run measured: rounds in the order they ran, and what was negotiated."""

    rounds: tuple[HandshakeRound, ...]
    negotiated: dict[str, tuple[str, ...]]
    openssl_version: str

    def of(self, server: str) -> list[HandshakeRound]:
        return [r for r in self.rounds if r.server == server]

    def median_cpu_ms(self, server: str) -> float:
        return statistics.median(r.cpu_ms_per_handshake for r in self.of(server))

    @property
    def ratios(self) -> list[float]:
        """Fleet handshakes per core / OpenSSL's, for each pair of neighbouring rounds."""
        return [fleet.per_core / ossl.per_core
                for ossl, fleet in zip(self.of("openssl"), self.of("fleet"), strict=False)
                if ossl.per_core and fleet.per_core]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port}")


def _s_time(port: int, cert: Path, key: Path, root: Path, seconds: float) -> int:
    """Full handshakes ``openssl s_time -new`` completed against ``port`` in ``seconds``."""
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
         "-time", str(max(1, round(seconds))), "-cert", str(cert), "-key", str(key),
         "-CAfile", str(root)],
        capture_output=True, text=True, timeout=seconds + 60, check=False)
    found = re.search(r"(\d+) connections in [\d.]+s;", out.stdout)
    if found is None:
        raise RuntimeError(f"openssl s_time failed: {(out.stdout + out.stderr)[-500:]}")
    return int(found.group(1))


def _negotiated(port: int, cert: Path, key: Path, root: Path) -> tuple[str, ...]:
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", "-cert", str(cert),
         "-key", str(key), "-CAfile", str(root)],
        input="", capture_output=True, text=True, timeout=30, check=False)
    return tuple(line.strip() for line in (out.stdout + out.stderr).splitlines()
                 if line.strip().startswith(_NEGOTIATED))


def _refuses_without_certificate(port: int, root: Path) -> bool:
    """Whether a client without a certificate is refused (else the figure would flatter:
    a handshake without client authentication is cheaper)."""
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", "-ign_eof",
         "-CAfile", str(root)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
    # OpenSSL sends the certificate_required alert; asyncio closes the connection at once.
    return any(sign in out.stdout + out.stderr
               for sign in ("alert certificate required", "unexpected eof"))


def run_handshake(rounds: int = 3, seconds: float = 2.0,
                  progress: Callable[[str], None] | None = None) -> HandshakeResult:
    """Alternate ``rounds`` rounds of ``seconds`` each against OpenSSL's server and the
    fleet server (same certificates, same client); return every round's figures.

    Raises:
        HandshakeBenchUnavailable: no ``openssl`` command on PATH.
    """
    if shutil.which("openssl") is None:
        raise HandshakeBenchUnavailable(
            "the handshake bench needs the openssl command (Debian package openssl)")
    say = progress or (lambda _text: None)
    version = subprocess.run(["openssl", "version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="tinyward-bench-hs-") as tmp:
        folder = Path(tmp)
        say("creating a fleet and enrolling a device …")
        fleet = Fleet.init(folder / "fleet", PASSPHRASE)  # server key in clear (0600)
        device = SimulatedDevice.enrolled(fleet, fleet.device_ca_token(PASSPHRASE))
        cert, key = device.write_tls_files(folder / "tls")
        root, device_cas = folder / "root.pem", folder / "device-ca.pem"
        root.write_text(device.root_ca_pem)
        device_cas.write_bytes(b"".join(ca.public_bytes(Encoding.PEM)
                                        for ca in fleet.device_cas))
        server_key = fleet.directory / "server" / "server.key.pem"
        ossl_port = _free_port()
        ossl = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{ossl_port}",
             "-cert", str(fleet.server_certificate_path), "-key", str(server_key),
             "-CAfile", str(device_cas), "-partial_chain", "-Verify", "1",
             "-verify_return_error", "-tls1_3", "-no_ticket", "-quiet", "-naccept", "1000000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            text=True)
        fleet_port = _free_port()
        fleet_server = subprocess.Popen(
            [sys.executable, "-m", "tinyward", "fleet", "serve", str(folder / "fleet"),
             "--port", str(fleet_port), "--admin-port", "0", "--workers", "1",
             "--max-handshakes-per-ip", "5000", "--max-connections-per-ip", "100000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=(folder / "fleet.log").open("w"), text=True,
            env=server_environment(None))
        try:
            _wait_listening(ossl_port, ossl, "openssl s_server")
            _wait_listening(fleet_port, fleet_server, "the fleet server")
            for name, port in (("openssl s_server", ossl_port), ("the fleet server", fleet_port)):
                if not _refuses_without_certificate(port, root):
                    raise RuntimeError(f"{name} accepted a client without a certificate")
            negotiated = {"openssl": _negotiated(ossl_port, cert, key, root),
                          "fleet": _negotiated(fleet_port, cert, key, root)}
            done: list[HandshakeRound] = []
            for index in range(rounds):
                for name, process, port in (("openssl", ossl, ossl_port),
                                            ("fleet", fleet_server, fleet_port)):
                    say(f"round {index + 1}/{rounds}: {name} …")
                    before, start = _cpu_seconds(process.pid), time.perf_counter()
                    count = _s_time(port, cert, key, root, seconds)
                    time.sleep(0.2)  # let the server finish the last connection's work
                    done.append(HandshakeRound(name, count, time.perf_counter() - start,
                                               _cpu_seconds(process.pid) - before))
        finally:
            for process in (ossl, fleet_server):
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(30)
        return HandshakeResult(tuple(done), negotiated, version)
