"""The keystore: keys by handle, usage policy enforced, nothing exported in clear."""

from __future__ import annotations

import ssl
from datetime import UTC
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.trust.cose import decode_sign1, sign1, verify_es256
from tinyward.trust.device import Device, DeviceExists
from tinyward.trust.errors import KeyExists, PolicyViolation, UnknownKey
from tinyward.trust.identity import device_id
from tinyward.trust.keystore import Keystore, KeyUsage
from tinyward.trust.rot import FileRootOfTrust
from tinyward.trust.storage import ProtectedStorage

NOW = 1_700_000_000.0

PRIVATE_MARKERS = [b"BEGIN PRIVATE KEY", b"BEGIN EC PRIVATE KEY", b"BEGIN RSA PRIVATE KEY"]


def make_keystore(tmp_path: Path) -> Keystore:
    rot = FileRootOfTrust.create(tmp_path / "root.key", tmp_path / "counters")
    return Keystore(ProtectedStorage(tmp_path / "storage", rot), rot, tmp_path)


def test_sign_with_matching_usage_verifies(tmp_path: Path) -> None:
    ks = make_keystore(tmp_path)
    handle = ks.generate("report", KeyUsage.SIGN_REPORT, now=NOW)
    signature = ks.sign(handle, KeyUsage.SIGN_REPORT, b"msg")
    verify_es256(ks.public_key(handle), signature, b"msg")


def test_wrong_usage_refused(tmp_path: Path) -> None:
    ks = make_keystore(tmp_path)
    handle = ks.generate("report", KeyUsage.SIGN_REPORT, now=NOW)
    with pytest.raises(PolicyViolation, match="may only be used to sign-report"):
        ks.sign(handle, KeyUsage.SIGN_ATTESTATION, b"msg")
    with pytest.raises(PolicyViolation):
        ks.signer(handle, KeyUsage.TLS_CLIENT)


def test_forged_handle_usage_refused(tmp_path: Path) -> None:
    """A caller cannot widen a key's policy by building a handle with another usage."""
    from tinyward.trust.keystore import KeyHandle

    ks = make_keystore(tmp_path)
    ks.generate("report", KeyUsage.SIGN_REPORT, now=NOW)
    with pytest.raises(PolicyViolation):
        ks.sign(KeyHandle("report", KeyUsage.SIGN_ATTESTATION), KeyUsage.SIGN_ATTESTATION, b"m")


def test_keys_never_replaced_and_unknown_refused(tmp_path: Path) -> None:
    ks = make_keystore(tmp_path)
    ks.generate("report", KeyUsage.SIGN_REPORT, now=NOW)
    with pytest.raises(KeyExists):
        ks.generate("report", KeyUsage.SIGN_REPORT, now=NOW)
    with pytest.raises(UnknownKey):
        ks.handle("nope")


def test_keys_survive_reopen(tmp_path: Path) -> None:
    ks = make_keystore(tmp_path)
    handle = ks.generate("report", KeyUsage.SIGN_REPORT, now=NOW)
    public = ks.public_key(handle)
    rot = FileRootOfTrust(tmp_path / "root.key", tmp_path / "counters")
    reopened = Keystore(ProtectedStorage(tmp_path / "storage", rot), rot, tmp_path)
    assert reopened.handle("report").usage is KeyUsage.SIGN_REPORT
    assert reopened.public_key(reopened.handle("report")) == public
    signer = reopened.signer(reopened.handle("report"), KeyUsage.SIGN_REPORT)
    decode_sign1(sign1(b"p", signer)).verify(public)


def test_no_api_returns_private_key_bytes(tmp_path: Path) -> None:
    ks = make_keystore(tmp_path)
    public_names = [n for n in dir(ks) if not n.startswith("_")]
    assert not any("private" in n or "export" in n for n in public_names), public_names


def test_tls_credentials_load_into_ssl_without_clear_key(tmp_path: Path) -> None:
    from datetime import datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    ks = make_keystore(tmp_path)
    handle = ks.generate("tls", KeyUsage.TLS_CLIENT, now=NOW)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ks.public_key(handle)).serial_number(1)
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    cert_path = tmp_path / "tls.crt.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ks.load_tls_client_credentials(context, handle, cert_path)
    pem = (tmp_path / "tls.key.pem").read_bytes()
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in pem
    assert not any(marker in pem for marker in PRIVATE_MARKERS)


def test_device_folder_holds_no_clear_private_key(tmp_path: Path) -> None:
    device = Device.init(tmp_path / "dev")
    blob = b"".join(p.read_bytes() for p in (tmp_path / "dev").rglob("*") if p.is_file())
    for marker in PRIVATE_MARKERS:
        assert marker not in blob
    # The raw private scalars must not appear either; reach into the (trusted) keystore to
    # get them for this check only.
    for purpose in ("tls", "report", "attestation"):
        _, key = device.keystore._load(purpose)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        assert scalar not in blob and der not in blob


def test_two_devices_share_no_key(tmp_path: Path) -> None:
    one, two = Device.init(tmp_path / "a"), Device.init(tmp_path / "b")
    assert one.device_id != two.device_id
    for purpose in ("tls", "report", "attestation"):
        assert one.keystore.public_key(one.handle(purpose)) != two.keystore.public_key(two.handle(purpose))
    assert (tmp_path / "a/rot/root.key").read_bytes() != (tmp_path / "b/rot/root.key").read_bytes()


def test_device_id_is_derived_from_attestation_key(tmp_path: Path) -> None:
    device = Device.init(tmp_path / "dev")
    assert device.device_id == device_id(device.keystore.public_key(device.handle("attestation")))
    assert device.instance_id[0] == 1 and device.instance_id[1:].hex() == device.device_id


def test_init_twice_refused(tmp_path: Path) -> None:
    Device.init(tmp_path / "dev")
    with pytest.raises(DeviceExists):
        Device.init(tmp_path / "dev")


def test_seal_roundtrip_and_binding(tmp_path: Path) -> None:
    from tinyward.trust.errors import SealBroken

    ks = make_keystore(tmp_path)
    blob = ks.seal(b"secret data", "label-a")
    assert b"secret data" not in blob
    assert ks.unseal(blob, "label-a") == b"secret data"
    with pytest.raises(SealBroken, match="another label"):
        ks.unseal(blob, "label-b")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(SealBroken):
            ks.unseal(bytes(bad), "label-a")
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(SealBroken):
        make_keystore(other).unseal(blob, "label-a")
