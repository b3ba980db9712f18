"""The fleet PKI on disk: layout, key protection, certificate profiles, enrolment, revocation."""

from __future__ import annotations

import hashlib
import os
import ssl
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fleet.conftest import NOW
from tests.fleet.helpers import (
    PASSPHRASE,
    PURPOSES,
    SERVER_PASSPHRASE,
    UPDATE_PASSPHRASE,
    device_keys,
    request_pem,
)
from tinyward.errors import Misuse
from tinyward.fleet import pki
from tinyward.fleet.errors import (
    AlreadyEnrolled,
    BadEnrolmentRequest,
    BadFleet,
    FleetExists,
    UnknownDevice,
    WrongPassphrase,
)
from tinyward.fleet.keyseal import open_key
from tinyward.fleet.pki import Fleet, device_id_from_attestation_key
from tinyward.fleet.profiles import OID_ATTESTATION_SIGNING, OID_REPORT_SIGNING

LATER = NOW + timedelta(days=1)


def _files(directory: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(directory) for name in names]


# -- creating a fleet -------------------------------------------------------------------


def test_init_writes_the_documented_layout(fleet: Fleet) -> None:
    names = sorted(str(p.relative_to(fleet.directory)) for p in _files(fleet.directory))
    assert names == [
        "ca/device-ca.cert.pem",
        "ca/root-ca.cert.pem",
        "ca/server-next.pub.pem",
        "ca/server.cert.pem",
        "ca/update-signing.pub.pem",
        "fleet.json",
        "keys/device-ca.key",
        "keys/root-ca.key",
        "keys/server-next.key",
        "keys/update-signing.key",
        "server/server.key.pem",  # no server passphrase given: in clear, 0600
    ]
    assert (fleet.directory / "devices").is_dir()


def test_fleet_id_is_first_32_hex_of_root_spki_sha256(fleet: Fleet) -> None:
    spki = fleet.root_ca.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert fleet.fleet_id == hashlib.sha256(spki).hexdigest()[:32]


def test_server_pin_is_sha256_of_server_spki(fleet: Fleet) -> None:
    spki = fleet.server_certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert fleet.server_spki_sha256 == hashlib.sha256(spki).digest()


