"""atheris harness: :meth:`tinyward.fleet.bundle.DeviceBundle.from_json`.

The first input byte chooses what the rest is: 0 — the whole bundle file (JSON);
1 to 5 — the DER of one certificate (root CA, device CA, then the tls, report and
attestation certificates), which the harness puts, PEM-encoded, into the golden bundle
of ``tests/fleet/data`` in place of the real one. That form puts the fuzzer straight
onto certificate parsing and the chain, fleet-ID and purpose checks.

Documented outcomes: a :class:`~tinyward.fleet.bundle.DeviceBundle`, or
:class:`~tinyward.fleet.errors.BadBundle`. (``Misuse`` is for input that is not bytes,
which the harness never passes.) Anything else is a crash.
"""

from __future__ import annotations

import contextlib
import json

from tests.fuzz.harness import REPO, instrumented, pem_block, run

with instrumented(__name__):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tinyward.fleet.bundle import DeviceBundle
    from tinyward.fleet.errors import BadBundle

GOLDEN = (REPO / "tests" / "fleet" / "data" / "bundle-v1.json").read_bytes()
SLOTS = (("root_ca",), ("device_ca",), ("certificates", "tls"), ("certificates", "report"),
         ("certificates", "attestation"))


def _with_certificate(slot: tuple[str, ...], der: bytes) -> bytes:
    document = json.loads(GOLDEN)
    target = document
    for key in slot[:-1]:
        target = target[key]
    target[slot[-1]] = pem_block("CERTIFICATE", der).decode("ascii")
    return json.dumps(document).encode()


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    if not data:
        return
    mode, body = data[0] % (len(SLOTS) + 1), data[1:]
    bundle = body if mode == 0 else _with_certificate(SLOTS[mode - 1], body)
    with contextlib.suppress(BadBundle):
        DeviceBundle.from_json(bundle)


def seeds() -> list[bytes]:
    document = json.loads(GOLDEN)
    # The same bundle in the format with a next server pin (pin roll-over) as well.
    v2 = dict(document, format="tinyward-device-bundle/2", server_next_spki_sha256="5e" * 32)
    out = [b"\x00" + GOLDEN, b"\x00" + json.dumps(v2).encode()]
    for index, slot in enumerate(SLOTS, start=1):
        pem = document
        for key in slot:
            pem = pem[key]
        der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
        out.append(bytes([index]) + der)
    return out


if __name__ == "__main__":
    run(TestOneInput, seeds)
