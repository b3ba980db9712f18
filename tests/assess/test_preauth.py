"""preauth-exhaustion: held idle connections must not keep a fresh client out. A
single-threaded server is starved (the control: fail); a threaded one and the tinyward
fleet's device listener (with a device certificate) serve through the flood (pass)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tinyward.assess.model import load_model
from tinyward.assess.probes import preauth
from tinyward.assess.probes.base import Context
from tinyward.assess.probes.preauth import FloodRun, PreauthExhaustion
from tinyward.assess.run import assess
from tinyward.assess.target import make_target

from .weakdevice import weak_device


def _ctx() -> Context:
    return Context(load_model())


def test_preauth_verdicts() -> None:
    assert preauth.verdict("127.0.0.1", [FloodRun(80, True, 160, 0, True)],
                           _ctx())[0].verdict == "pass"
    starved = preauth.verdict("127.0.0.1", [FloodRun(80, True, 160, 0, False)], _ctx())[0]
    assert starved.verdict == "fail" and "160 idle connections" in starved.text
    untested = preauth.verdict("127.0.0.1", [FloodRun(443, False, 0, 0, False, "x")], _ctx())
    assert untested[0].verdict == "not-tested"
    assert preauth.verdict("127.0.0.1", [], _ctx())[0].verdict == "not-tested"


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(name="single_threaded")
def _single_threaded() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Hello)  # one request at a time, no timeout
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()  # the held connections close first (the probe let go)
        server.server_close()


def test_control_a_single_threaded_server_is_starved(single_threaded: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preauth, "BOUND", 3.0)  # it never serves: waiting longer changes nothing
    monkeypatch.setattr(preauth, "FLOOD", 8)
    result = assess(make_target(address="127.0.0.1", ports=(single_threaded,)),
                    probes=[PreauthExhaustion()])
    evidence = result.verdicts["A-PREAUTH-1"]
    assert evidence.verdict == "fail", evidence.text


def test_a_threaded_server_serves_through_the_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python's accept queue is 5 deep: past it each connection waits for a SYN resend
    # (1 s), so a smaller flood keeps the test short; the verdict rule is the same.
    monkeypatch.setattr(preauth, "FLOOD", 40)
    with weak_device() as weak:
        result = assess(make_target(address="127.0.0.1", ports=(weak.http_port,)),
                        probes=[PreauthExhaustion()])
    evidence = result.verdicts["A-PREAUTH-1"]
    assert evidence.verdict == "pass", evidence.text


@pytest.fixture(scope="module", name="fleet")
def _fleet(tmp_path_factory: pytest.TempPathFactory):
    from ..fleet.serverkit import running_server

    yield from running_server(tmp_path_factory, ("a",))


def test_tinyward_device_listener_serves_a_device_through_the_flood(fleet,
                                                                     tmp_path: Path) -> None:
    from tinyward.assess.probes.tlsconfig import TlsConfig

    cert, key = fleet.devices["a"].write_tls_files(tmp_path)
    target = make_target(address="127.0.0.1", ports=(fleet.server.port,),
                         client_cert=(cert, key))
    result = assess(target, probes=[TlsConfig(), PreauthExhaustion()])
    evidence = result.verdicts["A-PREAUTH-1"]
    assert evidence.verdict == "pass", evidence.text
    # Without the device's certificate nothing can show the device would be served.
    bare = assess(make_target(address="127.0.0.1", ports=(fleet.server.port,)),
                  probes=[TlsConfig(), PreauthExhaustion()])
    assert bare.verdicts["A-PREAUTH-1"].verdict == "not-tested"


# A device that listens on no port is reached through its uplink, which demands the
# device's certificate: a client without one must be refused in the handshake there.

def _uplink_evidence(port: int, client_cert: tuple[Path, Path] | None):
    from tinyward.assess.probes.base import Budget

    # What a scan of every port of a device with no listener leaves: no open port.
    context = Context(load_model(), open_ports=())
    target = make_target(address="127.0.0.1", uplink_port=port, client_cert=client_cert)
    (evidence,) = PreauthExhaustion().run(target, context, Budget(seconds=120))
    return evidence


def test_anonymous_verdicts() -> None:
    from tinyward.assess.probes.preauth import Anonymous, anonymous_verdict

    answered = Anonymous(False, "finished the TLS handshake and was answered",
                         "HTTP/1.1 404 Not Found")
    assert "HTTP/1.1 404" in (anonymous_verdict("tcp://127.0.0.1:1", answered) or "")
    assert anonymous_verdict("tcp://127.0.0.1:1", Anonymous(True, "refused")) is None
    # No answer and no refusal is not evidence either way.
    assert anonymous_verdict("tcp://127.0.0.1:1", Anonymous(None, "timeout")) is None


@pytest.fixture(scope="module", name="optional_fleet")
def _optional_fleet(fleet, tmp_path_factory: pytest.TempPathFactory):
    """A second device listener of the same fleet with the lab's unsafe control on: the
    certificate optional in the handshake (``fleet serve --unsafe-client-cert-optional``)."""
    from tinyward.fleet.directory import FleetDirectory
    from tinyward.fleet.runner import ServerThread, server_ssl_context
    from tinyward.fleet.server import FleetServer, ServerConfig
    from tinyward.fleet.store import open_store

    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('optional') / 'reports.db'}")
    server = ServerThread(
        FleetServer(FleetDirectory(fleet.fleet), store,
                    ServerConfig(unsafe_client_cert_optional=True)),
        server_ssl_context(fleet.fleet, unsafe_client_cert_optional=True))
    yield server
    server.stop()
    store.close()


def test_attack_an_uplink_that_lets_certificate_less_clients_in_fails(
        fleet, optional_fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preauth, "FLOOD", 20)
    cert, key = fleet.devices["a"].write_tls_files(tmp_path)
    evidence = _uplink_evidence(optional_fleet.port, (cert, key))
    assert evidence.verdict == "fail", evidence.text
    assert "let a client with no certificate finish the TLS handshake" in evidence.text
    assert "HTTP/1.1 404" in evidence.text  # its request was answered, unauthenticated


def test_an_uplink_that_requires_the_certificate_in_the_handshake_passes(
        fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preauth, "FLOOD", 20)
    cert, key = fleet.devices["a"].write_tls_files(tmp_path)
    evidence = _uplink_evidence(fleet.server.port, (cert, key))
    assert evidence.verdict == "pass", evidence.text
    assert "without a certificate was refused in the handshake" in evidence.text
    # Without the manufacturer's credential nothing says the uplink demands certificates,
    # and the device's own client cannot be shown to be served: not tested.
    assert _uplink_evidence(fleet.server.port, None).verdict == "not-tested"
