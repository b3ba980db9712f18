"""A harness that crashes on every input: proves that test_atheris.py sees a crash.

Not a fuzz target (its name does not start with ``fuzz_``).
"""

from __future__ import annotations

from tests.fuzz.harness import run


def TestOneInput(data: bytes) -> None:  # the name atheris and OSS-Fuzz use
    raise RuntimeError("canary: an exception no parser documents")


def seeds() -> list[bytes]:
    return [b"canary"]


if __name__ == "__main__":
    run(TestOneInput, seeds)
