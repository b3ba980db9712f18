"""The optional ``upd`` field of a report: round trip, size budget, and every refusal."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyward.errors import Misuse
from tinyward.trust import cose
from tinyward.trust.report import (
    UPDATE_STATES,
    MalformedReport,
    Report,
    ReportTooLarge,
    UpdateStatus,
    encode_report,
    verify_report,
)
from tinyward.update.meta import COMPONENTS

from ..conftest import EphemeralSigner

DEV = "cd" * 32
MAX_VERSION = "999999.999999.999999"
#: The largest ``upd`` a device can send: every component, the longest state, code, target.
WORST = UpdateStatus("downloading", dict.fromkeys(COMPONENTS, MAX_VERSION), "x" * 40,
                     ("detector", MAX_VERSION))


def _resign(signer: EphemeralSigner, payload: object) -> bytes:
    return cose.sign1(cbor2.dumps(payload), signer,
                      protected_extra={cose.HEADER_KID: bytes.fromhex(DEV)})


def _payload(signer: EphemeralSigner, update: UpdateStatus | None) -> dict[str, object]:
    message = encode_report(Report(DEV, 3, 1_764_000_000, update=update), signer)
    return cbor2.loads(cose.decode_sign1(message).payload)  # type: ignore[no-any-return]


def test_update_status_round_trip(signer: EphemeralSigner) -> None:
    update = UpdateStatus("reverted", {"app": "1.0.0", "model": "2.3.4"}, "crash-on-start",
                          ("app", "1.1.0"))
    report = Report(DEV, 1, 1_764_000_000, update=update)
    message = encode_report(report, signer)
    assert len(message) == 1024
    assert verify_report(message, signer.public_key()) == report


def test_a_report_without_upd_still_verifies_and_has_no_update(signer: EphemeralSigner) -> None:
    payload = _payload(signer, None)
    assert "upd" not in payload
    message = encode_report(Report(DEV, 3, 1_764_000_000), signer)
    assert verify_report(message, signer.public_key()).update is None


def test_upd_keys_and_payload_keys_are_in_deterministic_order(signer: EphemeralSigner) -> None:
    payload = _payload(signer, WORST)
    assert list(payload) == ["t", "v", "dev", "inc", "pad", "res", "seq", "upd", "mode",
                             "health"]
    assert list(payload["upd"]) == ["tgt", "ver", "why", "state"]  # type: ignore[call-overload]
    assert list(payload["upd"]["ver"]) == ["app", "model", "config", "detector"]  # type: ignore[index]


def test_worst_case_upd_budget(signer: EphemeralSigner) -> None:
    # docs/reports.md states these figures: the largest upd is 219 bytes (key and value),
    # so a report carrying it needs at least 476 bytes, and a 1,024-byte report keeps 548
    # bytes for results and incidents (768 without upd).
    def smallest(update: UpdateStatus | None) -> int:
        for size in range(200, 1024):
            try:
                encode_report(Report(DEV, 2**63 - 1, 2**40 - 1, "air-gapped", health="degraded",
                                     update=update), signer, size)
            except ReportTooLarge:
                continue
            return size
        raise AssertionError("nothing fits")

    assert len(cbor2.dumps(_payload(signer, WORST)["upd"])) + 4 == 219
    assert smallest(None) == 256
    assert smallest(WORST) == 476
    message = encode_report(Report(DEV, 1, 1, update=WORST), signer)
    assert len(message) == 1024


def test_a_full_report_with_upd_refuses_to_grow(signer: EphemeralSigner) -> None:
    busy = Report(DEV, 1, 1, results=({"k": "v" * 250},) * 3, update=WORST)
    with pytest.raises(ReportTooLarge):
        encode_report(busy, signer)


@pytest.mark.parametrize(
    "upd, reason",
    [
        ([], "'upd' must be a map"),
        ({"state": "idle"}, "holds state and ver"),
        ({"ver": {}}, "holds state and ver"),
        ({"ver": {}, "state": "idle", "admin": True}, "nothing else"),
        ({"ver": {}, "state": "bricked"}, "state must be one of"),
        ({"ver": {}, "state": 1}, "state must be one of"),
        ({"ver": {"kernel": "1.0.0"}, "state": "idle"}, "components are"),
        ({"ver": {"app": "1.0"}, "state": "idle"}, "MAJOR.MINOR.PATCH"),
        ({"ver": {"app": "01.0.0"}, "state": "idle"}, "MAJOR.MINOR.PATCH"),
        ({"ver": {"app": "1.0.0" + "0" * 30}, "state": "idle"}, "MAJOR.MINOR.PATCH"),
        ({"ver": {"app": 100}, "state": "idle"}, "MAJOR.MINOR.PATCH"),
        ({"ver": [], "state": "idle"}, "map of component"),
        ({"ver": {"model": "1.0.0", "app": "1.0.0"}, "state": "idle"}, "deterministic order"),
        ({"ver": {}, "why": "Bad Code", "state": "failed"}, "short code"),
        ({"ver": {}, "why": "x" * 41, "state": "failed"}, "short code"),
        ({"ver": {}, "why": "-x", "state": "failed"}, "short code"),
        ({"ver": {}, "why": 7, "state": "failed"}, "short code"),
        ({"tgt": {}, "ver": {}, "state": "failed"}, "exactly one"),
        ({"tgt": {"app": "1.0.0", "model": "1.0.0"}, "ver": {}, "state": "failed"}, "exactly one"),
        ({"tgt": {"app": "x"}, "ver": {}, "state": "failed"}, "MAJOR.MINOR.PATCH"),
        ({"state": "idle", "ver": {}}, "deterministic order"),
    ],
)
def test_bad_upd_refused(signer: EphemeralSigner, upd: object, reason: str) -> None:
    payload = _payload(signer, UpdateStatus("idle"))
    payload["upd"] = upd
    with pytest.raises(MalformedReport, match=reason):
        verify_report(_resign(signer, payload), signer.public_key())


def test_upd_out_of_place_in_the_payload_is_refused(signer: EphemeralSigner) -> None:
    payload = _payload(signer, UpdateStatus("idle"))
    moved = {"upd": payload.pop("upd"), **payload}
    with pytest.raises(MalformedReport, match="deterministic order"):
        verify_report(_resign(signer, moved), signer.public_key())


def test_the_encoder_refuses_what_the_verifier_would(signer: EphemeralSigner) -> None:
    with pytest.raises(Misuse):
        encode_report(Report(DEV, 1, 1, update=UpdateStatus("bricked")), signer)
    with pytest.raises(Misuse):
        encode_report(Report(DEV, 1, 1, update=UpdateStatus("idle", {"app": "v2"})), signer)
    with pytest.raises(Misuse):
        encode_report(Report(DEV, 1, 1, update="idle"), signer)  # type: ignore[arg-type]


def test_from_mapping_takes_the_wire_names_and_checks_them() -> None:
    status = UpdateStatus.from_mapping({"state": "trial", "ver": {"model": "1.2.3"},
                                        "tgt": {"app": "2.0.0"}})
    assert status == UpdateStatus("trial", {"model": "1.2.3"}, None, ("app", "2.0.0"))
    with pytest.raises(Misuse, match="state must be one of"):
        UpdateStatus.from_mapping({"state": "nope", "ver": {}})
    with pytest.raises(Misuse):
        UpdateStatus.from_mapping("idle")  # type: ignore[arg-type]


_FUZZ_SIGNER = EphemeralSigner()
_version = st.builds(lambda a, b, c: f"{a}.{b}.{c}", *(st.integers(0, 999_999),) * 3)
_updates = st.builds(
    UpdateStatus,
    state=st.sampled_from(UPDATE_STATES),
    versions=st.dictionaries(st.sampled_from(COMPONENTS), _version, max_size=4),
    why=st.none() | st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,39}", fullmatch=True),
    target=st.none() | st.tuples(st.sampled_from(COMPONENTS), _version),
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(update=_updates, seq=st.integers(1, 2**63 - 1))
def test_fuzz_update_round_trip(update: UpdateStatus, seq: int) -> None:
    report = Report(DEV, seq, 1_764_000_000, update=update)
    message = encode_report(report, _FUZZ_SIGNER)
    assert len(message) == 1024
    got = verify_report(message, _FUZZ_SIGNER.public_key())
    assert got == report


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.text(max_size=24)
    | st.binary(max_size=8) | st.sampled_from([*UPDATE_STATES, *COMPONENTS, "1.0.0", "ver",
                                              "state", "why", "tgt"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["state", "ver", "why", "tgt", "app", "model", "x"]) | st.text(max_size=6),
        inner, max_size=5),
    max_leaves=12)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(upd=_cbor_values)
def test_fuzz_hostile_upd_only_documented_errors(upd: object) -> None:
    # A signed payload whose upd is any CBOR value: a Report with a checked UpdateStatus,
    # or MalformedReport, nothing else.
    payload = _payload(_FUZZ_SIGNER, UpdateStatus("idle"))
    payload["upd"] = upd
    message = cose.sign1(cbor2.dumps(payload), _FUZZ_SIGNER,
                         protected_extra={cose.HEADER_KID: bytes.fromhex(DEV)})
    try:
        report = verify_report(message, _FUZZ_SIGNER.public_key(), size=len(message))
    except MalformedReport:
        return
    assert report.update is not None and report.update.state in UPDATE_STATES


def test_from_mapping_refuses_keys_that_are_not_text() -> None:
    with pytest.raises(Misuse, match="text"):
        UpdateStatus.from_mapping({"state": "idle", "ver": {1: "1.0.0"}})
