"""The pipe protocol: framing, limits, and fuzzing of the decoder."""

from __future__ import annotations

import os

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.app.contract import check_result
from tinyward.app.errors import ContractViolation, ProtocolError
from tinyward.app.manifest import Contract, FieldSpec
from tinyward.app.protocol import (
    HEADER,
    MessageDecoder,
    decode_body,
    decode_frame,
    decode_result,
    encode_frame,
    encode_message,
    read_message_fd,
)


def test_roundtrip_in_pieces():
    stream = encode_message({"r": 1, "v": {"count": 2}}) + encode_message({"r": 2, "v": None})
    decoder = MessageDecoder()
    got = []
    for byte in stream:  # one byte at a time
        decoder.feed(bytes([byte]))
        while (msg := decoder.next_message()) is not None:
            got.append(msg)
    assert got == [{"r": 1, "v": {"count": 2}}, {"r": 2, "v": None}]
    decoder.eof()


def test_oversize_refused_from_the_header_alone():
    decoder = MessageDecoder(max_message=100)
    decoder.feed(HEADER.pack(101))
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.kind == "oversize"


def test_truncated_stream():
    decoder = MessageDecoder()
    decoder.feed(encode_message({"r": 1, "v": None})[:-1])
    assert decoder.next_message() is None
    with pytest.raises(ProtocolError) as info:
        decoder.eof()
    assert info.value.kind == "truncated"


@pytest.mark.parametrize("body", [b"\xff", b"\x1f", b"\x01\x02", b"\x5a\x00\x00\x00\x09abc"])
def test_not_cbor_or_trailing_bytes(body):
    decoder = MessageDecoder()
    decoder.feed(HEADER.pack(len(body)) + body)
    with pytest.raises(ProtocolError) as info:
        decoder.next_message()
    assert info.value.kind == "not_cbor"


def test_frame_roundtrip_and_mismatch():
    frame = np.arange(20, dtype=np.int16).reshape(20, 1)
    decoder = MessageDecoder()
    decoder.feed(encode_frame(7, frame))
    msg = decoder.next_message()
    seq, back = decode_frame(msg, "int16", (20, 1))
    assert seq == 7 and np.array_equal(back, frame)
    with pytest.raises(ProtocolError):
        decode_frame(msg, "int32", (20, 1))
    with pytest.raises(ProtocolError):
        decode_frame({**msg, "b": msg["b"][:-2]}, "int16", (20, 1))


def test_result_message_shapes():
    assert decode_result({"r": 3, "v": None}) == (3, None)
    with pytest.raises(ProtocolError):
        decode_result({"r": 3, "v": None, "x": 1})
    with pytest.raises(ContractViolation) as info:
        decode_result({"r": 3, "bad": "TypeError: numpy.int64"})
    assert info.value.kind == "wrong_type"


def test_read_from_a_pipe_with_deadline():
    r, w = os.pipe()
    try:
        os.write(w, encode_message({"ready": True}))
        assert read_message_fd(r, MessageDecoder(), None) == {"ready": True}
        import time

        with pytest.raises(TimeoutError):
            read_message_fd(r, MessageDecoder(), time.monotonic() + 0.01)
        os.close(w)
        w = -1
        with pytest.raises(EOFError):
            read_message_fd(r, MessageDecoder(), None)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoder_refuses_junk_with_protocol_error(data):
    decoder = MessageDecoder(max_message=256)
    decoder.feed(data)
    try:
        while decoder.next_message() is not None:
            pass
    except ProtocolError:
        pass


def test_deep_nesting_is_refused_not_crashing():
    body = b"\x81" * 100_000 + b"\x00"
    decoder = MessageDecoder(max_message=200_000)
    decoder.feed(HEADER.pack(len(body)) + body)
    try:
        decoder.next_message()
    except ProtocolError as error:
        assert error.kind == "not_cbor"


def test_encoder_matches_cbor2():
    assert encode_message([1, "a"]) == HEADER.pack(4) + cbor2.dumps([1, "a"])


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(_VALUES, min_size=1, max_size=5))
def test_fuzz_reused_encoder_gives_the_same_bytes_as_cbor2_dumps(objs):
    from tinyward.app.protocol import MessageEncoder

    encoder = MessageEncoder()
    for obj in objs:  # several in a row: no state may leak from one message to the next
        assert encoder.encode(obj) == encode_message(obj)


def test_refused_invalid_utf8_text_is_not_leaked():
    # Found by tests/fuzz/fuzz_protocol.py (the core's memory grew run after run): cbor2
    # 5.x's C decoder kept the bytes of a non-UTF-8 text string it refused, so a hostile
    # app could have grown the core by ~60 KB per message.
    import gc
    import tracemalloc

    size = 60_000
    body = bytes([0x7A]) + size.to_bytes(4, "big") + b"\xff" * size
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            decoder = MessageDecoder(max_message=65_536)
            decoder.feed(HEADER.pack(len(body)) + body)
            with pytest.raises(ProtocolError) as refused:
                decoder.next_message()
            assert refused.value.kind == "not_cbor"
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A leak keeps 100 x 60 KB = 6 MB; without one, next to nothing stays.
    assert grown < 1_000_000, f"{grown} bytes still held after 100 refused messages"


# ---- issue 12, item 1: only ProtocolError / ContractViolation, whatever the bytes --------


_CONTRACT = Contract(
    fields=(FieldSpec("count", "int", min=0, max=999),
            FieldSpec("state", "enum", values=("normal", "anomaly")),
            FieldSpec("score", "float", min=0.0, max=1.0, step=0.25)),
    max_results_per_minute=60,
)
_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**60),
                  # (built by map: hypothesis must never repr a 5,000-digit int itself)
                  st.sampled_from([5000, 400, -400, 64, -65]).map(
                      lambda e: 10**e if abs(e) > 100 else 2**abs(e) * (1 if e > 0 else -1)),
                  st.floats(), st.text(max_size=8), st.binary(max_size=8),
                  st.sampled_from(["count", "state", "score", "normal"]))
_tree = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers(),
                              st.sampled_from(["count", "state", "score"])), inner, max_size=4),
    st.builds(cbor2.CBORTag, st.integers(0, 2**64 - 1), inner)), max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(body=st.one_of(
    _tree.map(cbor2.dumps), st.binary(max_size=64),
    st.fixed_dictionaries({"count": _leaf, "state": _leaf, "score": _leaf}).map(cbor2.dumps),
    st.dictionaries(_leaf, _leaf, max_size=3).map(cbor2.dumps)))
def test_property_decode_and_check_raise_nothing_but_their_own_errors(body: bytes) -> None:
    try:
        value = decode_body(body)
    except ProtocolError:
        return
    try:
        check_result(_CONTRACT, value)
    except ContractViolation as error:
        str(error)  # and its message formats