def _scalar(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(32, "big")


def test_private_keys_sealed_and_files_owner_only(fleet: Fleet) -> None:
    fleet.enroll(request_pem(), PASSPHRASE, now=LATER)
    offline = {
        "root-ca": (PASSPHRASE, "root-ca"),
        "device-ca": (PASSPHRASE, "device-ca"),
        "update-signing": (UPDATE_PASSPHRASE, "update-signing"),
    }
    scalars = [
        _scalar(open_key((fleet.keys_path / f"{n}.key").read_bytes(), secret, purpose))
        for n, (secret, purpose) in offline.items()
    ]
    for path in _files(fleet.directory):
        data = path.read_bytes()
        if path != fleet.server_key_path:  # the one clear key, for the server's user
            assert b"PRIVATE KEY" not in data, path
        for scalar in scalars:
            assert scalar not in data and scalar.hex().encode() not in data, path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for root, _, _ in os.walk(fleet.directory):
        assert stat.S_IMODE(Path(root).stat().st_mode) == 0o700, root


def test_fleet_keys_are_p256_and_distinct(fleet: Fleet) -> None:
    keys = [
        open_key((fleet.keys_path / "root-ca.key").read_bytes(), PASSPHRASE, "root-ca"),
        open_key((fleet.keys_path / "device-ca.key").read_bytes(), PASSPHRASE, "device-ca"),
        open_key(
            (fleet.keys_path / "update-signing.key").read_bytes(), UPDATE_PASSPHRASE,
            "update-signing",
        ),
    ]
    server = serialization.load_pem_private_key(fleet.server_key_path.read_bytes(), None)
    assert isinstance(server, ec.EllipticCurvePrivateKey)
    keys.append(server)
    for key in keys:
        assert isinstance(key.curve, ec.SECP256R1)
    assert len({_scalar(k) for k in keys}) == 4


def test_init_refuses_existing_fleet(fleet: Fleet) -> None:
    before = (fleet.keys_path / "root-ca.key").read_bytes()
    with pytest.raises(FleetExists, match="already holds a fleet"):
        Fleet.init(fleet.directory, PASSPHRASE)
    assert (fleet.keys_path / "root-ca.key").read_bytes() == before


def test_init_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FleetExists, match="not an empty folder"):
        Fleet.init(tmp_path, PASSPHRASE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_accepts_existing_empty_folder(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    created = Fleet.init(target, PASSPHRASE)
    assert (target / "fleet.json").is_file()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert created.directory == target


def test_init_interrupted_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_: object) -> None:
        raise OSError("simulated power loss")

    monkeypatch.setattr(pki.os, "rename", crash)
    with pytest.raises(OSError, match="simulated"):
        Fleet.init(tmp_path / "fleet", PASSPHRASE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("passphrase", [b"", "a str passphrase"])
def test_init_refuses_empty_or_str_passphrase(tmp_path: Path, passphrase: object) -> None:
    with pytest.raises(Misuse):
        Fleet.init(tmp_path / "fleet", passphrase)  # type: ignore[arg-type]


@pytest.mark.parametrize("names", [(), ("bad name",), ("UPPER.example",), ("-x.example",)])
def test_init_refuses_invalid_server_names(tmp_path: Path, names: tuple[str, ...]) -> None:
    with pytest.raises(Misuse):
        Fleet.init(tmp_path / "fleet", PASSPHRASE, server_names=names)
    assert not (tmp_path / "fleet").exists()


def test_init_refuses_naive_time(tmp_path: Path) -> None:
    with pytest.raises(Misuse, match="timezone-aware"):
        Fleet.init(tmp_path / "fleet", PASSPHRASE, now=NOW.replace(tzinfo=None))


def test_open_reads_public_material_without_passphrase(fleet: Fleet) -> None:
    opened = Fleet.open(fleet.directory)
    assert opened.fleet_id == fleet.fleet_id
    assert opened.root_ca == fleet.root_ca
    assert opened.device_ca == fleet.device_ca
    assert opened.server_spki_sha256 == fleet.server_spki_sha256
    assert opened.update_signing_public_key == fleet.update_signing_public_key
    assert opened.server_names == ("localhost", "127.0.0.1")


def test_open_folder_that_is_not_a_fleet_refused(tmp_path: Path) -> None:
    with pytest.raises(BadFleet, match="not a tinyward fleet"):
        Fleet.open(tmp_path)


def test_open_fleet_with_swapped_root_refused(fleet: Fleet, other_fleet: Fleet) -> None:
    (fleet.directory / "ca" / "root-ca.cert.pem").write_bytes(other_fleet.root_ca_path.read_bytes())
    with pytest.raises(BadFleet, match="root CA does not match the fleet ID"):
        Fleet.open(fleet.directory)


def test_open_fleet_with_damaged_fleet_json_refused(fleet: Fleet) -> None:
    (fleet.directory / "fleet.json").write_bytes(b"{not json")
    with pytest.raises(BadFleet, match="damaged"):
        Fleet.open(fleet.directory)


# -- keys for other parts ---------------------------------------------------------------


def test_clear_server_key_loads_in_ssl_without_a_passphrase(fleet: Fleet) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fleet.load_server_chain(context, None)
    with pytest.raises(Misuse, match="stored without a passphrase"):
        fleet.load_server_chain(context, PASSPHRASE)


def test_sealed_server_key_loads_with_its_own_passphrase_only(tmp_path: Path) -> None:
    fleet = Fleet.init(tmp_path / "f", PASSPHRASE, server_passphrase=SERVER_PASSPHRASE)
    assert fleet.server_key_path.name == "server.key"
    fleet.load_server_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), SERVER_PASSPHRASE)
    with pytest.raises(WrongPassphrase):
        fleet.load_server_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), PASSPHRASE)


