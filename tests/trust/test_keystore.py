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


def _private_forms(key: ec.EllipticCurvePrivateKey) -> list[bytes]:
    """Every clear form of a private key a leak could take: the raw scalar, DER, PEM."""
    forms = [key.private_numbers().private_value.to_bytes(32, "big")]
    for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
        for fmt in (serialization.PrivateFormat.PKCS8,
                    serialization.PrivateFormat.TraditionalOpenSSL):
            forms.append(key.private_bytes(encoding, fmt, serialization.NoEncryption()))
    return forms


def _leaks(value: object, secrets: list[bytes], seen: set[int] | None = None) -> list[str]:
    """Where a private key shows in ``value``: as a key object, or in the clear in its bytes,
    text or public attributes (private attributes are the trusted process's own memory)."""
    seen = set() if seen is None else seen
    if id(value) in seen or value is None or isinstance(value, (bool, int, float)):
        return []
    seen.add(id(value))
    if isinstance(value, ec.EllipticCurvePrivateKey):
        return [f"a private key object ({type(value).__name__})"]
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return ["clear private key bytes"] if any(s in data for s in secrets) else []
    if isinstance(value, ec.EllipticCurvePublicKey):
        return []
    if hasattr(value, "public_bytes"):  # certificates, CSRs
        return _leaks(value.public_bytes(serialization.Encoding.DER), secrets, seen)
    if isinstance(value, dict):
        return [leak for k, v in value.items() for leak in _leaks(k, secrets, seen)
                + _leaks(v, secrets, seen)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [leak for item in value for leak in _leaks(item, secrets, seen)]
    found = []
    for name in dir(value):
        if name.startswith("_"):
            continue
        attribute = getattr(value, name)
        if not callable(attribute):
            found += [f".{name}: {leak}" for leak in _leaks(attribute, secrets, seen)]
    return found


def test_no_api_returns_private_key_bytes(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Call every public method of the keystore and of its signer and look for the private
    keys it made in whatever comes back. The table must name every public method: a new
    one fails this test until it is called here too."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    import tinyward.trust.keystore as keystore_module

    made: list[ec.EllipticCurvePrivateKey] = []

    class RecordingEC:  # the keystore's `ec`, noting every key it generates
        def __getattr__(self, name: str) -> object:
            return getattr(ec, name)

        @staticmethod
        def generate_private_key(*args: object, **kwargs: object) -> ec.EllipticCurvePrivateKey:
            key = ec.generate_private_key(*args, **kwargs)  # type: ignore[arg-type]
            made.append(key)
            return key

    monkeypatch.setattr(keystore_module, "ec", RecordingEC())
    ks = make_keystore(tmp_path)
    report = ks.generate("report", KeyUsage.SIGN_REPORT, now=NOW)
    tls = ks.generate("tls", KeyUsage.TLS_CLIENT, now=NOW)
    assert len(made) == 2, "the test must see the keys the keystore made"
    secrets = [form for key in made for form in _private_forms(key)]
    # The control: the search does find a key that is handed out.
    assert _leaks(made[0], secrets) and _leaks({"k": secrets[0].hex().encode()}, []) == []
    assert _leaks([b"x" + secrets[2] + b"y"], secrets)

    signer = ks.signer(report, KeyUsage.SIGN_REPORT)
    sealed = ks.seal(b"plain", "label")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    calls = {
        "generate": lambda: ks.generate("another", KeyUsage.SIGN_ATTESTATION, now=NOW),
        "handle": lambda: ks.handle("report"),
        "names": ks.names,
        "public_key": lambda: ks.public_key(report),
        "sign": lambda: ks.sign(report, KeyUsage.SIGN_REPORT, b"message"),
        "signer": lambda: signer,
        "certificate_request": lambda: ks.certificate_request(tls, subject),
        "seal": lambda: sealed,
        "unseal": lambda: ks.unseal(sealed, "label"),
        "load_tls_client_credentials": lambda: ks.load_tls_client_credentials(
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), tls, _self_signed(ks, tls, tmp_path)),
    }
    public = {n for n in dir(ks) if not n.startswith("_")}
    assert public == set(calls), f"call the new public methods here too: {public ^ set(calls)}"
    signer_calls = {"handle": lambda: signer.handle, "public_key": signer.public_key,
                    "sign_es256": lambda: signer.sign_es256(b"message")}
    assert {n for n in dir(signer) if not n.startswith("_")} == set(signer_calls)
    secrets = [form for key in made for form in _private_forms(key)]  # "another" too
    for name, call in [*calls.items(), *(("signer." + n, c) for n, c in signer_calls.items())]:
        result = call()
        assert not _leaks(result, secrets), f"{name} handed out {_leaks(result, secrets)}"
    for path in tmp_path.rglob("*"):
        if path.is_file():  # and nothing on disk holds one in the clear
            assert not _leaks(path.read_bytes(), secrets), path


def _self_signed(ks: Keystore, handle: object, folder: Path) -> Path:
    from datetime import datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(ks.public_key(handle)).serial_number(1)  # type: ignore[arg-type]
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    path = folder / "client.crt.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


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
        assert one.keystore.public_key(one.handle(purpose)) != two.keystore.public_key(
            two.handle(purpose)
        )
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
