"""`tinyward bench trust`: what the trusted core costs over calling `cryptography` directly.

Each operation runs through the keystore / protected storage and, in the same run, as the
bare `cryptography` call it wraps. The ratio is the overhead of the core (policy checks,
COSE signature encoding, record framing; for protected writes also the fsyncs that make
them durable, shown separately so the two costs are not confused).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tinyward.trust.cose import verify_es256
from tinyward.trust.keystore import Keystore, KeyUsage
from tinyward.trust.rot import FileRootOfTrust
from tinyward.trust.storage import ProtectedStorage


@dataclass(frozen=True)
class BenchRow:
    operation: str
    core_per_second: float
    direct_per_second: float

    @property
    def ratio(self) -> float:
        """How many times slower the core is than the direct call (1.0 = no overhead)."""
        return self.direct_per_second / self.core_per_second


def _rate(fn: Callable[[], object], seconds: float, max_ops: int = 1_000_000) -> float:
    fn()  # warm up
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while count < max_ops:
        fn()
        count += 1
        if count % 16 == 0 and time.perf_counter() >= deadline:
            break
    return count / (time.perf_counter() - start)


def run(seconds: float = 1.0, payload_bytes: int = 256) -> list[BenchRow]:
    """Measure the core against `cryptography`, ``seconds`` per operation and side."""
    message = os.urandom(payload_bytes)
    with tempfile.TemporaryDirectory(prefix="tinyward-bench-") as tmp:
        base = Path(tmp)
        rot = FileRootOfTrust.create(base / "root.key", base / "counters")
        storage = ProtectedStorage(base / "storage", rot)
        keystore = Keystore(storage, rot, base)
        handle = keystore.generate("report", KeyUsage.SIGN_REPORT, now=time.time())
        public = keystore.public_key(handle)
        direct_key = ec.generate_private_key(ec.SECP256R1())
        direct_public = direct_key.public_key()
        ecdsa = ec.ECDSA(hashes.SHA256())
        signature = keystore.sign(handle, KeyUsage.SIGN_REPORT, message)
        direct_signature = direct_key.sign(message, ecdsa)
        aead = AESGCM(os.urandom(32))
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, message, b"aad")
        storage.write("bench", message)
        blob = keystore.seal(message, "bench")

        rows = [
            BenchRow("sign (ES256)",
                     _rate(lambda: keystore.sign(handle, KeyUsage.SIGN_REPORT, message), seconds),
                     _rate(lambda: direct_key.sign(message, ecdsa), seconds)),
            BenchRow("verify (ES256)",
                     _rate(lambda: verify_es256(public, signature, message), seconds),
                     _rate(lambda: direct_public.verify(direct_signature, message, ecdsa),
                           seconds)),
            BenchRow("seal (keystore, AES-256-GCM)",
                     _rate(lambda: keystore.seal(message, "bench"), seconds),
                     _rate(lambda: aead.encrypt(os.urandom(12), message, b"aad"), seconds)),
            BenchRow("unseal (keystore, AES-256-GCM)",
                     _rate(lambda: keystore.unseal(blob, "bench"), seconds),
                     _rate(lambda: aead.decrypt(nonce, sealed, b"aad"), seconds)),
            BenchRow("protected write (seal + 2 atomic, fsynced files)",
                     _rate(lambda: storage.write("bench", message), seconds, max_ops=2000),
                     _rate(lambda: aead.encrypt(os.urandom(12), message, b"aad"), seconds)),
            BenchRow("protected read (counter check + unseal)",
                     _rate(lambda: storage.read("bench"), seconds),
                     _rate(lambda: aead.decrypt(nonce, sealed, b"aad"), seconds)),
        ]
    return rows
