"""atheris harness: signed device reports — ``verify_report`` (fixed key) and
``peek_device_id``.

The first input byte chooses what the rest is: even — a whole report as it arrives;
odd — a payload that the harness signs with the fixed key (``kid`` = the fixed device
ID) and verifies at its own length, so the fuzzer reaches the payload schema, the
``kid``/``dev`` match and the padding check behind the signature.

The seeds include a report with the optional ``upd`` field (update state and versions).

Documented outcomes: a :class:`~tinyward.trust.report.Report` or a
:class:`~tinyward.trust.report.ReportError` subclass. Anything else is a crash.
"""

from __future__ import annotations

import contextlib

from tests.fuzz.harness import FixedSigner, instrumented, run

with instrumented(__name__):
    from tinyward.trust.cose import HEADER_KID, decode_sign1, sign1
    from tinyward.trust.identity import device_id
    from tinyward.trust.report import (
        Report,
        ReportError,
        UpdateStatus,
        encode_report,
        peek_device_id,
        verify_report,
    )

SIGNER = FixedSigner(0x4E90_2700)
PUBLIC_KEY = SIGNER.public_key()
DEVICE_ID = device_id(PUBLIC_KEY)


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    if not data:
        return
    body = data[1:]
    if data[0] & 1:
        message = sign1(body, SIGNER, protected_extra={HEADER_KID: bytes.fromhex(DEVICE_ID)})
        size = len(message)
    else:
        message, size = body, 1024
    with contextlib.suppress(ReportError):
        verify_report(message, PUBLIC_KEY, size=size)
    with contextlib.suppress(ReportError):
        peek_device_id(message)


def seeds() -> list[bytes]:
    reports = [
        Report(DEVICE_ID, 1, 1_700_000_000),
        Report(DEVICE_ID, 2, 1_700_000_060, mode="air-gapped", health="degraded",
               results=({"label": "cat", "p": 0.75, "n": 3, "ok": True, "none": None},
                        {"v": (1, 2.5, "x", False)}),
               incidents={"port_scan": 2, "dropped_reports": 0}),
        Report(DEVICE_ID, 3, 1_700_000_120,
               update=UpdateStatus("reverted", {"app": "1.0.0", "model": "2.3.4"},
                                   "health-deadline", ("app", "1.1.0"))),
    ]
    out: list[bytes] = []
    for report in reports:
        for size in (512, 1024):
            message = encode_report(report, SIGNER, size)
            out.append(b"\x00" + message)
            out.append(b"\x01" + decode_sign1(message).payload)
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
