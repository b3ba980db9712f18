"""Certificate profiles of a tinyward fleet, and the pure check of a device certificate.

Everything here is pure: keys, certificates and an explicit ``now`` in, certificates or a
verdict out; no files. ``fleet/pki.py`` does the disk work around it.

The shapes are fixed by ``docs/architecture.md``:

- root CA (~20 years) -> device CA (~10 years, pathlen 0) -> device certificates
  (10 years, capped at the device CA's end), one per purpose, with an EKU naming it;
- root CA -> fleet server TLS certificate (2 years, serverAuth, SAN from the server names);
- all keys ECDSA P-256, signatures ECDSA with SHA-256, random 159-bit serials, SKI on
  every certificate, AKI on every issued one, BasicConstraints and KeyUsage critical.
- Fleet ID: first 32 hex characters of SHA-256 over the root CA's SPKI (DER).
- Server pin: SHA-256 over the server certificate's SPKI (DER).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tinyward.errors import Misuse
from tinyward.fleet.errors import (
    BadCertificate,
    CertificateExpired,
    CertificateNotYetValid,
    UntrustedCertificate,
    WrongPurpose,
)
from tinyward.trust.identity import is_device_id

PURPOSES: tuple[str, ...] = ("tls", "report", "attestation")
OID_REPORT_SIGNING = ObjectIdentifier("2.25.123326574025021121939865819391972828546.1")
OID_ATTESTATION_SIGNING = ObjectIdentifier("2.25.123326574025021121939865819391972828546.2")
PURPOSE_EKU: dict[str, ObjectIdentifier] = {
    "tls": ExtendedKeyUsageOID.CLIENT_AUTH,
    "report": OID_REPORT_SIGNING,
    "attestation": OID_ATTESTATION_SIGNING,
}

DEVICE_ORGANIZATION = "tinyward device"
FLEET_ORGANIZATION = "tinyward fleet"
DEVICE_URI_PREFIX = "urn:tinyward:device:"

_YEAR = timedelta(days=365)
ROOT_CA_VALIDITY = 20 * _YEAR + timedelta(days=5)  # 20 years including leap days
DEVICE_CA_VALIDITY = 10 * _YEAR + timedelta(days=3)
SERVER_VALIDITY = 2 * _YEAR + timedelta(days=1)
DEVICE_VALIDITY = 10 * _YEAR + timedelta(days=3)
# Certificates start a little in the past so that a device whose clock runs slightly
# behind the fleet's does not see a fresh certificate as "not yet valid".
BACKDATE = timedelta(minutes=5)

_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)


def _require_aware(now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise Misuse("`now` must be a timezone-aware datetime (e.g. datetime.now(timezone.utc))")
    return now


def _require_p256(key: object, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) or not (
        isinstance(key.curve, ec.SECP256R1)
    ):
        raise Misuse(f"{what} must be an ECDSA P-256 key")


def spki_sha256(subject: x509.Certificate | ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 over the DER SubjectPublicKeyInfo of a certificate or public key (the pin)."""
    key = subject.public_key() if isinstance(subject, x509.Certificate) else subject
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def fleet_id_of(root_ca: x509.Certificate) -> str:
    """The fleet ID: the first 32 hex characters of SHA-256 over the root CA's SPKI."""
    return spki_sha256(root_ca).hex()[:32]


def server_name_entry(name: str) -> x509.GeneralName:
    """The SAN entry for one server name: an IP address if it parses as one, else a DNS name.

    Raises:
        Misuse: ``name`` is neither an IP address nor a valid DNS host name.
    """
    if not isinstance(name, str):
        raise Misuse(f"server name {name!r} is not a string")
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if _DNS_NAME.fullmatch(name) is None:
        raise Misuse(f"server name {name!r} is neither an IP address nor a lowercase DNS host name")
    return x509.DNSName(name)


