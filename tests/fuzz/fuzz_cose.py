"""atheris harness: :func:`tinyward.trust.cose.decode_sign1` and ``Sign1.verify``.

Documented outcomes: a :class:`~tinyward.trust.cose.Sign1`, :class:`MalformedCose` from
the decoder, :class:`BadSignature` from ``verify``. Anything else is a crash.
"""

from __future__ import annotations

from tests.fuzz.harness import FixedSigner, instrumented, run

with instrumented(__name__):
    from tinyward.trust.cose import HEADER_KID, BadSignature, MalformedCose, decode_sign1, sign1

SIGNER = FixedSigner(0xC05E)
PUBLIC_KEY = SIGNER.public_key()


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    try:
        message = decode_sign1(data)
    except MalformedCose:
        return
    # Everything a caller reads from an unverified message must not crash either.
    _ = message.kid
    try:
        message.verify(PUBLIC_KEY)
        message.verify(PUBLIC_KEY, external_aad=b"aad")
    except BadSignature:
        pass


def seeds() -> list[bytes]:
    return [
        sign1(b"", SIGNER),
        sign1(b"hello", SIGNER, tagged=False),
        sign1(bytes(range(64)), SIGNER, protected_extra={HEADER_KID: bytes(32)}),
        sign1(b"\xa1\x01\x02", SIGNER, unprotected={HEADER_KID: b"k"}),
        sign1(b"x", SIGNER, external_aad=b"aad"),
    ]


if __name__ == "__main__":
    run(TestOneInput, seeds)
