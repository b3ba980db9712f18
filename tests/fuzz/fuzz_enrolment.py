"""atheris harness: :func:`tinyward.fleet.enrolment.parse_enrolment_request`.

The first input byte chooses what the rest is: 0 — the whole request file (PEM text);
1, 2, 3 — the DER of the tls, report or attestation CSR, which the harness wraps in a
PEM block between the two other CSRs of a valid request. Mutating base64 text rarely
makes interesting DER, so the second form puts the fuzzer straight onto the X.509
parsing, the subject rules and the proof-of-possession check.

Documented outcomes: a dict of CSRs by purpose, or
:class:`~tinyward.fleet.errors.BadEnrolmentRequest`. (``Misuse`` is for input that is
not bytes, which the harness never passes.) Anything else is a crash.
"""

from __future__ import annotations

import contextlib

from tests.fuzz.harness import instrumented, pem_block, run

with instrumented(__name__):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tinyward.fleet.enrolment import CSR_LABEL, parse_enrolment_request
    from tinyward.fleet.errors import BadEnrolmentRequest
    from tinyward.fleet.profiles import PURPOSES


def _valid_blocks() -> list[bytes]:
    from tests.fleet.helpers import csr_pem, fixed_device_keys
    from tinyward.trust.identity import device_id

    keys = fixed_device_keys(7)
    name = device_id(keys["attestation"].public_key())
    return [csr_pem(keys[purpose], purpose, name) for purpose in PURPOSES]


BLOCKS = _valid_blocks()  # PEM CSRs in PURPOSES order


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    if not data:
        return
    mode, body = data[0] % 4, data[1:]
    if mode == 0:
        request = body
    else:
        blocks = list(BLOCKS)
        blocks[mode - 1] = pem_block(CSR_LABEL, body)
        request = b"".join(blocks)
    with contextlib.suppress(BadEnrolmentRequest):
        parse_enrolment_request(request)


def seeds() -> list[bytes]:
    from tests.fleet.helpers import fixed_device_keys, request_pem

    assert len(BLOCKS) == len(PURPOSES)
    out = [b"\x00" + b"".join(BLOCKS), b"\x00" + request_pem(fixed_device_keys(8)),
           b"\x00" + b"".join(BLOCKS).replace(b"\n", b"\r\n")]
    for index, block in enumerate(BLOCKS):
        der = x509.load_pem_x509_csr(block).public_bytes(serialization.Encoding.DER)
        out.append(bytes([index + 1]) + der)
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
