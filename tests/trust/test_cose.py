import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.trust import cose
from tinyward.trust.cose import BadSignature, MalformedCose, decode_sign1, sign1

from ..conftest import EphemeralSigner, with_cose_part


def test_roundtrip_verifies(signer: EphemeralSigner) -> None:
    message = sign1(b"hello", signer, protected_extra={cose.HEADER_KID: b"k1"})
    decoded = decode_sign1(message)
    assert decoded.verify(signer.public_key()) == b"hello"
    assert decoded.kid == b"k1"


def test_wrong_key_is_bad_signature(signer: EphemeralSigner) -> None:
    message = sign1(b"hello", signer)
    with pytest.raises(BadSignature):
        decode_sign1(message).verify(EphemeralSigner().public_key())


def test_external_aad_is_bound(signer: EphemeralSigner) -> None:
    message = sign1(b"hello", signer, external_aad=b"ctx-a")
    decode_sign1(message).verify(signer.public_key(), external_aad=b"ctx-a")
    with pytest.raises(BadSignature):
        decode_sign1(message).verify(signer.public_key(), external_aad=b"ctx-b")


def test_every_flipped_byte_is_refused(signer: EphemeralSigner) -> None:
    message = sign1(b"payload bytes", signer)
    for i in range(len(message)):
        tampered = bytearray(message)
        tampered[i] ^= 0x01
        with pytest.raises((MalformedCose, BadSignature)):
            decode_sign1(bytes(tampered)).verify(signer.public_key())


def test_other_algorithm_refused(signer: EphemeralSigner) -> None:
    message = with_cose_part(sign1(b"x", signer), 0, cbor2.dumps({1: -35}))  # ES384
    with pytest.raises(MalformedCose, match="only ES256"):
        decode_sign1(message)


def test_alg_in_unprotected_refused(signer: EphemeralSigner) -> None:
    with pytest.raises(MalformedCose, match="protected header only"):
        decode_sign1(with_cose_part(sign1(b"x", signer), 1, {1: -7}))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"\x1c", "not valid CBOR"),
        (cbor2.dumps([1, 2, 3]), "array of 4"),
        (cbor2.dumps(cbor2.CBORTag(98, [])), "tag 98 is not used"),
        (cbor2.dumps([cbor2.dumps({1: -7}), {}, None, b"s" * 64]), "detached"),
        (b"\xa0" * 10, "trailing"),
    ],
)
def test_malformed_refused_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedCose, match=reason):
        decode_sign1(data)


def test_oversize_refused(signer: EphemeralSigner) -> None:
    with pytest.raises(MalformedCose, match="limit"):
        decode_sign1(sign1(b"x" * 2000, signer), max_bytes=1000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decode_only_documented_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedCose):
        decode_sign1(data)


def test_refused_invalid_utf8_text_is_not_leaked() -> None:
    # Found by tests/fuzz/fuzz_report.py (memory grew run after run): cbor2 5.x's C decoder
    # kept the bytes of a text string that is not UTF-8 when it refused it, so each such
    # hostile message would have cost the verifier up to its own size in memory.
    import gc
    import tracemalloc

    size = 60_000
    message = bytes([0x7A]) + size.to_bytes(4, "big") + b"\xff" * size
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            with pytest.raises(MalformedCose):  # a text string: not CBOR-valid, not COSE
                decode_sign1(message)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A leak keeps 100 x 60 KB = 6 MB; without one, next to nothing stays.
    assert grown < 1_000_000, f"{grown} bytes still held after 100 refused messages"


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x64]) + b"caf\xc3",  # text(4) whose last byte starts a cut-off sequence
        # {"k": [1, {"deep": text(1) 0xff}]}: invalid UTF-8 two containers down
        bytes.fromhex("a1616b8201a1646465657061") + b"\xff",
    ],
    ids=["top-level-text", "text-in-nested-map"],
)
def test_invalid_utf8_anywhere_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedCose, match="not valid CBOR"):
        cose.loads_cbor(data, "test item")


