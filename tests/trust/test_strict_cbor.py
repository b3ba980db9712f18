"""Attacks on the CBOR decoding of signed reports and attestation tokens (issue 12, item 6).

An enrolled device holds a report key, so it can sign anything: every test here signs its
hostile bytes properly and shows that the codec still refuses them, by the rule they
break (a tag the format does not use, an indefinite length, a non-minimal head, a label
that is not an int, keys out of order) rather than by a signature check.
"""

from __future__ import annotations

import cbor2
import pytest

from tinyward.trust import cose
from tinyward.trust.attestation import MalformedToken, decode_claims
from tinyward.trust.report import MalformedReport, Report, encode_report, verify_report

from ..conftest import EphemeralSigner

DEV = "cd" * 32
KID = bytes.fromhex(DEV)


def _payload(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "dev": DEV, "inc": {}, "pad": b"", "res": [], "seq": 1, "t": 1_764_000_000, "v": 1,
        "mode": "connected", "health": "ok"}
    payload.update(changes)
    return payload


def _enc(payload: dict[str, object]) -> bytes:
    """The deterministic encoding: keys in RFC 8949 §4.2.1 order, minimal heads, 64-bit floats."""
    return cbor2.dumps({k: payload[k] for k in sorted(payload, key=lambda k: (len(k), k))})


def _signed(signer: EphemeralSigner, payload_bytes: bytes, protected: bytes | None = None
            ) -> bytes:
    """A COSE_Sign1 over exactly these payload (and protected header) bytes, validly signed."""
    protected = protected if protected is not None else cbor2.dumps(
        {cose.HEADER_ALG: cose.ALG_ES256, cose.HEADER_KID: KID}, canonical=True)
    signature = signer.sign_es256(cbor2.dumps(["Signature1", protected, b"", payload_bytes]))
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload_bytes, signature]))


def _refused(signer: EphemeralSigner, message: bytes, match: str) -> None:
    with pytest.raises(MalformedReport, match=match):
        verify_report(message, signer.public_key(), size=len(message))


def test_the_baseline_passes(signer: EphemeralSigner) -> None:
    # The helpers make an acceptable report: each attack below changes one thing.
    message = _signed(signer, _enc(_payload()))
    assert verify_report(message, signer.public_key(), size=len(message)).seq == 1


def test_attack_bignum_decimal_tag_refused_at_the_tag(signer: EphemeralSigner) -> None:
    # Tag 4 with a 60 KB bignum mantissa took 0.8 s to decode (int -> Decimal is
    # quadratic). The decoder must refuse the tag itself, before building the number.
    huge = cbor2.CBORTag(4, [-2, cbor2.CBORTag(2, b"\xff" * 60_000)])
    with pytest.raises(cose.MalformedCose, match="tag 4 is not used"):
        cose.loads_cbor(cbor2.dumps(huge), "payload")
    message = _signed(signer, _enc(_payload(res=[{"x": huge}])))
    with pytest.raises(MalformedReport, match="tag 4 is not used"):
        verify_report(message, signer.public_key(), size=len(message),
                      limits=__import__("tinyward.trust.report", fromlist=["x"]).ReportLimits(
                          max_bytes=128 * 1024))


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 5, 18, 24, 25, 28, 29, 30, 35, 37, 55799, 65535])
def test_attack_any_tag_in_a_payload_refused(signer: EphemeralSigner, tag: int) -> None:
    value = {0: "2026-01-01T00:00:00Z", 1: 0, 2: b"\x01", 3: b"\x01", 5: [1, 2]}.get(tag, 0)
    payload = _enc(_payload(res=[{"x": cbor2.CBORTag(tag, value)}]))
    _refused(signer, _signed(signer, payload), f"tag {tag} is not used")


def test_attack_self_described_envelope_refused(signer: EphemeralSigner) -> None:
    message = _signed(signer, _enc(_payload()))
    with pytest.raises(cose.MalformedCose, match="tag 55799 is not used"):
        cose.decode_sign1(b"\xd9\xd9\xf7" + message)


