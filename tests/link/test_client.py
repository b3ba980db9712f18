"""The link refuses any server that fails the chain or the pin, before sending a report.

Every server here is a real TLS 1.3 server on 127.0.0.1.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from tests.link.conftest import PASSPHRASE, World
from tests.link.liveserver import LiveFleetServer
from tinyward.assess.attacks.certificates import (
    server_credentials_other_ca,
    server_credentials_wrong_key,
)
from tinyward.assess.attacks.rogue_server import RogueServer
from tinyward.errors import Misuse
from tinyward.link.client import Backoff, ReportLink, ServerURL, device_context
from tinyward.link.errors import (
    BadServerAnswer,
    PinMismatch,
    ReportRejected,
    ServerRefused,
    ServerUnreachable,
)
from tinyward.trust import report as codec


def _report(device, seq: int) -> bytes:
    import time
    return codec.encode_report(codec.Report(device.device_id, seq, int(time.time())),
                               device.signer("report"))


def test_posts_a_report_and_reads_the_acknowledgement(world: World) -> None:
    device = world.device("a")
    with LiveFleetServer(world.fleet) as server:
        link = ReportLink(server.url, *device_context(device))
        assert link.send(_report(device, 1)) == 1
        assert link.send(_report(device, 2)) == 2
        # Sent again after a lost acknowledgement: the server says it has it already.
        assert link.send(_report(device, 2)) == 2
        link.close()
    assert server.stored[device.device_id] == [1, 2]


def test_server_with_right_ca_but_wrong_key_is_refused_before_any_report_byte(
        world: World, tmp_path: Path) -> None:
    device = world.device("a")
    cert, key = server_credentials_wrong_key(tmp_path / "mitm", world.fleet.directory,
                                             PASSPHRASE)
    with RogueServer(cert, key) as rogue:
        link = ReportLink(rogue.url, *device_context(device))
        with pytest.raises(PinMismatch, match="not the pinned server key"):
            link.send(_report(device, 1))
    assert rogue.handshakes == 1  # the chain was fine: only the pin caught it
    assert rogue.bytes_received == 0


def test_server_from_another_ca_is_refused_at_the_handshake(world: World, tmp_path: Path) -> None:
    device = world.device("a")
    cert, key = server_credentials_other_ca(tmp_path / "other")
    with RogueServer(cert, key) as rogue:
        link = ReportLink(rogue.url, *device_context(device))
        with pytest.raises(ServerRefused, match="certificate failed verification"):
            link.send(_report(device, 1))
    assert rogue.bytes_received == 0


def test_server_certificate_for_another_host_name_is_refused(tmp_path: Path) -> None:
    from tinyward.fleet.pki import Fleet

    fleet = Fleet.init(tmp_path / "named", PASSPHRASE, server_names=("fleet.example",))
    device = World(tmp_path, fleet).device("a")
    with LiveFleetServer(fleet) as server:
        link = ReportLink(server.url, *device_context(device))  # 127.0.0.1 is not named
        with pytest.raises(ServerRefused, match="IP address mismatch"):
            link.send(_report(device, 1))


def test_unreachable_server_is_reported_as_such(world: World) -> None:
    device = world.device("a")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    link = ReportLink(f"https://127.0.0.1:{port}", *device_context(device))
    with pytest.raises(ServerUnreachable):
        link.send(_report(device, 1))


def test_a_missing_pin_is_refused(world: World) -> None:
    context, _pin = device_context(world.device("a"))
    with pytest.raises(Misuse, match="pin"):
        ReportLink("https://127.0.0.1:1", context, b"")


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "https://u:p@h:1", "https://h:1/x",
                                 "https://h:99999", "ftp://h"])
def test_bad_server_urls_are_refused(url: str) -> None:
    with pytest.raises(Misuse):
        ServerURL.parse(url)


def test_backoff_grows_with_jitter_and_is_bounded() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(3))
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(0.125 <= d <= 8.0 for d in delays)
    assert len(set(delays)) == len(delays)  # jittered
    assert max(delays[6:]) > 2.0 and max(delays[:2]) <= 1.0
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_a_connection_the_server_closed_while_idle_is_replaced_once(world: World) -> None:
    device = world.device("a")
    with LiveFleetServer(world.fleet) as server:
        link = ReportLink(server.url, *device_context(device))
        assert link.send(_report(device, 1)) == 1
        assert link._conn is not None
        link._conn.sock.close()
        assert link.send(_report(device, 2)) == 2
    assert server.stored[device.device_id] == [1, 2]


@pytest.mark.parametrize("status, body, error", [
    (403, b'{"error": "revoked", "reason": "this device has been revoked"}', ServerRefused),
    (400, b'{"error": "bad_size", "reason": "report is 512 bytes"}', ServerRefused),
    (400, b'{"error": "bad_padding", "reason": "pad"}', ReportRejected),
    (503, b'{"error": "storage_unavailable"}', ServerUnreachable),
    (200, b'{"stored_seq": true}', BadServerAnswer),
])
def test_answers_are_classified_so_that_nothing_is_dropped_for_a_device_wide_problem(
        status: int, body: bytes, error: type) -> None:
    import ssl

    link = ReportLink("https://127.0.0.1:1", ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), bytes(32))
    with pytest.raises(error):
        link._answer(status, body)


def test_rogue_clients_and_a_replay_are_refused_in_plain_words(world: World,
                                                               tmp_path: Path) -> None:
    """What the demo shows: each refusal's reason in words, never OpenSSL's text."""
    from tinyward.assess.attacks.certificates import client_credentials
    from tinyward.assess.attacks.clients import client_with_rogue_certificate, post_as

    device = world.device("a")
    report = _report(device, 1)
    with LiveFleetServer(world.fleet) as server:
        for kind in ("self-signed", "other-ca"):
            cert, key = client_credentials(tmp_path / kind, kind)
            outcome = client_with_rogue_certificate(
                "127.0.0.1", server.port, world.fleet.root_ca_path.read_bytes(), cert, key, kind,
                report)
            assert outcome.refused, outcome
            assert outcome.reason in ("certificate refused in the handshake",
                                      "certificate's CA not trusted by peer",
                                      "certificate not accepted by the peer"), outcome
            assert "_ssl.c" not in outcome.detail + outcome.reason
        assert server.stored.get(device.device_id) is None  # neither was read
        assert not post_as(device, "127.0.0.1", server.port, report, "first").refused
        replayed = post_as(device, "127.0.0.1", server.port, report, "replay")
    assert replayed.refused and replayed.reason == "already stored: a replay (HTTP 409)"
    assert server.stored[device.device_id] == [1]