def test_invalid_utf8_in_the_unprotected_header_is_refused(signer: EphemeralSigner) -> None:
    # (The only place in an envelope that can hold text: every other part is bytes.)
    message = sign1(b"payload", signer, unprotected={99: "ok"})
    assert b"\x62ok" in message
    with pytest.raises(MalformedCose, match="not valid CBOR"):
        decode_sign1(message.replace(b"\x62ok", b"\x62o\xff"))


def test_a_real_replacement_character_is_accepted() -> None:
    # U+FFFD itself is valid UTF-8 (not a sign that the decoder replaced anything).
    assert cose.loads_cbor(cbor2.dumps({"label": "a\ufffdb"}), "x") == {"label": "a\ufffdb"}


def test_invalid_utf8_in_a_signed_payload_is_refused(signer: EphemeralSigner) -> None:
    payload = cbor2.dumps({"label": "ok"}).replace(b"ok", b"o\xff")
    message = decode_sign1(sign1(payload, signer))
    with pytest.raises(MalformedCose, match="not valid CBOR"):
        cose.loads_cbor(message.verify(signer.public_key()), "payload")


@pytest.mark.parametrize("head", [
    bytes([0xC1, 0x7A]),  # epoch date holding text
    bytes([0xD8, 0x1E, 0x5A]),  # rational holding a byte string
    bytes([0xD8, 0x25, 0x5A]),  # UUID of the wrong length
    bytes([0xD8, 0x24, 0x5A]),  # MIME message holding bytes
], ids=["epoch", "rational", "uuid", "mime"])
def test_refusing_a_malformed_tag_keeps_nothing(head: bytes) -> None:
    # cbor2 5.x's C decoder leaked a small exception for each of these (the rest of
    # agronholm/cbor2#257); cbor2 6 must keep nothing, whatever the message size.
    import gc
    import tracemalloc

    size = 60_000
    message = head + size.to_bytes(4, "big") + bytes(size)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            with pytest.raises(MalformedCose):
                cose.loads_cbor(message, "tag")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000, f"{grown} bytes held after 100 refused 60 KB messages"


@pytest.mark.parametrize("data", [
    bytes.fromhex("a2 0126 0126"),  # {1: -7, 1: -7}
    bytes.fromhex("a2 0126 013822"),  # {1: -7, 1: -35}: which algorithm?
    bytes.fromhex("81 a2 616b 01 616b 02"),  # [{"k": 1, "k": 2}]
], ids=["same-value", "alg-twice", "nested"])
def test_a_repeated_map_key_is_refused(data: bytes) -> None:
    # RFC 8949 §5.6: two readers could each pick a different value; RFC 9052 §3 forbids it.
    with pytest.raises(MalformedCose, match="not valid CBOR"):
        cose.loads_cbor(data, "map")


def test_a_protected_header_with_the_algorithm_twice_is_refused(signer: EphemeralSigner) -> None:
    message = with_cose_part(sign1(b"x", signer), 0, bytes.fromhex("a2 0126 013822"))
    with pytest.raises(MalformedCose, match="not valid CBOR"):  # alg ES256, then alg ES384
        decode_sign1(message)


def test_cut_off_message_is_truncated_cose(signer: EphemeralSigner) -> None:
    message = sign1(b"payload bytes", signer)
    for length in range(1, len(message)):
        with pytest.raises(cose.TruncatedCose):
            decode_sign1(message[:length])
    assert issubclass(cose.TruncatedCose, MalformedCose)  # callers catching the family still do


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("c5821b7fffffffffffffff01"),  # bigfloat 1 * 2**(2**63-1): decimal.Overflow
        bytes.fromhex("c582016178"),  # bigfloat with a text mantissa: decimal.InvalidOperation
        bytes.fromhex("c4821b7fffffffffffffff01"),  # decimal fraction, same exponent
    ],
    ids=["bigfloat-overflow", "bigfloat-text-mantissa", "decimal-fraction-overflow"],
)
def test_decimal_tags_that_cannot_be_computed_are_malformed(data: bytes) -> None:
    # Found by tests/fuzz/fuzz_attestation.py: decimal's exceptions are ArithmeticError
    # but not OverflowError, and escaped decode_sign1 (so verify_token, verify_report and
    # the fleet's ingest, which promises never to raise).
    with pytest.raises(MalformedCose, match="not valid CBOR"):
        decode_sign1(data)
