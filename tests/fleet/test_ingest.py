"""The ingest decision: one named test per attack, no sockets."""

from __future__ import annotations

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.fleet.ingest import Accept, IngestPolicy, Reject, decide
from tinyward.trust import cose
from tinyward.trust.report import Report, encode_report

from ..conftest import EphemeralSigner, with_cose_part

NOW = 1_764_000_000
A, B = "aa" * 32, "bb" * 32


class Directory:
    def __init__(self) -> None:
        self.keys: dict[str, EphemeralSigner] = {A: EphemeralSigner(), B: EphemeralSigner()}
        self.revoked: set[str] = set()

    def report_key(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        signer = self.keys.get(device_id)
        return signer.public_key() if signer else None

    def is_revoked(self, device_id: str) -> bool:
        return device_id in self.revoked


def _signed(directory: Directory, device: str = A, seq: int = 5, t: int = NOW,
            size: int = 1024) -> bytes:
    return encode_report(Report(device, seq, t), directory.keys[device], size)


def _reject(decision: object, status: int, code: str) -> Reject:
    assert isinstance(decision, Reject), decision
    assert (decision.status, decision.code) == (status, code), decision
    assert decision.reason
    return decision


def test_valid_report_accepted() -> None:
    d = Directory()
    decision = decide(_signed(d), A, d, last_seq=4, now=NOW)
    assert isinstance(decision, Accept)
    assert decision.report.seq == 5 and decision.report.device_id == A


def test_device_a_posting_b_report_refused() -> None:
    d = Directory()
    _reject(decide(_signed(d, device=B), A, d, 0, NOW), 403, "signer_mismatch")


def test_report_signed_by_other_key_for_own_id_refused() -> None:
    d = Directory()
    forged = encode_report(Report(A, 5, NOW), EphemeralSigner())
    _reject(decide(forged, A, d, 0, NOW), 403, "bad_signature")


def test_revoked_device_refused() -> None:
    d = Directory()
    d.revoked.add(A)
    _reject(decide(_signed(d), A, d, 0, NOW), 403, "revoked")


def test_unknown_device_refused() -> None:
    d = Directory()
    stranger = "cc" * 32
    d2 = Directory()
    d2.keys[stranger] = EphemeralSigner()
    _reject(decide(_signed(d2, device=stranger), stranger, d, 0, NOW), 403, "unknown_device")


def test_replay_refused_with_stored_seq() -> None:
    d = Directory()
    decision = _reject(decide(_signed(d, seq=5), A, d, last_seq=5, now=NOW), 409, "replay")
    assert decision.stored_seq == 5


def test_out_of_order_refused() -> None:
    d = Directory()
    _reject(decide(_signed(d, seq=3), A, d, last_seq=5, now=NOW), 409, "replay")


def test_clock_far_in_future_refused() -> None:
    d = Directory()
    _reject(decide(_signed(d, t=NOW + 3600), A, d, 0, NOW), 422, "clock_skew")


def test_clock_far_in_past_refused() -> None:
    d = Directory()
    _reject(decide(_signed(d, t=NOW - 365 * 86400), A, d, 0, NOW), 422, "clock_skew")


def test_queued_report_a_day_old_accepted() -> None:
    d = Directory()
    assert isinstance(decide(_signed(d, t=NOW - 86400), A, d, 0, NOW), Accept)


def test_wrong_size_refused() -> None:
    d = Directory()
    _reject(decide(_signed(d, size=512), A, d, 0, NOW), 400, "bad_size")


def test_nonzero_padding_refused() -> None:
    d = Directory()
    sign1 = cose.decode_sign1(_signed(d))
    payload = cbor2.loads(sign1.payload)
    payload["pad"] = b"\xff" * len(payload["pad"])
    message = cose.sign1(cbor2.dumps(payload), d.keys[A],
                         protected_extra={cose.HEADER_KID: bytes.fromhex(A)})
    _reject(decide(message, A, d, 0, NOW), 400, "bad_padding")


def test_malformed_cbor_refused() -> None:
    d = Directory()
    _reject(decide(b"\xff\x00garbage", A, d, 0, NOW), 400, "malformed")


def test_truncated_refused() -> None:
    d = Directory()
    _reject(decide(_signed(d)[:500], A, d, 0, NOW), 400, "malformed")


def test_wrong_algorithm_refused() -> None:
    d = Directory()
    message = with_cose_part(_signed(d), 0, cbor2.dumps({1: -35, 4: bytes.fromhex(A)}))
    _reject(decide(message, A, d, 0, NOW), 400, "malformed")


def test_policy_size_is_used() -> None:
    d = Directory()
    policy = IngestPolicy(size=512)
    assert isinstance(decide(_signed(d, size=512), A, d, 0, NOW, policy), Accept)
