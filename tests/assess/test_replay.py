"""replay: the tinyward fleet refuses a report sent twice (pass); a server that accepts
every POST takes it twice (the control: fail); a stale capture shows nothing."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinyward.assess.model import load_model
from tinyward.assess.probes import replay
from tinyward.assess.probes.base import Context
from tinyward.assess.probes.replay import Replay, ReplaySpec
from tinyward.assess.run import assess
from tinyward.assess.target import make_target

from .tlsservice import self_signed


def _ctx() -> Context:
    return Context(load_model())


def test_replay_verdicts() -> None:
    spec = ReplaySpec(b"r", 443)
    assert replay.verdict("127.0.0.1", spec, 200, 409, _ctx())[0].verdict == "pass"
    assert replay.verdict("127.0.0.1", spec, 200, 200, _ctx())[0].verdict == "fail"
    assert replay.verdict("127.0.0.1", spec, 409, 409, _ctx())[0].verdict == "not-tested"
    assert replay.verdict("127.0.0.1", spec, None, None, _ctx())[0].verdict == "not-tested"


@pytest.fixture(scope="module", name="fleet")
def _fleet(tmp_path_factory: pytest.TempPathFactory):
    from ..fleet.serverkit import running_server

    yield from running_server(tmp_path_factory, ("a",))


def test_the_tinyward_fleet_refuses_a_report_sent_twice(fleet, tmp_path: Path) -> None:
    cert, key = fleet.devices["a"].write_tls_files(tmp_path)
    spec = ReplaySpec(fleet.report("a"), fleet.server.port)  # made, never sent
    result = assess(make_target(address="127.0.0.1", client_cert=(cert, key), replay=spec),
                    probes=[Replay()])
    evidence = result.verdicts["I-REPLAY-1"]
    assert evidence.verdict == "pass", evidence.text
    # Now the capture is stale: the fleet refuses it again, which shows nothing new.
    again = assess(make_target(address="127.0.0.1", client_cert=(cert, key), replay=spec),
                   probes=[Replay()])
    assert again.verdicts["I-REPLAY-1"].verdict == "not-tested"


class _AcceptAll(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(name="accept_all")
def _accept_all(tmp_path: Path) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AcceptAll)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed(tmp_path))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_control_a_server_without_replay_protection_fails(accept_all: int) -> None:
    spec = ReplaySpec(b"a captured report", accept_all)
    result = assess(make_target(address="127.0.0.1", replay=spec), probes=[Replay()])
    evidence = result.verdicts["I-REPLAY-1"]
    assert evidence.verdict == "fail" and "accepted twice" in evidence.text
