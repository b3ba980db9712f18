"""Server key rotation without re-provisioning: pin roll-over (issue 12, item 8).

A device holds two server pins, the fleet's current key and its pre-made next key.
`fleet rotate-server-key` promotes the next key, so devices provisioned before keep
talking to the server; they learn the fresh next pin from a refreshed bundle, which
they take only from the same fleet root, for themselves, with their own certificates.

Attacks first. Every server here is a real TLS 1.3 server on 127.0.0.1, reached through
``tinyward.link.client`` exactly as a running device does.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.link.conftest import PASSPHRASE, World
from tinyward.assess.attacks.certificates import server_credentials_wrong_key
from tinyward.assess.attacks.rogue_server import RogueServer
from tinyward.fleet.directory import FleetDirectory
from tinyward.fleet.pki import Fleet
from tinyward.fleet.profiles import make_device_certificate
from tinyward.fleet.runner import ServerThread, server_ssl_context
from tinyward.fleet.server import FleetServer
from tinyward.fleet.store import SQLiteStore
from tinyward.link.client import ReportLink, device_context
from tinyward.link.errors import PinMismatch
from tinyward.trust import report as codec
from tinyward.trust.device import BundleMismatch, Device


def _report(device: Device, seq: int) -> bytes:
    return codec.encode_report(codec.Report(device.device_id, seq, int(time.time())),
                               device.signer("report"))


@contextmanager
def _fleet_server(fleet: Fleet, db: Path) -> Iterator[str]:
    """The real fleet server (the one `fleet serve` runs) with the fleet's key of today."""
    store = SQLiteStore(db)
    thread = ServerThread(FleetServer(FleetDirectory(fleet), store), server_ssl_context(fleet))
    try:
        yield f"https://127.0.0.1:{thread.port}"
    finally:
        thread.stop()
        store.close()


def _rotate(fleet: Fleet, **kw: object) -> Fleet:
    # The link tests' fleets keep the server key in clear, as FakeFleetServer expects.
    return fleet.rotate_server_key(fleet.root_ca_token(PASSPHRASE), None,
                                   ca_passphrase=PASSPHRASE, **kw)  # type: ignore[arg-type]


def _send(url: str, device: Device, seq: int) -> tuple[int, bytes]:
    link = ReportLink(url, *device_context(device))
    try:
        stored = link.send(_report(device, seq))
        assert link._conn is not None
        return stored, bytes(link._conn.peer_spki_sha256 or b"")
    finally:
        link.close()


def _server_files(fleet: Fleet, folder: Path) -> tuple[Path, Path]:
    """A copy of the server's certificate and clear key as they are now."""
    folder.mkdir()
    cert = shutil.copy(fleet.server_certificate_path, folder / "cert.pem")
    key = shutil.copy(fleet.server_key_path, folder / "key.pem")
    return Path(cert), Path(key)


# -- the attacks: the pin check still refuses what it must ----------------------------------


def test_a_server_with_neither_pin_is_still_refused(world: World, tmp_path: Path) -> None:
    device = world.device("a")
    assert len(device_context(device)[1]) == 2  # the device holds two pins ...
    cert, key = server_credentials_wrong_key(tmp_path / "mitm", world.fleet.directory,
                                             PASSPHRASE)
    with RogueServer(cert, key) as rogue:
        link = ReportLink(rogue.url, *device_context(device))
        with pytest.raises(PinMismatch, match="not the pinned server key"):
            link.send(_report(device, 1))
    assert rogue.handshakes == 1  # ... the chain was fine: only the pin check caught it
    assert rogue.bytes_received == 0  # before any report byte


def test_a_refreshed_device_refuses_the_server_key_rotated_out(world: World,
                                                               tmp_path: Path) -> None:
    """After rotation and refresh, the old server key (perhaps the stolen one that made the
    fleet rotate) is no longer pinned: a server that still holds it is refused."""
    device = world.device("a")
    old_cert, old_key = _server_files(world.fleet, tmp_path / "old-server")
    rotated = _rotate(world.fleet)
    device.refresh(rotated.bundle(device.device_id))
    with RogueServer(old_cert, old_key) as rogue:
        link = ReportLink(rogue.url, *device_context(device))
        with pytest.raises(PinMismatch):
            link.send(_report(device, 1))
    assert rogue.handshakes == 1 and rogue.bytes_received == 0


