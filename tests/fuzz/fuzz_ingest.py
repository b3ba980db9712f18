"""atheris harness: the fleet's ingest decision, :func:`tinyward.fleet.ingest.decide`.

``decide`` promises never to raise for bad input: every refusal is a ``Reject``. So here
*any* exception is a crash. The device directory is a stub with one enrolled device
(fixed key), and the store's last sequence number is 2.

The first input byte chooses what the rest is: even — the POSTed report bytes; odd — a
payload the harness signs as the enrolled device (``kid`` = its ID) and pads to nothing,
so the schema, size, padding, replay and clock rules behind the signature are reached.
"""

from __future__ import annotations

from tests.fuzz.harness import FixedSigner, instrumented, run

with instrumented(__name__):
    from cryptography.hazmat.primitives.asymmetric import ec

    from tinyward.fleet.ingest import Accept, Reject, decide
    from tinyward.trust.cose import HEADER_KID, decode_sign1, sign1
    from tinyward.trust.identity import device_id
    from tinyward.trust.report import Report, encode_report

SIGNER = FixedSigner(0x1E57)
DEVICE_ID = device_id(SIGNER.public_key())
NOW = 1_700_000_000
LAST_SEQ = 2


class _Directory:
    def report_key(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        return SIGNER.public_key() if device_id == DEVICE_ID else None

    def is_revoked(self, device_id: str) -> bool:
        return False


DIRECTORY = _Directory()


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    if not data:
        return
    body = data[1:]
    if data[0] & 1:
        body = sign1(body, SIGNER, protected_extra={HEADER_KID: bytes.fromhex(DEVICE_ID)})
    decision = decide(body, DEVICE_ID, DIRECTORY, LAST_SEQ, NOW)
    assert isinstance(decision, Accept | Reject)
    if isinstance(decision, Accept):
        assert decision.report.seq > LAST_SEQ and decision.report.device_id == DEVICE_ID


def seeds() -> list[bytes]:
    out: list[bytes] = []
    for seq, when in ((3, NOW), (2, NOW), (4, NOW + 3600), (5, NOW - 40 * 24 * 3600)):
        report = Report(DEVICE_ID, seq, when, results=({"people": 3, "ok": True},),
                        incidents={"port_scan": 1})
        message = encode_report(report, SIGNER)
        out.append(b"\x00" + message)
        out.append(b"\x01" + decode_sign1(message).payload)
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
