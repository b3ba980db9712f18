"""verify_device_certificate: one named test per way a presented certificate must fail,
and the issued chains checked by verifiers nobody here wrote (OpenSSL, cryptography's
WebPKI verifier, a real TLS handshake in memory)."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store

from tests.conftest import needs
from tests.fleet.conftest import NOW
from tests.fleet.helpers import PASSPHRASE, PURPOSES, device_keys, request_pem
from tinyward.errors import Misuse
from tinyward.fleet.bundle import DeviceBundle
from tinyward.fleet.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    RevokedDevice,
    UnknownDevice,
    UntrustedCertificate,
    WrongPurpose,
)
from tinyward.fleet.pki import Fleet
from tinyward.fleet.profiles import make_device_certificate

LATER = NOW + timedelta(days=1)


@pytest.fixture
def bundle(fleet: Fleet) -> DeviceBundle:
    return fleet.enroll(request_pem(), PASSPHRASE, now=NOW)


def test_verify_accepts_each_certificate_for_its_purpose(
    fleet: Fleet, bundle: DeviceBundle
) -> None:
    for purpose in PURPOSES:
        assert (
            fleet.verify_device_certificate(bundle.certificate(purpose), purpose, LATER)
            == bundle.device_id
        )


def test_verify_certificate_from_another_fleet_refused(fleet: Fleet, other_fleet: Fleet) -> None:
    foreign = other_fleet.enroll(request_pem(), PASSPHRASE, now=NOW)
    with pytest.raises(UntrustedCertificate, match="enrolled in another fleet"):
        fleet.verify_device_certificate(foreign.certificate("tls"), "tls", LATER)


def test_verify_same_device_enrolled_in_another_fleet_refused(
    fleet: Fleet, other_fleet: Fleet
) -> None:
    # The same device (same keys, same ID) enrolled in both: each fleet accepts only
    # the certificates its own CA issued.
    keys = device_keys()
    here = fleet.enroll(request_pem(keys), PASSPHRASE, now=NOW)
    there = other_fleet.enroll(request_pem(keys), PASSPHRASE, now=NOW)
    assert here.device_id == there.device_id
    with pytest.raises(UntrustedCertificate):
        fleet.verify_device_certificate(there.certificate("report"), "report", LATER)


@pytest.mark.parametrize(
    ("presented", "claimed"),
    [("report", "tls"), ("tls", "report"), ("attestation", "report"), ("report", "attestation")],
)
def test_verify_wrong_purpose_refused(
    fleet: Fleet, bundle: DeviceBundle, presented: str, claimed: str
) -> None:
    with pytest.raises(WrongPurpose, match=f"is for {presented}, not for {claimed}"):
        fleet.verify_device_certificate(bundle.certificate(presented), claimed, LATER)


def test_verify_revoked_device_refused(fleet: Fleet, bundle: DeviceBundle) -> None:
    fleet.revoke(bundle.device_id, now=LATER)
    for purpose in PURPOSES:
        with pytest.raises(RevokedDevice, match="revoked"):
            fleet.verify_device_certificate(bundle.certificate(purpose), purpose, LATER)


def test_verify_revocation_seen_by_a_fleet_opened_earlier(
    fleet: Fleet, bundle: DeviceBundle
) -> None:
    server_view = Fleet.open(fleet.directory)  # e.g. the fleet server's long-lived object
    Fleet.open(fleet.directory).revoke(bundle.device_id)
    with pytest.raises(RevokedDevice):
        server_view.verify_device_certificate(bundle.certificate("tls"), "tls", LATER)


def test_verify_expired_certificate_refused(fleet: Fleet, bundle: DeviceBundle) -> None:
    after_expiry = bundle.certificate("tls").not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(CertificateExpired, match="expired"):
        fleet.verify_device_certificate(bundle.certificate("tls"), "tls", after_expiry)


def test_verify_certificate_not_yet_valid_refused(fleet: Fleet, bundle: DeviceBundle) -> None:
    with pytest.raises(CertificateNotYetValid, match="check the clock"):
        fleet.verify_device_certificate(bundle.certificate("tls"), "tls", NOW - timedelta(days=1))


def test_verify_certificate_of_unenrolled_device_refused(
    fleet: Fleet, bundle: DeviceBundle
) -> None:
    shutil.rmtree(fleet.devices_path / bundle.device_id)
    with pytest.raises(UnknownDevice, match="not enrolled"):
        fleet.verify_device_certificate(bundle.certificate("tls"), "tls", LATER)


def test_verify_certificate_issued_outside_enrolment_refused(
    fleet: Fleet, bundle: DeviceBundle
) -> None:
    # Someone with the device CA key mints a second tls certificate for an enrolled
    # device, for a key of their own: the fleet accepts only what it recorded.
    ca_key = fleet.device_ca_token(PASSPHRASE)
    rogue_key = device_keys()["tls"]
    rogue = make_device_certificate(
        bundle.certificate("tls").subject,
        rogue_key.public_key(),
        bundle.device_id,
        "tls",
        fleet.device_ca,
        ca_key,  # type: ignore[arg-type]
        NOW,
    )
    with pytest.raises(UntrustedCertificate, match="not the one fleet"):
        fleet.verify_device_certificate(rogue, "tls", LATER)


def test_verify_ca_certificate_presented_as_device_refused(fleet: Fleet) -> None:
    with pytest.raises(UntrustedCertificate):
        fleet.verify_device_certificate(fleet.device_ca, "tls", LATER)


def test_verify_unknown_purpose_is_a_caller_bug(fleet: Fleet, bundle: DeviceBundle) -> None:
    with pytest.raises(Misuse):
        fleet.verify_device_certificate(bundle.certificate("tls"), "firmware", LATER)


def test_verify_naive_time_is_a_caller_bug(fleet: Fleet, bundle: DeviceBundle) -> None:
    with pytest.raises(Misuse):
        fleet.verify_device_certificate(
            bundle.certificate("tls"), "tls", LATER.replace(tzinfo=None)
        )


# -- independent verifiers ---------------------------------------------------------------


def _openssl_verify(
    tmp_path: Path, fleet: Fleet, cert: x509.Certificate, *extra: str
) -> tuple[bool, str]:
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        [
            "openssl", "verify", "-x509_strict",
            "-attime", str(int(LATER.timestamp())),
            "-CAfile", str(fleet.root_ca_path),
            "-untrusted", str(fleet.device_ca_path),
            *extra, str(leaf),
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.returncode == 0 and result.stdout.endswith(
        ": OK\n"
    ), result.stdout + result.stderr


@needs(shutil.which("openssl") is not None, "openssl not installed")
def test_openssl_verifies_issued_chains(tmp_path: Path, fleet: Fleet, bundle: DeviceBundle) -> None:
    for purpose in PURPOSES:
        assert _openssl_verify(tmp_path, fleet, bundle.certificate(purpose))[0]
    tls = _openssl_verify(tmp_path, fleet, bundle.certificate("tls"), "-purpose", "sslclient")
    assert tls[0]
    server = _openssl_verify(
        tmp_path, fleet, fleet.server_certificate, "-purpose", "sslserver",
        "-verify_hostname", "localhost",
    )  # fmt: skip
    assert server[0]
    # And OpenSSL agrees that a report certificate is not a TLS client certificate.
    report = _openssl_verify(tmp_path, fleet, bundle.certificate("report"), "-purpose", "sslclient")
    assert not report[0]
    assert "certificate purpose" in report[1]


def test_webpki_verifier_accepts_tls_client_and_server_certificates(
    fleet: Fleet, bundle: DeviceBundle
) -> None:
    policy = PolicyBuilder().store(Store([fleet.root_ca])).time(LATER)
    verified = policy.build_client_verifier().verify(bundle.certificate("tls"), [fleet.device_ca])
    assert verified.subjects == [
        x509.UniformResourceIdentifier(f"urn:tinyward:device:{bundle.device_id}")
    ]
    assert verified.chain[-1] == fleet.root_ca
    for name in (DNSName("localhost"), IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = policy.build_server_verifier(name).verify(fleet.server_certificate, [])
        assert chain[-1] == fleet.root_ca


def test_mutual_tls_handshake_in_memory(tmp_path: Path, fleet: Fleet, bundle: DeviceBundle) -> None:
    """A real TLS 1.3 handshake between ssl contexts built from the fleet's files.

    No socket: the two ends exchange bytes through memory BIOs.
    """
    keys = device_keys()
    device_bundle = Fleet.open(fleet.directory).enroll(request_pem(keys), PASSPHRASE, now=NOW)
    client_cert = tmp_path / "tls.cert.pem"
    client_key = tmp_path / "tls.key.pem"
    client_cert.write_text(device_bundle.certificates["tls"])
    client_key.write_bytes(
        keys["tls"].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"device secret"),
        )
    )
    trust = tmp_path / "client-cas.pem"
    trust.write_text(fleet.root_ca_path.read_text() + fleet.device_ca_path.read_text())

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    fleet.load_server_chain(server_ctx, None)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(trust)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    client_ctx.load_verify_locations(fleet.root_ca_path)
    client_ctx.load_cert_chain(client_cert, client_key, b"device secret")

    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):  # bounded: a TLS 1.3 handshake needs 2-3 flights
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    assert client.version() == "TLSv1.3"
    peer = x509.load_der_x509_certificate(server.getpeercert(binary_form=True))
    assert fleet.verify_device_certificate(peer, "tls", LATER) == device_bundle.device_id
    pinned = x509.load_der_x509_certificate(client.getpeercert(binary_form=True))
    from tinyward.fleet.profiles import spki_sha256

    assert spki_sha256(pinned) == device_bundle.server_spki_sha256
