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