def test_clear_server_key_readable_by_others_refused(fleet: Fleet) -> None:
    fleet.server_key_path.chmod(0o640)
    with pytest.raises(BadFleet, match="readable by others"):
        fleet.load_server_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), None)


def test_update_signing_key_signs_for_its_public_key(fleet: Fleet) -> None:
    token = fleet.update_signing_token(UPDATE_PASSPHRASE)
    signature = token.sign(b"manifest")
    assert fleet.update_signing_public_key is not None
    fleet.update_signing_public_key.verify(signature, b"manifest", ec.ECDSA(hashes.SHA256()))
    assert token.public_key() != fleet.device_ca.public_key()  # kept apart from the CA


def test_update_signing_key_wrong_passphrase_refused(fleet: Fleet) -> None:
    with pytest.raises(WrongPassphrase, match="does not open"):
        fleet.update_signing_token(b"not the passphrase")
    with pytest.raises(WrongPassphrase):  # the CA's secret does not open it either
        fleet.update_signing_token(PASSPHRASE)


# -- certificate profiles ---------------------------------------------------------------


def _ext(cert: x509.Certificate, kind: type) -> x509.Extension:  # type: ignore[type-arg]
    return cert.extensions.get_extension_for_class(kind)


def test_ca_profiles(fleet: Fleet) -> None:
    root, device_ca = fleet.root_ca, fleet.device_ca
    for cert in (root, device_ca):
        constraints = _ext(cert, x509.BasicConstraints)
        usage = _ext(cert, x509.KeyUsage)
        assert constraints.critical and constraints.value.ca
        assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
        assert not usage.value.digital_signature
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert _ext(device_ca, x509.BasicConstraints).value.path_length == 0
    aki = _ext(device_ca, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(root, x509.SubjectKeyIdentifier).value.digest
    assert root.not_valid_after_utc - NOW > timedelta(days=20 * 365)
    assert timedelta(days=10 * 365) < device_ca.not_valid_after_utc - NOW < timedelta(days=3660)
    assert fleet.fleet_id in device_ca.subject.rfc4514_string()


def test_server_certificate_profile(tmp_path: Path) -> None:
    fleet = Fleet.init(
        tmp_path / "fleet", PASSPHRASE, server_names=("fleet.example", "::1"), now=NOW
    )
    cert = fleet.server_certificate
    assert not _ext(cert, x509.BasicConstraints).value.ca
    assert _ext(cert, x509.KeyUsage).critical
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fleet.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=2 * 365) <= lifetime <= timedelta(days=2 * 365 + 2)
    cert.verify_directly_issued_by(fleet.root_ca)


def test_serials_are_random_and_distinct(fleet: Fleet, other_fleet: Fleet) -> None:
    serials = {
        c.serial_number
        for f in (fleet, other_fleet)
        for c in (f.root_ca, f.device_ca, f.server_certificate)
    }
    assert len(serials) == 6
    assert all(s.bit_length() > 64 for s in serials)