def test_refreshed_bundle_from_another_fleet_refused(world: World, tmp_path: Path) -> None:
    """The same device (same keys, same ID) enrolled by another fleet: that bundle verifies
    on its own, but it would move the device to another root and its pins."""
    device = world.device("a")
    before = device.fleet_trust()
    other = Fleet.init(tmp_path / "other-fleet", PASSPHRASE)
    foreign = other.enroll(device.enrolment_request, PASSPHRASE)
    assert foreign.device_id == device.device_id
    with pytest.raises(BundleMismatch, match="another fleet root"):
        device.refresh(foreign)
    with pytest.raises(BundleMismatch, match="another fleet root"):
        device.refresh(foreign, new_pins=True)  # no flag changes the fleet
    assert device.fleet_trust() == before


def test_refreshed_bundle_for_another_device_refused(world: World) -> None:
    device, other = world.device("a"), world.device("b")
    before = device.fleet_trust()
    with pytest.raises(BundleMismatch, match="for device"):
        device.refresh(world.fleet.bundle(other.device_id))
    assert device.fleet_trust() == before


def test_refreshed_bundle_with_other_certificates_refused(world: World) -> None:
    """Certificates the fleet's CA issued again for this device's own keys: a refresh
    changes only pins, never the device's certificates."""
    device = world.device("a")
    bundle = world.fleet.bundle(device.device_id)
    token = world.fleet.device_ca_token(PASSPHRASE)
    reissued = dict(bundle.certificates)
    cert = bundle.certificate("tls")
    reissued["tls"] = make_device_certificate(
        cert.subject, cert.public_key(), device.device_id, "tls", world.fleet.device_ca,
        token, datetime.now(UTC)).public_bytes(Encoding.PEM).decode()
    with pytest.raises(BundleMismatch, match="tls certificate is not the one installed"):
        device.refresh(dataclasses.replace(bundle, certificates=reissued))


def test_refreshed_bundle_that_drops_every_pin_in_use_refused(world: World) -> None:
    device = world.device("a")
    before = device.fleet_trust()
    swapped = dataclasses.replace(world.fleet.bundle(device.device_id),
                                  server_spki_sha256=b"\x01" * 32,
                                  server_next_spki_sha256=b"\x02" * 32)
    with pytest.raises(BundleMismatch, match="neither this device's current nor its next pin"):
        device.refresh(swapped)
    assert device.fleet_trust() == before
    # The operator's explicit choice (after `rotate-server-key --discard-next`) is kept.
    assert device.refresh(swapped, new_pins=True).pins == (b"\x01" * 32, b"\x02" * 32)


def test_attack_an_older_bundle_replayed_as_a_refresh_refused(world: World,
                                                             tmp_path: Path) -> None:
    """Rollback: after a rotation and a refresh, the bundle from provisioning (still on the
    factory's disk) would pin the key the fleet rotated out, perhaps because it was stolen."""
    device = Device.init(tmp_path / "d")
    original = world.fleet.enroll(device.enrolment_request, PASSPHRASE)
    device.install(original)
    rotated = _rotate(world.fleet)
    refreshed = device.refresh(rotated.bundle(device.device_id))
    with pytest.raises(BundleMismatch, match="an older bundle replayed"):
        device.refresh(original)
    assert device.fleet_trust() == refreshed
    assert world.fleet.server_spki_sha256 not in refreshed.pins


def test_refreshed_bundle_without_the_next_pin_refused(world: World) -> None:
    """A one-pin (/1) bundle for a device holding two: it would lose roll-over, and the
    next rotation would cut it off."""
    device = world.device("a")
    before = device.fleet_trust()
    one_pin = dataclasses.replace(world.fleet.bundle(device.device_id),
                                  server_next_spki_sha256=None)
    with pytest.raises(BundleMismatch, match="no next server pin"):
        device.refresh(one_pin)
    assert device.fleet_trust() == before


def test_refreshed_bundle_with_another_next_pin_refused(world: World) -> None:
    device = world.device("a")
    before = device.fleet_trust()
    other_next = dataclasses.replace(world.fleet.bundle(device.device_id),
                                     server_next_spki_sha256=b"\x03" * 32)
    with pytest.raises(BundleMismatch, match="another next server key"):
        device.refresh(other_next)
    assert device.fleet_trust() == before


