"""Attacks on the enrolment request parser, one named test each (docs/architecture.md)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fleet.helpers import PURPOSES, csr_pem, device_keys, fixed_device_keys, request_pem
from tinyward.errors import Misuse
from tinyward.fleet.enrolment import EnrolmentLimits, parse_enrolment_request
from tinyward.fleet.errors import BadEnrolmentRequest
from tinyward.trust.identity import device_id


def _flip_last_signature_byte(pem: bytes) -> bytes:
    """Corrupt the CSR signature, keeping the DER well-formed.

    The signature is the last field of the CSR; its last byte is the low byte of the
    ECDSA ``s`` integer, which may take any value.
    """
    body = b"".join(pem.splitlines()[1:-1])
    der = bytearray(base64.b64decode(body))
    der[-1] ^= 0x01
    encoded = base64.encodebytes(bytes(der)).replace(b"\n", b"")
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + b"\n".join(lines)
        + b"\n-----END CERTIFICATE REQUEST-----\n"
    )


def test_valid_request_parses_to_three_csrs_by_purpose() -> None:
    keys = device_keys()
    csrs = parse_enrolment_request(request_pem(keys))
    assert list(csrs) == list(PURPOSES)
    for purpose, csr in csrs.items():
        assert csr.public_key() == keys[purpose].public_key()


def test_request_in_any_order_is_accepted() -> None:
    keys = device_keys()
    csrs = parse_enrolment_request(request_pem(keys, purposes=("attestation", "tls", "report")))
    assert csrs["tls"].public_key() == keys["tls"].public_key()


def test_enrol_csr_with_bad_signature_refused() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    forged = _flip_last_signature_byte(csr_pem(keys["report"], "report", name))
    request = (
        csr_pem(keys["tls"], "tls", name)
        + forged
        + csr_pem(keys["attestation"], "attestation", name)
    )
    with pytest.raises(BadEnrolmentRequest, match=r"CSR 2 \(report\).*signature does not verify"):
        parse_enrolment_request(request)


def test_enrol_cn_not_derived_from_attestation_key_refused() -> None:
    victim = device_id(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(BadEnrolmentRequest, match="not the device ID derived from the attestation"):
        parse_enrolment_request(request_pem(common_name=victim))


def test_enrol_mismatched_cns_refused() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    other = "0" * 64
    request = (
        csr_pem(keys["tls"], "tls", other)
        + csr_pem(keys["report"], "report", name)
        + csr_pem(keys["attestation"], "attestation", name)
    )
    with pytest.raises(BadEnrolmentRequest, match="CNs differ"):
        parse_enrolment_request(request)


def test_enrol_missing_purpose_refused() -> None:
    with pytest.raises(BadEnrolmentRequest, match="no CSR for report"):
        parse_enrolment_request(request_pem(purposes=("tls", "attestation")))


def test_enrol_duplicate_purpose_refused() -> None:
    with pytest.raises(BadEnrolmentRequest, match="two CSRs for purpose 'tls'"):
        parse_enrolment_request(request_pem(purposes=("tls", "tls", "report", "attestation")))


def test_enrol_extra_unknown_purpose_refused() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    extra = csr_pem(ec.generate_private_key(ec.SECP256R1()), "debug", name)
    with pytest.raises(BadEnrolmentRequest, match="unknown purpose OU='debug'"):
        parse_enrolment_request(request_pem(keys) + extra)


def test_enrol_fourth_csr_refused_even_with_known_purpose() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    extra = csr_pem(ec.generate_private_key(ec.SECP256R1()), "report", name)
    with pytest.raises(BadEnrolmentRequest, match="two CSRs for purpose 'report'"):
        parse_enrolment_request(request_pem(keys) + extra)


def test_enrol_rsa_key_refused() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    request = (
        csr_pem(rsa_key, "tls", name)
        + csr_pem(keys["report"], "report", name)
        + csr_pem(keys["attestation"], "attestation", name)
    )
    with pytest.raises(BadEnrolmentRequest, match=r"CSR 1 \(tls\).*RSA.*P-256"):
        parse_enrolment_request(request)


def test_enrol_p384_key_refused() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    p384 = ec.generate_private_key(ec.SECP384R1())
    request = (
        csr_pem(keys["tls"], "tls", name)
        + csr_pem(p384, "report", name, algorithm=hashes.SHA384())
        + csr_pem(keys["attestation"], "attestation", name)
    )
    with pytest.raises(BadEnrolmentRequest, match=r"CSR 2 \(report\).*secp384r1"):
        parse_enrolment_request(request)


def test_enrol_p384_attestation_key_refused_before_identity_derivation() -> None:
    keys = device_keys()
    keys["attestation"] = ec.generate_private_key(ec.SECP384R1())
    request = b"".join(csr_pem(keys[p], p, "1" * 64, algorithm=hashes.SHA384()) for p in PURPOSES)
    with pytest.raises(BadEnrolmentRequest, match="secp384r1"):
        parse_enrolment_request(request)


def test_enrol_one_key_for_two_purposes_refused() -> None:
    keys = device_keys()
    keys["report"] = keys["tls"]
    with pytest.raises(BadEnrolmentRequest, match="one key is used for two purposes"):
        parse_enrolment_request(request_pem(keys))


def test_enrol_wrong_organization_refused() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    request = b"".join(csr_pem(keys[p], p, name, organization="evil corp") for p in PURPOSES)
    with pytest.raises(BadEnrolmentRequest, match="subject O must be 'tinyward device'"):
        parse_enrolment_request(request)


def test_enrol_cn_not_hex_device_id_refused() -> None:
    keys = device_keys()
    request = b"".join(csr_pem(keys[p], p, "../../etc/passwd") for p in PURPOSES)
    with pytest.raises(BadEnrolmentRequest, match="CN is not a device ID"):
        parse_enrolment_request(request)


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello world",
        b"\xff\xfe not ascii",
        b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64!!\n-----END CERTIFICATE REQUEST-----\n",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n",
    ],
    ids=["empty", "text", "binary", "bad-base64", "bad-der", "unterminated"],
)
def test_enrol_garbage_pem_refused(garbage: bytes) -> None:
    with pytest.raises(BadEnrolmentRequest):
        parse_enrolment_request(garbage)


def test_enrol_text_between_blocks_refused() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    request = (
        csr_pem(keys["tls"], "tls", name)
        + b"smuggled text\n"
        + csr_pem(keys["report"], "report", name)
        + csr_pem(keys["attestation"], "attestation", name)
    )
    with pytest.raises(BadEnrolmentRequest, match="outside any PEM block"):
        parse_enrolment_request(request)


def test_enrol_certificate_instead_of_csr_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    fake = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(BadEnrolmentRequest, match="is a 'CERTIFICATE'"):
        parse_enrolment_request(fake)
    del key


def test_enrol_oversize_request_refused() -> None:
    padded = request_pem() + b"\n" * 20_000
    with pytest.raises(BadEnrolmentRequest, match="at most 16384 are accepted"):
        parse_enrolment_request(padded)


def test_enrol_too_many_blocks_refused() -> None:
    keys = device_keys()
    name = device_id(keys["attestation"].public_key())
    block = csr_pem(keys["tls"], "tls", name)
    with pytest.raises(BadEnrolmentRequest, match="more than 8 PEM blocks"):
        parse_enrolment_request(block * 9, EnrolmentLimits(max_request_bytes=64 * 1024))


def test_enrol_request_that_is_not_bytes_is_a_caller_bug() -> None:
    with pytest.raises(Misuse):
        parse_enrolment_request(request_pem().decode())  # type: ignore[arg-type]


def test_enrol_private_key_pem_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(BadEnrolmentRequest, match="is a 'PRIVATE KEY'"):
        parse_enrolment_request(pem)


_VALID = request_pem(fixed_device_keys(seed=7))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.binary(max_size=2048),
        # Mutations of a valid request: flip, cut and splice.
        st.tuples(st.integers(0, len(_VALID) - 1), st.integers(1, 255)).map(
            lambda p: _VALID[: p[0]] + bytes([_VALID[p[0]] ^ p[1]]) + _VALID[p[0] + 1 :]
        ),
        st.integers(0, len(_VALID)).map(lambda n: _VALID[:n]),
        st.binary(max_size=64).map(lambda b: _VALID[:600] + b + _VALID[600:]),
    )
)
def test_fuzz_enrolment_parser_raises_only_bad_enrolment_request(data: bytes) -> None:
    try:
        csrs = parse_enrolment_request(data)
    except BadEnrolmentRequest:
        return
    assert list(csrs) == list(PURPOSES)


def test_request_with_crlf_line_endings_is_accepted() -> None:
    keys = device_keys()
    csrs = parse_enrolment_request(request_pem(keys).replace(b"\n", b"\r\n"))
    assert csrs["attestation"].public_key() == keys["attestation"].public_key()
