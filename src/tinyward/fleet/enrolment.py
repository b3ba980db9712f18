"""The enrolment request: three CSRs in one PEM file, checked as hostile input. Pure.

Format (``docs/architecture.md``): three PEM ``CERTIFICATE REQUEST`` blocks, one per
purpose (``tls``, ``report``, ``attestation``), each signed by its own ECDSA P-256 key
(proof of possession), subject ``O=tinyward device, OU=<purpose>, CN=<device ID>``. All
three name the same device ID, and that ID is the one derived from the attestation key
(``tinyward.trust.identity``), so that a device cannot claim another's identity.

Anything else is refused with :class:`BadEnrolmentRequest` and a message saying what to
fix. Extensions a CSR asks for are ignored: the fleet sets every extension itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from tinyward.errors import Misuse
from tinyward.fleet._pem import PemError, split_pem
from tinyward.fleet.errors import BadEnrolmentRequest
from tinyward.fleet.profiles import DEVICE_ORGANIZATION, PURPOSES
from tinyward.trust.identity import device_id, is_device_id

CSR_LABEL = "CERTIFICATE REQUEST"
_SIGNATURE_ALGORITHMS = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
}
_MALFORMED = (ValueError, KeyError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)
_SUBJECT_ATTRIBUTES = {
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
}


@dataclass(frozen=True)
class EnrolmentLimits:
    """Bounds on an enrolment request (three P-256 CSRs are about 1.5 KB)."""

    max_request_bytes: int = 16 * 1024
    max_blocks: int = 8


DEFAULT_ENROLMENT_LIMITS = EnrolmentLimits()


def _subject_fields(csr: x509.CertificateSigningRequest, where: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for rdn in csr.subject.rdns:
        attributes = list(rdn)
        if len(attributes) != 1:
            raise BadEnrolmentRequest(f"{where}: a multi-valued RDN in the subject")
        attribute = attributes[0]
        short = _SUBJECT_ATTRIBUTES.get(attribute.oid)
        if short is None:
            raise BadEnrolmentRequest(
                f"{where}: unexpected subject attribute {attribute.oid.dotted_string}; "
                "the subject must be O=tinyward device, OU=<purpose>, CN=<device ID>"
            )
        if short in fields:
            raise BadEnrolmentRequest(f"{where}: the subject has two {short} attributes")
        if not isinstance(attribute.value, str):
            raise BadEnrolmentRequest(f"{where}: subject {short} is not a string")
        fields[short] = attribute.value
    missing = [short for short in ("O", "OU", "CN") if short not in fields]
    if missing:
        raise BadEnrolmentRequest(
            f"{where}: the subject lacks {', '.join(missing)}; it must be "
            "O=tinyward device, OU=<purpose>, CN=<device ID>"
        )
    if fields["O"] != DEVICE_ORGANIZATION:
        raise BadEnrolmentRequest(f"{where}: subject O must be {DEVICE_ORGANIZATION!r}")
    if fields["OU"] not in PURPOSES:
        raise BadEnrolmentRequest(
            f"{where}: unknown purpose OU={fields['OU'][:40]!r}; "
            f"expected one of {', '.join(PURPOSES)}"
        )
    if not is_device_id(fields["CN"]):
        raise BadEnrolmentRequest(f"{where}: CN is not a device ID (64 lowercase hex characters)")
    return fields


def _check_csr(csr: x509.CertificateSigningRequest, where: str) -> None:
    try:
        key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise BadEnrolmentRequest(f"{where}: the public key cannot be read") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadEnrolmentRequest(
            f"{where}: a {type(key).__name__.removeprefix('_')} key; "
            "tinyward devices use ECDSA P-256 keys only"
        )
    if not isinstance(key.curve, ec.SECP256R1):
        raise BadEnrolmentRequest(
            f"{where}: an ECDSA key on {key.curve.name}; tinyward devices use P-256 only"
        )
    if csr.signature_algorithm_oid not in _SIGNATURE_ALGORITHMS:
        raise BadEnrolmentRequest(
            f"{where}: signature algorithm {csr.signature_algorithm_oid.dotted_string} "
            "is not accepted (use ECDSA with SHA-256)"
        )
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise BadEnrolmentRequest(
            f"{where}: the signature does not verify (no proof that the device holds the key)"
        )


def parse_enrolment_request(
    request_pem: bytes, limits: EnrolmentLimits = DEFAULT_ENROLMENT_LIMITS
) -> dict[str, x509.CertificateSigningRequest]:
    """Check an enrolment request and return its CSRs by purpose (``tls``, ``report``,
    ``attestation``).

    Raises:
        Misuse: ``request_pem`` is not bytes.
        BadEnrolmentRequest: oversize, not clean PEM, a block that is not a CSR, a key
            that is not P-256, a bad signature, a malformed subject, a missing, duplicate
            or unknown purpose, CNs that differ, a CN not derived from the attestation
            key, or one key used for two purposes. The message names the block and defect.
    """
    if not isinstance(request_pem, bytes | bytearray):
        raise Misuse("an enrolment request is bytes (the content of enroll.csr.pem)")
    request_pem = bytes(request_pem)
    if len(request_pem) > limits.max_request_bytes:
        raise BadEnrolmentRequest(
            f"the request is {len(request_pem)} bytes; at most {limits.max_request_bytes} "
            "are accepted (three P-256 CSRs take about 1.5 KB)"
        )
    try:
        blocks = split_pem(request_pem, limits.max_blocks)
    except PemError as error:
        raise BadEnrolmentRequest(
            f"not an enrolment request: {error}; expected three PEM "
            f"'{CSR_LABEL}' blocks (the enroll.csr.pem written by `tinyward device init`)"
        ) from None

    by_purpose: dict[str, x509.CertificateSigningRequest] = {}
    common_names: dict[str, str] = {}
    for number, (label, block) in enumerate(blocks, start=1):
        where = f"CSR {number}"
        if label != CSR_LABEL:
            raise BadEnrolmentRequest(f"block {number} is a {label!r}, not a {CSR_LABEL!r}")
        try:
            csr = x509.load_pem_x509_csr(block)
            # cryptography decodes fields lazily, so hostile DER can still fail here;
            # the exception types it uses for that are listed in _MALFORMED.
            fields = _subject_fields(csr, where)
            purpose = fields["OU"]
            where = f"CSR {number} ({purpose})"
            _check_csr(csr, where)
        except _MALFORMED:
            raise BadEnrolmentRequest(f"{where} is not a valid PKCS#10 CSR") from None
        if purpose in by_purpose:
            raise BadEnrolmentRequest(f"two CSRs for purpose {purpose!r}; send one per purpose")
        by_purpose[purpose] = csr
        common_names[purpose] = fields["CN"]

    missing = [purpose for purpose in PURPOSES if purpose not in by_purpose]
    if missing:
        raise BadEnrolmentRequest(
            f"no CSR for {', '.join(missing)}; a request holds exactly one CSR for each of "
            f"{', '.join(PURPOSES)}"
        )
    if len(set(common_names.values())) != 1:
        raise BadEnrolmentRequest(
            "the CSRs name different devices (their CNs differ); all three must carry the "
            "same device ID"
        )
    derived = device_id(by_purpose["attestation"].public_key())  # type: ignore[arg-type]
    if common_names["attestation"] != derived:
        raise BadEnrolmentRequest(
            "the CN is not the device ID derived from the attestation key "
            f"(expected {derived}); a device can only enrol under its own identity"
        )
    keys = {purpose: _public_der(csr) for purpose, csr in by_purpose.items()}
    if len(set(keys.values())) != len(keys):
        raise BadEnrolmentRequest(
            "one key is used for two purposes; each purpose needs its own key"
        )
    return {purpose: by_purpose[purpose] for purpose in PURPOSES}


def _public_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