@pytest.mark.parametrize(("held", "offered", "refused"), [
    ((b"S", b"N"), (b"S", b"N"), None),            # the same bundle again
    ((b"S", b"N"), (b"N", b"M"), None),            # one rotation on
    ((b"S",), (b"S", b"N"), None),                 # a one-pin device gains its next pin
    ((b"S",), (b"S",), None),
    ((b"N", b"M"), (b"S", b"N"), "older bundle"),  # replayed
    ((b"S", b"N"), (b"M", b"L"), "older bundle"),  # two rotations on
    ((b"S",), (b"N", b"M"), "older bundle"),
    ((b"S", b"N"), (b"S",), "no next server pin"),
    ((b"S", b"N"), (b"N",), "no next server pin"),
    ((b"S", b"N"), (b"S", b"X"), "another next server key"),
])
def test_pin_step_rule(held: tuple[bytes, ...], offered: tuple[bytes, ...],
                       refused: str | None) -> None:
    from tinyward.trust.device import pin_step_refused

    pad = {p: p * 32 for p in (b"S", b"N", b"M", b"L", b"X")}
    why = pin_step_refused(tuple(pad[p] for p in held), tuple(pad[p] for p in offered))
    assert why is None if refused is None else refused in (why or "")


# -- roll-over: rotation without re-provisioning ------------------------------------------


def test_rotated_server_key_is_accepted_by_a_device_provisioned_before(
        world: World, tmp_path: Path) -> None:
    device = world.device("a")
    current, upcoming = device_context(device)[1]
    with _fleet_server(world.fleet, tmp_path / "r.db") as url:
        assert _send(url, device, 1) == (1, current)
    rotated = _rotate(world.fleet)
    assert rotated.server_spki_sha256 == upcoming  # the next key was promoted
    with _fleet_server(rotated, tmp_path / "r.db") as url:
        # The device was not touched: same folder, same two pins; a real handshake.
        assert _send(url, Device.open(device.directory), 2) == (2, upcoming)


def test_a_one_pin_device_refuses_the_rotated_server(world: World, tmp_path: Path) -> None:
    """The control: without the next pin (a device provisioned from a /1 bundle) the same
    rotation is refused, so the test above passes because of the roll-over."""
    device = Device.init(tmp_path / "old-device")
    bundle = world.fleet.enroll(device.enrolment_request, PASSPHRASE)
    device.install(dataclasses.replace(bundle, server_next_spki_sha256=None))
    assert len(device_context(device)[1]) == 1
    rotated = _rotate(world.fleet)
    with _fleet_server(rotated, tmp_path / "r.db") as url:
        with pytest.raises(PinMismatch):
            _send(url, device, 1)
        # Its only pin is gone from the fleet: a refresh is a re-pin, taken only when asked.
        with pytest.raises(BundleMismatch, match="neither this device's current nor its next pin"):
            device.refresh(rotated.bundle(device.device_id))
        device.refresh(rotated.bundle(device.device_id), new_pins=True)
        assert _send(url, device, 1)[0] == 1


def test_refresh_learns_the_fresh_next_pin_for_the_rotation_after(world: World,
                                                                  tmp_path: Path) -> None:
    device = world.device("a")
    first = _rotate(world.fleet)
    trust = device.refresh(first.bundle(device.device_id))
    assert trust.pins == (first.server_spki_sha256, first.server_next_spki_sha256)
    second = _rotate(first)
    with _fleet_server(second, tmp_path / "r.db") as url:
        assert _send(url, device, 1) == (1, second.server_spki_sha256)
    # Without the refresh, a device two rotations behind is refused (and can no longer
    # refresh without --new-pins: a refresh moves one rotation on at most).
    stale = world.device("b")
    stale_trust = stale.fleet_trust()
    with _fleet_server(second, tmp_path / "r.db") as url, pytest.raises(PinMismatch):
        _send(url, stale, 1)
    with pytest.raises(BundleMismatch, match="neither this device's current nor its next pin"):
        stale.refresh(second.bundle(stale.device_id))
    assert stale.fleet_trust() == stale_trust


@pytest.mark.parametrize("pins", [(), (bytes(32), b"short"), (bytes(32), b"")])
def test_a_pin_set_with_a_missing_or_malformed_pin_is_refused(world: World,
                                                              pins: tuple[bytes, ...]) -> None:
    from tinyward.errors import Misuse

    context, _pins = device_context(world.device("a"))
    with pytest.raises(Misuse, match="pin"):
        ReportLink("https://127.0.0.1:1", context, pins)
