"""What every atheris harness in this folder shares: instrumentation, seeds, a fixed key.

A harness is a module ``tests/fuzz/fuzz_<target>.py`` with

- ``TestOneInput(data: bytes) -> None``: feeds the bytes to one parser/verifier and lets
  only its documented error types pass; anything else escapes and atheris reports it as
  a crash, with the input that caused it;
- ``seeds() -> list[bytes]``: valid inputs made by tinyward's own encoders (fixed keys,
  deterministic signatures), so the fuzzer starts from real structure instead of noise;
- ``if __name__ == "__main__": run(TestOneInput, seeds)``.

Run one from the repository root (libFuzzer flags pass straight through)::

    .venv/bin/python -m tests.fuzz.fuzz_cose CORPUS_DIR -runs=3000 -seed=1

or ``scripts/fuzz.sh cose 300`` for a longer run with a persistent corpus. pytest does not
collect the harness files (their names do not start with ``test_``);
``tests/fuzz/test_atheris.py`` runs each one in a subprocess for a bounded number of runs.

Harnesses that need files (protected storage, a fleet) make them under
:func:`workdir`: ``$TINYWARD_FUZZ_WORKDIR`` if set, else a fresh temporary folder.
libFuzzer ends the process with ``exit()``, so nothing here could clean up afterwards;
the caller owns the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def instrumented(
    module_name: str, also: Iterable[str] = ()
) -> contextlib.AbstractContextManager[Any]:
    """Instrument tinyward modules (and the packages named in ``also``, pure-Python
    parsers whose exceptions tinyward must catch) imported inside this block, when run
    under atheris.

    Only when the harness is the main program: under pytest the modules are imported
    plainly (and tinyward is usually imported already, so there would be nothing to do).
    """
    if module_name != "__main__":
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["tinyward", *also])


class FixedSigner:
    """An ES256 signer over a key derived from a fixed number, with RFC 6979 signatures,
    so that seeds are the same bytes on every run and corpus files stay valid."""

    def __init__(self, secret: int) -> None:
        self._key = ec.derive_private_key(secret, ec.SECP256R1())

    def sign_es256(self, message: bytes) -> bytes:
        der = self._key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


def workdir(name: str) -> Path:
    """A fresh folder for a harness's files (see the module docstring)."""
    base = os.environ.get("TINYWARD_FUZZ_WORKDIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"tinyward-fuzz-{name}-", dir=base or None))


def pem_block(label: str, der: bytes) -> bytes:
    """A PEM block (64-character lines) around ``der``, which may be anything."""
    import base64

    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (f"-----BEGIN {label}-----\n" + "".join(f"{line}\n" for line in lines)
            + f"-----END {label}-----\n").encode("ascii")


def write_seeds(directory: Path, seeds: Iterable[bytes]) -> int:
    """Write each seed as a file named by its hash; return how many were written."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for seed in seeds:
        name = hashlib.sha1(seed, usedforsecurity=False).hexdigest()  # a name, not a MAC
        (directory / f"seed-{name}").write_bytes(seed)
        count += 1
    return count


def run(test_one_input: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
    """Write the seeds into the first corpus folder given, then hand the process to atheris.

    Arguments are libFuzzer's (``-runs=N``, ``-max_total_time=S``, ``-seed=N``, corpus
    folders). Without a corpus folder, a temporary one is made and its path printed.
    """
    import atheris

    argv = list(sys.argv)
    corpora = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not corpora:
        corpus = tempfile.mkdtemp(prefix="tinyward-fuzz-corpus-")
        print(f"corpus: {corpus}", file=sys.stderr)
        argv.append(corpus)
        corpora = [corpus]
    count = write_seeds(Path(corpora[0]), seeds())
    print(f"seeds: {count} written to {corpora[0]}", file=sys.stderr)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