@pytest.mark.parametrize("payload_hex", [
    # {"dev": …} as an indefinite-length map (0xbf … 0xff)
    "bf" + _enc(_payload())[1:].hex() + "ff",
], ids=["indefinite-map"])
def test_attack_indefinite_length_map_refused(signer: EphemeralSigner, payload_hex: str) -> None:
    _refused(signer, _signed(signer, bytes.fromhex(payload_hex)), "indefinite length")


def test_attack_indefinite_array_and_chunked_bytes_refused(signer: EphemeralSigner) -> None:
    canonical = _enc(_payload())
    # "res": [] (0x80) as an indefinite array (0x9f 0xff)
    indefinite_array = canonical.replace(b"\x63res\x80", b"\x63res\x9f\xff")
    # "pad": h'' (0x40) as a chunked byte string (0x5f 0x40 0xff)
    chunked = canonical.replace(b"\x63pad\x40", b"\x63pad\x5f\x40\xff")
    assert indefinite_array != canonical and chunked != canonical
    for payload in (indefinite_array, chunked):
        _refused(signer, _signed(signer, payload), "indefinite length")


def test_attack_non_minimal_heads_refused(signer: EphemeralSigner) -> None:
    canonical = _enc(_payload())
    longer_int = canonical.replace(b"\x63seq\x01", b"\x63seq\x18\x01")  # 1 in two bytes
    longer_text = canonical.replace(b"\x64mode", b"\x78\x04mode")  # a 4-char key, 2-byte head
    assert longer_int != canonical and longer_text != canonical
    for payload in (longer_int, longer_text):
        _refused(signer, _signed(signer, payload), "deterministic")


def test_attack_keys_out_of_order_and_other_float_widths_refused(
        signer: EphemeralSigner) -> None:
    unordered = cbor2.dumps(dict(reversed(list(_payload().items()))))
    unordered_result = _enc(_payload(res=[{"z": 1, "a": 2}]))
    # Floats are always 64-bit in a report: 0.5 as a half-precision float is another
    # encoding of the same report.
    half = _enc(_payload(res=[{"a": 0.5}]))
    half = half.replace(b"\xfb\x3f\xe0" + bytes(6), b"\xf9\x38\x00")
    assert b"\xf9\x38\x00" in half
    for payload in (unordered, unordered_result, half):
        _refused(signer, _signed(signer, payload), "deterministic")


def test_attack_float_labels_in_the_protected_header_refused(signer: EphemeralSigner) -> None:
    # {1.0: -7.0, 4: kid} was accepted and stored: 1.0 == 1 and -7.0 == -7 in Python.
    protected = cbor2.dumps({1.0: -7.0, 4: KID})  # deterministic: 64-bit floats
    message = _signed(signer, _enc(_payload()), protected)
    _refused(signer, message, "label|integer")
    bool_label = cbor2.dumps({True: -7, 4: KID})  # True == 1 as well
    with pytest.raises(cose.MalformedCose):
        cose.decode_sign1(_signed(signer, _enc(_payload()), bool_label))


def test_reports_with_floats_round_trip(signer: EphemeralSigner) -> None:
    # The encoder writes what the decoder demands (shortest floats, sorted keys).
    report = Report(DEV, 3, 1_764_000_000, results=({"score": 0.5, "p": 0.1, "z": -1.0e300},),
                    incidents={"b": 1, "a": 2})
    assert verify_report(encode_report(report, signer), signer.public_key()) == report


def test_attack_indefinite_length_attestation_claims_refused() -> None:
    # RFC 9783 forbids indefinite lengths in PSA tokens.
    claims = bytes.fromhex("bf") + cbor2.dumps({10: b"\0" * 32}, canonical=True)[1:] + b"\xff"
    with pytest.raises(MalformedToken, match="indefinite length"):
        decode_claims(claims)
