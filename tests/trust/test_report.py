"""The report codec: round trip, exact size, and one test per way a report is refused."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.errors import Misuse
from tinyward.trust import cose
from tinyward.trust.report import (
    BadPadding,
    BadReportSignature,
    MalformedReport,
    Report,
    ReportLimits,
    ReportSizeMismatch,
    ReportTooLarge,
    encode_report,
    peek_device_id,
    verify_report,
)

from ..conftest import EphemeralSigner, with_cose_part

DEV = "ab" * 32


def _report(**changes: object) -> Report:
    fields: dict[str, object] = {
        "device_id": DEV, "seq": 7, "timestamp": 1_764_000_000, "mode": "connected",
        "results": ({"label": "person", "score": 0.93, "box": (1, 2, 3, 4)},),
        "incidents": {"port_scan": 2}, "health": "ok",
    }
    fields.update(changes)
    return Report(**fields)  # type: ignore[arg-type]


def _resign(signer: EphemeralSigner, payload: object, *, kid: bytes = bytes.fromhex(DEV),
            tagged: bool = True, protected_extra: dict[object, object] | None = None) -> bytes:
    extra: dict[object, object] = {cose.HEADER_KID: kid}
    extra.update(protected_extra or {})
    return cose.sign1(cbor2.dumps(payload), signer, protected_extra=extra, tagged=tagged)


def _payload_of(message: bytes) -> dict[str, object]:
    return cbor2.loads(cose.decode_sign1(message).payload)  # type: ignore[no-any-return]


def test_roundtrip(signer: EphemeralSigner) -> None:
    report = _report()
    message = encode_report(report, signer)
    assert len(message) == 1024
    assert verify_report(message, signer.public_key()) == report
    assert peek_device_id(message) == DEV


@pytest.mark.parametrize("size", [300, 370, 380, 512, 1024])
def test_every_content_length_reaches_exact_size(signer: EphemeralSigner, size: int) -> None:
    # Walk the content length byte by byte over the CBOR head boundaries (24 and 256 bytes
    # of padding, 256 bytes of payload): every content that fits at all reaches the size.
    reached, too_large = 0, False
    for n in range(512):
        report = _report(results=({"a": "x" * min(n, 256), "b": "y" * max(0, n - 256)},))
        try:
            message = encode_report(report, signer, size)
        except ReportTooLarge:
            too_large = True
            continue
        assert not too_large, f"content {n} fits after a smaller one did not"
        assert len(message) == size
        verify_report(message, signer.public_key(), size=size)
        reached += 1
    assert reached > 20


def test_quiet_and_busy_reports_have_the_same_size(signer: EphemeralSigner) -> None:
    quiet = encode_report(_report(results=(), incidents={}), signer)
    busy = encode_report(_report(results=({"k": "v" * 200},) * 3), signer)
    assert len(quiet) == len(busy) == 1024


def test_too_large_content_is_refused_on_encode(signer: EphemeralSigner) -> None:
    with pytest.raises(ReportTooLarge):
        encode_report(_report(results=({"k": "v" * 250},) * 8), signer, 1024)


def test_encoder_refuses_what_the_verifier_would(signer: EphemeralSigner) -> None:
    with pytest.raises(Misuse):
        encode_report(_report(seq=0), signer)
    with pytest.raises(Misuse):
        encode_report(_report(mode="wifi"), signer)


def test_wrong_key_is_bad_signature(signer: EphemeralSigner) -> None:
    message = encode_report(_report(), signer)
    with pytest.raises(BadReportSignature):
        verify_report(message, EphemeralSigner().public_key())


def test_flipped_byte_refused(signer: EphemeralSigner) -> None:
    message = encode_report(_report(), signer)
    for i in range(0, len(message), 7):
        tampered = bytearray(message)
        tampered[i] ^= 0x40
        with pytest.raises((MalformedReport, BadReportSignature)):
            verify_report(bytes(tampered), signer.public_key())


def test_truncated_refused(signer: EphemeralSigner) -> None:
    message = encode_report(_report(), signer)
    with pytest.raises(MalformedReport, match="not valid CBOR"):
        verify_report(message[:-10], signer.public_key())


def test_wrong_size_refused(signer: EphemeralSigner) -> None:
    message = encode_report(_report(), signer, 512)
    with pytest.raises(ReportSizeMismatch, match="exactly 1024"):
        verify_report(message, signer.public_key(), size=1024)


def test_nonzero_padding_refused(signer: EphemeralSigner) -> None:
    payload = _payload_of(encode_report(_report(), signer))
    payload["pad"] = b"\x01" + bytes(len(payload["pad"]) - 1)  # type: ignore[arg-type]
    with pytest.raises(BadPadding):
        verify_report(_resign(signer, payload), signer.public_key())


@pytest.mark.parametrize("field", ["v", "dev", "seq", "t", "mode", "res", "inc", "health", "pad"])
def test_missing_field_refused(signer: EphemeralSigner, field: str) -> None:
    payload = _payload_of(encode_report(_report(), signer))
    del payload[field]
    with pytest.raises(MalformedReport, match=f"missing {field}"):
        verify_report(_resign(signer, payload), signer.public_key())


def test_extra_field_refused(signer: EphemeralSigner) -> None:
    payload = _payload_of(encode_report(_report(), signer))
    payload["admin"] = True
    with pytest.raises(MalformedReport, match="unexpected 'admin'"):
        verify_report(_resign(signer, payload), signer.public_key())


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("v", 2, "version"),
        ("dev", "AB" * 32, "device ID"),
        ("seq", 0, "'seq'"),
        ("seq", True, "'seq'"),
        ("seq", 2**63, "'seq'"),
        ("t", -1, "'t'"),
        ("t", 1.5, "'t'"),
        ("mode", "wifi", "'mode'"),
        ("health", "fine", "'health'"),
        ("pad", "text", "'pad'"),
        ("res", {"a": 1}, "'res'"),
        ("res", [{"a": {"nested": 1}}], "not an accepted"),
        ("res", [{"bad key!": 1}], "field name"),
        ("res", [{"a": float("nan")}], "finite"),
        ("res", [{"a": 1}] * 33, "over the limit"),
        ("inc", {"scan": -1}, "incident count"),
        ("inc", [], "'inc'"),
    ],
)
def test_bad_field_refused(signer: EphemeralSigner, field: str, value: object, reason: str) -> None:
    payload = _payload_of(encode_report(_report(), signer))
    payload[field] = value
    with pytest.raises(MalformedReport, match=reason):
        verify_report(_resign(signer, payload), signer.public_key())


def test_kid_must_name_dev(signer: EphemeralSigner) -> None:
    payload = _payload_of(encode_report(_report(), signer))
    message = _resign(signer, payload, kid=bytes.fromhex("cd" * 32))
    with pytest.raises(MalformedReport, match="does not name"):
        verify_report(message, signer.public_key())


def test_missing_kid_refused(signer: EphemeralSigner) -> None:
    message = cose.sign1(b"\xa0", signer)
    with pytest.raises(MalformedReport, match="kid"):
        peek_device_id(message)


def test_extra_protected_header_refused(signer: EphemeralSigner) -> None:
    payload = _payload_of(encode_report(_report(), signer))
    message = _resign(signer, payload, protected_extra={cose.HEADER_CONTENT_TYPE: 60})
    with pytest.raises(MalformedReport, match="only alg and kid"):
        verify_report(message, signer.public_key())


def test_wrong_algorithm_refused(signer: EphemeralSigner) -> None:
    message = with_cose_part(encode_report(_report(), signer), 0,
                             cbor2.dumps({1: -35, 4: bytes.fromhex(DEV)}))
    with pytest.raises(MalformedReport, match="only ES256"):
        verify_report(message, signer.public_key())


def test_oversize_refused_before_parsing(signer: EphemeralSigner) -> None:
    with pytest.raises(MalformedReport, match="limit"):
        peek_device_id(b"\x00" * 2000, limits=ReportLimits(max_bytes=1024))


def test_untagged_report_accepted(signer: EphemeralSigner) -> None:
    payload = _payload_of(encode_report(_report(), signer, 300))
    payload["pad"] = b""
    message = _resign(signer, payload, tagged=False)
    assert verify_report(message, signer.public_key(), size=len(message)).seq == 7


_FUZZ_SIGNER = EphemeralSigner()
_FUZZ_GOOD = encode_report(_report(), _FUZZ_SIGNER)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=1200))
def test_fuzz_random_bytes_only_documented_errors(data: bytes) -> None:
    with pytest.raises((MalformedReport, BadReportSignature, ReportSizeMismatch, BadPadding)):
        verify_report(data, _FUZZ_SIGNER.public_key())


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 1023), st.integers(1, 255)), min_size=1, max_size=4,
                unique_by=lambda edit: edit[0]))
def test_fuzz_mutated_report_refused(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_FUZZ_GOOD)
    for index, xor in edits:
        data[index] ^= xor
    with pytest.raises((MalformedReport, BadReportSignature, ReportSizeMismatch, BadPadding)):
        verify_report(bytes(data), _FUZZ_SIGNER.public_key())


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_name = st.from_regex(r"[a-z_]{1,10}", fullmatch=True)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    seq=st.integers(1, 2**63 - 1),
    timestamp=st.integers(0, 2**40 - 1),
    mode=st.sampled_from(["connected", "air-gapped"]),
    results=st.lists(st.dictionaries(_name, st.one_of(_scalar, st.tuples(_scalar, _scalar)),
                                     max_size=4), max_size=3),
    incidents=st.dictionaries(_name, st.integers(0, 2**32 - 1), max_size=4),
)
def test_fuzz_roundtrip(seq: int, timestamp: int, mode: str, results: list[dict[str, object]],
                        incidents: dict[str, int]) -> None:
    report = Report(DEV, seq, timestamp, mode, tuple(results), incidents, "degraded")  # type: ignore[arg-type]
    message = encode_report(report, _FUZZ_SIGNER)
    assert len(message) == 1024
    assert verify_report(message, _FUZZ_SIGNER.public_key()) == report


def test_invalid_utf8_in_a_result_text_is_refused_even_when_signed() -> None:
    signer = EphemeralSigner()
    device_id = "ab" * 32
    good = encode_report(Report(device_id, 1, 1_700_000_000, results=({"label": "okay"},)),
                         signer)
    sign1 = cose.decode_sign1(good)
    bad_payload = sign1.payload.replace(b"okay", b"ok\xff\xfe")
    assert cbor2.loads(bad_payload, str_errors="replace")["res"][0]["label"] == "ok\ufffd\ufffd"
    message = cose.sign1(bad_payload, signer,
                         protected_extra={cose.HEADER_KID: bytes.fromhex(device_id)})
    with pytest.raises(MalformedReport, match="not valid CBOR"):
        verify_report(message, signer.public_key(), size=len(message))


def test_a_real_replacement_character_in_a_result_text_is_kept() -> None:
    signer = EphemeralSigner()
    report = Report("cd" * 32, 1, 1_700_000_000, results=({"label": "a\ufffdb"},))
    message = encode_report(report, signer)
    assert verify_report(message, signer.public_key()).results == ({"label": "a\ufffdb"},)
