import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.trust import cose
from tinyward.trust.cose import BadSignature, MalformedCose, decode_sign1, sign1

from ..conftest import EphemeralSigner


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
    message = cbor2.loads(sign1(b"x", signer))
    message.value[0] = cbor2.dumps({1: -35})  # ES384
    with pytest.raises(MalformedCose, match="only ES256"):
        decode_sign1(cbor2.dumps(message))


def test_alg_in_unprotected_refused(signer: EphemeralSigner) -> None:
    message = cbor2.loads(sign1(b"x", signer))
    message.value[1] = {1: -7}
    with pytest.raises(MalformedCose, match="protected header only"):
        decode_sign1(cbor2.dumps(message))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"\x1c", "not valid CBOR"),
        (cbor2.dumps([1, 2, 3]), "array of 4"),
        (cbor2.dumps(cbor2.CBORTag(98, [])), "not COSE_Sign1"),
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
    try:
        decode_sign1(data)
    except MalformedCose:
        pass


def test_refused_invalid_utf8_text_is_not_leaked() -> None:
    # Found by tests/fuzz/fuzz_report.py (memory grew run after run): cbor2's C decoder
    # leaks the bytes of a text string that is not UTF-8 when it refuses it, so each such
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
def test_invalid_utf8_anywhere_is_still_refused(data: bytes) -> None:
    # The C decoder runs with str_errors="replace" (see cose._loads_exactly); strictness
    # must survive that: invalid UTF-8 is refused wherever it sits.
    with pytest.raises(MalformedCose, match="not valid CBOR"):
        cose.loads_cbor(data, "test item")


def test_invalid_utf8_in_the_unprotected_header_is_refused(signer: EphemeralSigner) -> None:
    # decode_sign1 walks only the unprotected header for replaced text (every other part
    # of the envelope is a byte string): it must still refuse invalid UTF-8 there.
    message = sign1(b"payload", signer, unprotected={99: "ok"})
    assert b"\x62ok" in message
    with pytest.raises(MalformedCose, match="not valid CBOR"):
        decode_sign1(message.replace(b"\x62ok", b"\x62o\xff"))


def test_a_real_replacement_character_is_accepted() -> None:
    # U+FFFD itself is valid UTF-8: only the strict re-decode may tell it apart.
    assert cose.loads_cbor(cbor2.dumps({"label": "a\ufffdb"}), "x") == {"label": "a\ufffdb"}


def test_invalid_utf8_in_a_signed_payload_is_refused(signer: EphemeralSigner) -> None:
    payload = cbor2.dumps({"label": "ok"}).replace(b"ok", b"o\xff")
    message = decode_sign1(sign1(payload, signer))
    with pytest.raises(MalformedCose, match="not valid CBOR"):
        cose.loads_cbor(message.verify(signer.public_key()), "payload")


def test_what_remains_of_the_cbor2_leak_is_small_and_fixed() -> None:
    # Documented residue of agronholm/cbor2#257: refusing a malformed UUID tag leaks one
    # small exception in cbor2 5.x's C decoder, whatever the message size. This pins the
    # bound docs/reports.md states (< 2 KB per refused message, not the message's size).
    import gc
    import tracemalloc

    size = 60_000
    message = bytes([0xD8, 0x25, 0x5A]) + size.to_bytes(4, "big") + bytes(size)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            with pytest.raises(MalformedCose):
                cose.loads_cbor(message, "uuid")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100 * 2_000, f"{grown} bytes held after 100 refused 60 KB messages"


def test_never_accepts_what_the_strict_decoder_refuses() -> None:
    # Differential check against cbor2's strict pure-Python decoder (an independent
    # implementation): the fast path may refuse more, never accept more.
    import io
    import random

    from cbor2._decoder import CBORDecoder as StrictDecoder

    def strict_accepts(data: bytes) -> bool:
        stream = io.BytesIO(data)
        try:
            StrictDecoder(stream).decode()
        except Exception:  # noqa: BLE001 - any refusal counts
            return False
        return stream.tell() == len(data)

    seeds = [cbor2.dumps(x) for x in (
        {"a": [1, 2.5, "x\u00e9", b"\x00"]}, [None, True, -5, "\ufffd", {"k": "v"}],
        cbor2.CBORTag(18, [b"\xa1\x01\x26", {}, b"payload", bytes(64)]), {1: {2: "abc"}})]
    rng = random.Random(20261125)
    accepted = 0
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            where = rng.randrange(len(data) + 1)
            if rng.random() < 0.6 and where < len(data):
                data[where] = rng.randrange(256)
            else:
                data.insert(where, rng.randrange(256))
        try:
            cose.loads_cbor(bytes(data), "mutant")
        except MalformedCose:
            continue
        accepted += 1
        assert strict_accepts(bytes(data)), bytes(data).hex()
    assert accepted > 1_000  # the mutants exercise the accepting path, not only refusals


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
