"""The assessment lab's fleet control, ``fleet serve --unsafe-client-cert-optional``
(docs/assessment.md, "A tinyward device in the lab"): hidden, off by default, and what it
switches off matters. With the device listener's certificate required in the handshake,
certificate-less clients never finish it and never hold a device's slot; with it
optional they reach HTTP before authentication and can take every slot."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.pki import Fleet
from tinyward.fleet.runner import ServerThread, server_ssl_context
from tinyward.fleet.server import FleetServer, ServerConfig
from tinyward.fleet.store import open_store
from tinyward.lab.fleetproc import server_environment
from tinyward.lab.simdevice import SimulatedDevice

from .serverkit import COSE_TYPE, PASSPHRASE

SLOTS = 4  # max_connections of the servers below: small, so a few clients fill it


def test_the_switch_is_off_by_default_and_hidden() -> None:
    assert ServerConfig().unsafe_client_cert_optional is False
    shown = subprocess.run([sys.executable, "-m", "tinyward", "fleet", "serve", "--help"],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    assert "unsafe" not in shown.lower() and "cert-optional" not in shown


def _anonymous() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _answered_without_certificate(port: int, held: contextlib.ExitStack) -> bool:
    """One certificate-less client from 127.0.0.2 (another address than the device's):
    True if the server answered its request on a kept-alive connection (``held`` keeps
    it open), False if it was refused."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10,
                                   source_address=("127.0.0.2", 0))
    held.callback(raw.close)
    try:
        tls = _anonymous().wrap_socket(raw)
        held.callback(tls.close)
        tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return tls.recv(4096).startswith(b"HTTP/1.1 200")
    except (ssl.SSLError, OSError):
        return False


@pytest.fixture(scope="module", name="fleet")
def _fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Path]]:
    folder = tmp_path_factory.mktemp("certopt")
    yield Fleet.init(folder / "fleet", PASSPHRASE), folder


def _server(fleet: Fleet, folder: Path, optional: bool) -> ServerThread:
    config = ServerConfig(max_connections=SLOTS, idle_timeout=30.0,
                          unsafe_client_cert_optional=optional)
    store = open_store(f"sqlite:///{folder / f'reports-{optional}.db'}")
    return ServerThread(FleetServer(FleetDirectory(fleet), store, config),
                        server_ssl_context(fleet, unsafe_client_cert_optional=optional))


def _device_served(fleet: Fleet, folder: Path, port: int) -> str:
    """An enrolled device posts a report: ``stored``, ``HTTP <status>`` or, when the server
    cut its connection before any answer, ``no answer``."""
    device = SimulatedDevice.enrolled(fleet, PASSPHRASE)
    context = device.client_context(folder / "tls" / device.device_id)
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request("POST", "/v1/reports", body=device.report(timestamp=int(time.time())),
                           headers={"Content-Type": COSE_TYPE})
        status = connection.getresponse().status
        return "stored" if status == 200 else f"HTTP {status}"
    except (ssl.SSLError, OSError, http.client.HTTPException):
        return "no answer"
    finally:
        connection.close()


def _flood_then_device(fleet: Fleet, folder: Path, optional: bool) -> tuple[int, str]:
    server = _server(fleet, folder, optional)
    try:
        with contextlib.ExitStack() as held:
            answered = sum(_answered_without_certificate(server.port, held)
                           for _ in range(SLOTS))
            return answered, _device_served(fleet, folder, server.port)
    finally:
        server.stop()


def test_attack_certificate_less_clients_take_every_device_slot_when_optional(
        fleet: tuple[Fleet, Path]) -> None:
    answered, device = _flood_then_device(*fleet, optional=True)
    assert answered == SLOTS  # each finished the handshake and got HTTP, unauthenticated
    assert device == "no answer"  # ... and the device found no slot left


def test_certificate_required_in_the_handshake_keeps_the_slots_for_devices(
        fleet: tuple[Fleet, Path]) -> None:
    answered, device = _flood_then_device(*fleet, optional=False)
    assert answered == 0
    assert device == "stored"


def test_fleet_serve_with_the_switch_warns_and_lets_a_certificate_less_client_in(
        fleet: tuple[Fleet, Path]) -> None:
    # The real command line: the hidden flag reaches the device listener.
    argv = [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet[0].directory),
            "--port", "0", "--admin-port", "0", "--unsafe-client-cert-optional"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=server_environment(None))
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # ends with the process if it never announces itself
            lines.append(line)
            if "listening on" in line or len(lines) > 50:
                break
        assert any("warning: UNSAFE lab control on" in line for line in lines), lines
        port = int(lines[-1].split("listening on https://127.0.0.1:")[1].split()[0])
        with contextlib.ExitStack() as held:
            assert _answered_without_certificate(port, held)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