def _fleet_name(fleet_id: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, FLEET_ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, fleet_id),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _issued(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    now: datetime,
    validity: timedelta,
) -> x509.CertificateBuilder:
    not_after = now + validity
    if issuer is not None:
        # A certificate never outlives the CA that vouches for it.
        not_after = min(not_after, issuer.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    return builder


class CertificateSigner(Protocol):
    """A key that signs certificates without handing itself over (fleet.tokens.SigningToken)."""

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...


def _sign(
    builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey | CertificateSigner
) -> x509.Certificate:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return builder.sign(key, hashes.SHA256())
    return key.sign_certificate(builder)


def make_root_ca(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    """A self-signed root CA certificate for ``key``, valid ~20 years from ``now``.

    Raises:
        Misuse: ``key`` is not P-256 or ``now`` is naive.
    """
    _require_p256(key, "the root CA key")
    _require_aware(now)
    fleet_id = spki_sha256(key.public_key()).hex()[:32]
    name = _fleet_name(fleet_id, "tinyward root CA")
    builder = (
        _issued(name, key.public_key(), None, now, ROOT_CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def make_device_ca(
    public_key: ec.EllipticCurvePublicKey,
    root_ca: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey | CertificateSigner,
    now: datetime,
) -> x509.Certificate:
    """The device-issuing CA certificate (pathlen 0), valid ~10 years, signed by the root.

    Raises:
        Misuse: a key is not P-256 or ``now`` is naive.
    """
    _require_p256(public_key, "the device CA key")
    _require_aware(now)
    name = _fleet_name(fleet_id_of(root_ca), "tinyward device CA")
    builder = (
        _issued(name, public_key, root_ca, now, DEVICE_CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
    )
    return _sign(builder, root_key)


def make_server_certificate(
    public_key: ec.EllipticCurvePublicKey,
    server_names: Sequence[str],
    root_ca: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey | CertificateSigner,
    now: datetime,
) -> x509.Certificate:
    """The fleet server's TLS certificate (serverAuth, SAN from ``server_names``), 2 years.

    Raises:
        Misuse: no server name, an invalid server name, a non-P-256 key or a naive ``now``.
    """
    _require_p256(public_key, "the server key")
    _require_aware(now)
    if isinstance(server_names, str) or not server_names:
        raise Misuse("give the fleet server at least one name (a list such as ['localhost'])")
    entries = [server_name_entry(name) for name in server_names]
    name = _fleet_name(fleet_id_of(root_ca), server_names[0])
    builder = (
        _issued(name, public_key, root_ca, now, SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(entries), critical=False)
    )
    return _sign(builder, root_key)


def make_device_certificate(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    device_id: str,
    purpose: str,
    device_ca: x509.Certificate,
    device_ca_key: ec.EllipticCurvePrivateKey | CertificateSigner,
    now: datetime,
) -> x509.Certificate:
    """A device certificate for one purpose, issued by the device CA.

    ``subject`` is the (already validated) subject of the device's CSR. Every extension
    is set here; nothing a CSR asks for is copied.

    Raises:
        Misuse: unknown purpose, malformed device ID, non-P-256 key or naive ``now``.
    """
    if purpose not in PURPOSE_EKU:
        raise Misuse(f"unknown purpose {purpose!r}; expected one of {', '.join(PURPOSES)}")
    if not is_device_id(device_id):
        raise Misuse("device_id must be 64 lowercase hex characters")
    _require_p256(public_key, "the device key")
    _require_aware(now)
    builder = (
        _issued(subject, public_key, device_ca, now, DEVICE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([PURPOSE_EKU[purpose]]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)]
            ),
            critical=False,
        )
    )
    return _sign(builder, device_ca_key)


def device_id_of_certificate(cert: x509.Certificate) -> str:
    """The device ID a device certificate names (SAN URI, which must agree with the CN).

    Raises:
        BadCertificate: no or several tinyward device URIs, a malformed ID, or a CN that
            names a different device.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (x509.ExtensionNotFound, ValueError) as error:
        raise BadCertificate(
            f"not a tinyward device certificate (no usable SAN: {error})"
        ) from None
    ids = [uri[len(DEVICE_URI_PREFIX) :] for uri in uris if uri.startswith(DEVICE_URI_PREFIX)]
    if len(ids) != 1 or not is_device_id(ids[0]):
        raise BadCertificate(
            "not a tinyward device certificate "
            f"(expected one SAN URI {DEVICE_URI_PREFIX}<device ID>)"
        )
    if len(common_names) != 1 or common_names[0].value != ids[0]:
        raise BadCertificate("the certificate's CN and its SAN name different devices")
    return ids[0]


def check_device_certificate(
    cert: x509.Certificate, purpose: str, device_ca: x509.Certificate, now: datetime
) -> str:
    """Check that ``cert`` is a device certificate of ``device_ca`` for ``purpose`` at ``now``.

    Checks, in this order: issued (name and signature) by ``device_ca``; ``device_ca`` and
    ``cert`` both valid at ``now``; not a CA; digitalSignature allowed; the EKU names
    ``purpose``; the device ID in SAN and CN agree. Enrolment and revocation are the
    fleet's business (``Fleet.verify_device_certificate``).

    Returns the device ID.

    Raises:
        Misuse: unknown ``purpose`` or naive ``now``.
        UntrustedCertificate: not issued by ``device_ca`` (e.g. another fleet's device).
        CertificateExpired, CertificateNotYetValid: outside the validity period.
        WrongPurpose: the EKU does not name ``purpose``.
        BadCertificate: any other defect (a CA certificate, missing extensions, ...).
    """
    if purpose not in PURPOSE_EKU:
        raise Misuse(f"unknown purpose {purpose!r}; expected one of {', '.join(PURPOSES)}")
    _require_aware(now)
    try:
        cert.verify_directly_issued_by(device_ca)
    except (ValueError, TypeError, InvalidSignature):
        raise UntrustedCertificate(
            "the certificate was not issued by this fleet's device CA "
            f"(fleet {fleet_id_label(device_ca)}); is the device enrolled in another fleet?"
        ) from None
    for what, checked in (("the fleet's device CA", device_ca), ("the certificate", cert)):
        if now < checked.not_valid_before_utc:
            raise CertificateNotYetValid(
                f"{what} is not valid before {checked.not_valid_before_utc.isoformat()} "
                f"(now is {now.isoformat()}); check the clock"
            )
        if now > checked.not_valid_after_utc:
            raise CertificateExpired(
                f"{what} expired on {checked.not_valid_after_utc.isoformat()} "
                f"(now is {now.isoformat()}); re-enrol the device"
            )
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError) as error:
        raise BadCertificate(f"not a tinyward device certificate ({error})") from None
    if constraints.ca or not key_usage.digital_signature:
        raise BadCertificate("not a device certificate (a CA, or signing not allowed)")
    if PURPOSE_EKU[purpose] not in eku:
        names = [p for p, oid in PURPOSE_EKU.items() if oid in eku]
        raise WrongPurpose(
            f"the certificate is for {', '.join(names) or 'another purpose'}, not for {purpose}"
        )
    return device_id_of_certificate(cert)


def fleet_id_label(device_ca: x509.Certificate) -> str:
    """The fleet ID a fleet CA certificate names in its OU (for messages only)."""
    units = device_ca.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return str(units[0].value) if units else "unknown"
