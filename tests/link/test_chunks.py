"""The chunk protocol (link/chunks.py): every request one width, every frame one size."""

from __future__ import annotations

import os

import pytest

from tinyward.errors import Misuse
from tinyward.link import chunks
from tinyward.link.errors import BadServerAnswer


def test_every_fetch_request_has_the_same_width() -> None:
    requests = [chunks.IDLE_REQUEST, chunks.FetchRequest(os.urandom(32), 0),
                chunks.FetchRequest(bytes(32), 2**63 - 1)]
    assert {len(r.header()) for r in requests} == {82}
    for request in requests:
        assert chunks.FetchRequest.parse(request.header()) == request
    assert chunks.IDLE_REQUEST.header() == "0" * 82


@pytest.mark.parametrize("value", ["", "0" * 81, "0" * 83, "02" + "0" * 80, "00" + "1" * 80,
                                   "01" + "0" * 64 + "ff" * 8, "0" * 80 + "AB", "../etc/passwd"])
def test_malformed_fetch_requests_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        chunks.FetchRequest.parse(value)


def test_every_frame_has_the_same_size_filler_chunk_or_offer() -> None:
    size = chunks.frame_size(1024)
    longest = chunks.OfferWire("detector", "p" * chunks.MAX_OFFER_PATH, "999999.999999.999999")
    frames = [
        chunks.Frame(1),
        chunks.Frame(2**62, chunks.DATA, os.urandom(32), 2**62, 2**62, os.urandom(1024),
                     longest, "replay"),
        chunks.Frame(5, chunks.NOT_FOUND, os.urandom(32), 0, 0, b"", None),
    ]
    for frame in frames:
        encoded = chunks.encode_frame(frame, 1024)
        assert len(encoded) == size
        assert chunks.decode_frame(encoded, 1024) == frame


def test_what_does_not_fit_a_frame_is_refused_not_sent_bigger() -> None:
    with pytest.raises(Misuse):
        chunks.encode_frame(chunks.Frame(1, chunks.DATA, data=bytes(1025)), 1024)
    too_long = chunks.OfferWire("app", "p" * (chunks.MAX_OFFER_PATH + 1), "1.0.0")
    assert not chunks.offer_fits(too_long)
    with pytest.raises(Misuse):
        chunks.encode_frame(chunks.Frame(1, offer=too_long), 1024)


def test_a_frame_of_another_size_or_with_junk_is_a_bad_answer() -> None:
    good = chunks.encode_frame(chunks.Frame(3), 1024)
    for bad in (good[:-1], good + b"\0", good[:-1] + b"\1", b"\xff" * len(good),
                chunks.encode_frame(chunks.Frame(3), 512)):
        with pytest.raises(BadServerAnswer):
            chunks.decode_frame(bad, 1024)


def test_a_frame_answers_only_its_own_request() -> None:
    handle = os.urandom(32)
    frame = chunks.Frame(1, chunks.DATA, handle, 1024, 5000, b"x" * 1024)
    assert frame.answers(chunks.FetchRequest(handle, 1024))
    assert not frame.answers(chunks.FetchRequest(handle, 0))
    assert not frame.answers(chunks.FetchRequest(os.urandom(32), 1024))
    assert not frame.answers(chunks.IDLE_REQUEST)
    assert not chunks.Frame(1).answers(chunks.FetchRequest(bytes(32), 0))  # filler


def test_delivery_time_and_cost_formulas() -> None:
    # 100 KB in 1 KiB chunks: 98 chunks + 6 of metadata, one per 10 s report.
    assert chunks.delivery_seconds(100_000, 10.0) == pytest.approx(1040.0)
    assert chunks.delivery_seconds(1_000_000, 10.0) == pytest.approx((977 + 6) * 10.0)
    # Frame (1424 B) and header (96 B) per report, minus the JSON body it replaces.
    assert chunks.delivery_bytes_per_hour(10.0, json_answer=20) == pytest.approx(
        (96 + 1424 - 20) * 360)