def test_enrolled_device_certificates_follow_the_profile(fleet: Fleet) -> None:
    keys = device_keys()
    bundle = fleet.enroll(request_pem(keys), PASSPHRASE, now=LATER)
    expected_id = device_id_from_attestation_key(keys["attestation"].public_key())
    assert bundle.device_id == expected_id
    eku = {
        "tls": ExtendedKeyUsageOID.CLIENT_AUTH,
        "report": OID_REPORT_SIGNING,
        "attestation": OID_ATTESTATION_SIGNING,
    }
    for purpose in PURPOSES:
        cert = bundle.certificate(purpose)
        cert.verify_directly_issued_by(fleet.device_ca)
        assert cert.public_key() == keys[purpose].public_key()
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == expected_id
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == (
            purpose
        )
        san = _ext(cert, x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"urn:tinyward:device:{expected_id}"
        ]
        assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [eku[purpose]]
        usage = _ext(cert, x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
        assert _ext(cert, x509.BasicConstraints).critical
        assert not _ext(cert, x509.BasicConstraints).value.ca
        assert cert.not_valid_after_utc <= fleet.device_ca.not_valid_after_utc
        assert cert.not_valid_after_utc - LATER > timedelta(days=9 * 365)
    assert bundle.server_spki_sha256 == fleet.server_spki_sha256
    assert bundle.fleet_id == fleet.fleet_id


def test_device_certificate_never_outlives_the_device_ca(fleet: Fleet) -> None:
    late = NOW + timedelta(days=8 * 365)
    bundle = fleet.enroll(request_pem(), PASSPHRASE, now=late)
    assert bundle.certificate("tls").not_valid_after_utc == fleet.device_ca.not_valid_after_utc


# -- enrolment --------------------------------------------------------------------------


def test_enroll_same_device_twice_refused(fleet: Fleet) -> None:
    request = request_pem()
    first = fleet.enroll(request, PASSPHRASE, now=LATER)
    with pytest.raises(AlreadyEnrolled, match="already enrolled"):
        fleet.enroll(request, PASSPHRASE, now=LATER)
    # The first enrolment's certificates are untouched.
    stored = fleet.device(first.device_id).certificates["tls"]
    assert stored == first.certificate("tls")


def test_enroll_revoked_device_again_refused(fleet: Fleet) -> None:
    request = request_pem()
    bundle = fleet.enroll(request, PASSPHRASE, now=LATER)
    fleet.revoke(bundle.device_id)
    with pytest.raises(AlreadyEnrolled):
        fleet.enroll(request, PASSPHRASE, now=LATER)
    assert fleet.device(bundle.device_id).revoked


def test_enroll_wrong_passphrase_refused_and_writes_nothing(fleet: Fleet) -> None:
    with pytest.raises(WrongPassphrase, match="does not open"):
        fleet.enroll(request_pem(), b"not the passphrase", now=LATER)
    assert list(fleet.devices_path.iterdir()) == []


def test_enroll_bad_request_writes_nothing(fleet: Fleet) -> None:
    with pytest.raises(BadEnrolmentRequest):
        fleet.enroll(b"garbage", PASSPHRASE, now=LATER)
    assert list(fleet.devices_path.iterdir()) == []


def test_enroll_interrupted_leaves_no_device(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pki.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        fleet.enroll(request_pem(), PASSPHRASE, now=LATER)
    assert list(fleet.devices_path.iterdir()) == []
    assert fleet.devices() == []


def test_device_unknown_hints_another_fleet(fleet: Fleet, other_fleet: Fleet) -> None:
    bundle = other_fleet.enroll(request_pem(), PASSPHRASE, now=LATER)
    with pytest.raises(UnknownDevice, match="enrolled in another fleet"):
        fleet.device(bundle.device_id)


@pytest.mark.parametrize("bad_id", ["../../etc", "A" * 64, "0" * 63, "", "0" * 64 + "/x"])
def test_device_id_that_is_not_hex_refused_before_touching_disk(fleet: Fleet, bad_id: str) -> None:
    with pytest.raises(UnknownDevice, match="not a device ID"):
        fleet.device(bad_id)
    with pytest.raises(UnknownDevice, match="not a device ID"):
        fleet.revoke(bad_id)


def test_devices_lists_every_enrolled_device(fleet: Fleet) -> None:
    ids = {fleet.enroll(request_pem(), PASSPHRASE, now=LATER).device_id for _ in range(3)}
    listed = fleet.devices()
    assert {d.device_id for d in listed} == ids
    assert all(not d.revoked and d.enrolled_at == LATER for d in listed)


def test_revoke_marks_device_and_is_idempotent(fleet: Fleet) -> None:
    bundle = fleet.enroll(request_pem(), PASSPHRASE, now=LATER)
    fleet.revoke(bundle.device_id, now=LATER + timedelta(hours=1))
    fleet.revoke(bundle.device_id, now=LATER + timedelta(hours=2))
    device = Fleet.open(fleet.directory).device(bundle.device_id)
    assert device.revoked
    assert device.revoked_at == LATER + timedelta(hours=1)


def test_quarantine_keeps_first_time_survives_other_changes_and_releases(fleet: Fleet) -> None:
    bundle = fleet.enroll(request_pem(), PASSPHRASE, now=LATER)
    device_id = bundle.device_id
    assert not fleet.device(device_id).quarantined
    fleet.quarantine(device_id, now=LATER + timedelta(hours=1))
    fleet.quarantine(device_id, now=LATER + timedelta(hours=2))
    fleet.set_cohort(device_id, "canary")  # another change keeps the quarantine
    fleet.revoke(device_id, now=LATER + timedelta(hours=3))
    device = Fleet.open(fleet.directory).device(device_id)
    assert device.quarantined and device.revoked and device.cohort == "canary"
    assert device.quarantined_at == LATER + timedelta(hours=1)
    released = fleet.release(device_id)
    assert not released.quarantined and released.revoked
    assert fleet.release(device_id) == released  # a no-op the second time


def test_quarantine_unknown_device_refused(fleet: Fleet) -> None:
    with pytest.raises(UnknownDevice):
        fleet.quarantine("0" * 64)
    with pytest.raises(UnknownDevice):
        fleet.release("0" * 64)


def test_revoke_unknown_device_refused(fleet: Fleet) -> None:
    with pytest.raises(UnknownDevice):
        fleet.revoke("0" * 64)


def test_enrolled_device_public_keys(fleet: Fleet) -> None:
    keys = device_keys()
    bundle = fleet.enroll(request_pem(keys), PASSPHRASE, now=LATER)
    device = fleet.device(bundle.device_id)
    for purpose in PURPOSES:
        assert device.public_key(purpose) == keys[purpose].public_key()
    with pytest.raises(Misuse):
        device.public_key("firmware")


def test_damaged_device_status_refused(fleet: Fleet) -> None:
    bundle = fleet.enroll(request_pem(), PASSPHRASE, now=LATER)
    (fleet.devices_path / bundle.device_id / "status.json").write_text('{"revoked": "no"}')
    with pytest.raises(BadFleet, match="damaged"):
        fleet.device(bundle.device_id)


def test_enroll_after_device_ca_expired_refused(fleet: Fleet) -> None:
    too_late = fleet.device_ca.not_valid_after_utc + timedelta(days=1)
    with pytest.raises(BadFleet, match="device CA is not valid"):
        fleet.enroll(request_pem(), PASSPHRASE, now=too_late)
    assert fleet.devices() == []


def test_enroll_race_second_writer_refused_and_cleaned_up(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process enrols the same device between our check and our rename."""
    keys = device_keys()
    request = request_pem(keys)
    device_id = device_id_from_attestation_key(keys["attestation"].public_key())
    real_token = Fleet.device_ca_token

    def open_key_then_lose_race(self: Fleet, secret: bytes, keys_dir=None):  # type: ignore[no-untyped-def]
        key = real_token(self, secret, keys_dir)
        winner = fleet.devices_path / device_id
        winner.mkdir()
        (winner / "status.json").write_text("{}")
        return key

    monkeypatch.setattr(Fleet, "device_ca_token", open_key_then_lose_race)
    with pytest.raises(AlreadyEnrolled):
        fleet.enroll(request, PASSPHRASE, now=LATER)
    assert [p.name for p in fleet.devices_path.iterdir()] == [device_id]
    assert (fleet.devices_path / device_id / "status.json").read_text() == "{}"
