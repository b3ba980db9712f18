"""Shared test fixtures, the hypothesis profiles, and what CI may not skip."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, settings

from tinyward.trust.cose import der_to_raw_signature

pytest_plugins = ["pytester"]  # tests/test_ci_strictness.py runs pytest on a marked test

#: ``CI=true`` (GitHub Actions, GitLab and most CI set it): the run is the evidence.
CI = os.environ.get("CI", "").strip().lower() == "true"

#: The project workspace's shared folder (public data sets, PSA token vectors, the design
#: map), next to the repository: /work/shared for /work/main. Not part of the repository.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# Hypothesis: under CI one fixed sequence of examples (``derandomize``: the same inputs on
# every run, no example database), so a red CI run can be replayed exactly; locally the
# default random search, which keeps finding new inputs. A test's own @settings may ask
# for more or fewer examples; the profile states the default.
settings.register_profile("ci", derandomize=True, database=None, max_examples=100,
                          deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
# (derandomize stated: hypothesis loads its own "ci" profile when a CI variable is set.)
settings.register_profile("dev", derandomize=False, max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if CI else "dev"))


def require_or_skip(reason: str) -> NoReturn:
    """Something this test needs is missing (a tool, a kernel feature, root, ../shared).

    Locally that is a skip with ``reason``. Under ``CI=true`` it is a failure: CI must never
    lose the C, Cortex-M4, Landlock or uid-drop evidence silently.
    """
    if CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def needs(available: bool, reason: str) -> pytest.MarkDecorator:
    """A marker: run the test when ``available``, else :func:`require_or_skip` ``reason``.

    Use it where ``pytest.mark.skipif(not available, reason=...)`` would go (a test, a
    class, or ``pytestmark``)."""
    return pytest.mark.tinyward_needs(available=available, reason=reason)


def needs_shared(*parts: str) -> pytest.MarkDecorator:
    """:func:`needs` a path inside ../shared (data sets and vectors kept out of the repo)."""
    path = SHARED.joinpath(*parts)
    return needs(path.exists(), f"needs {path} (the workspace's ../shared; see README)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tinyward_needs(available, reason): see tests/conftest.py")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("tinyward_needs"):
        if not mark.kwargs["available"]:
            require_or_skip(mark.kwargs["reason"])


class EphemeralSigner:
    """A Signer over an in-memory key, for tests of codecs that do not need the keystore."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def sign_es256(self, message: bytes) -> bytes:
        return der_to_raw_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()


def with_cose_part(message: bytes, index: int, value: Any) -> bytes:
    """A COSE_Sign1 message with one of its four parts replaced (the signature is kept,
    so it no longer matches: an attacker's edit), re-encoded tagged."""
    decoded = cbor2.loads(message)
    parts = list(decoded.value if isinstance(decoded, cbor2.CBORTag) else decoded)
    parts[index] = value
    return cbor2.dumps(cbor2.CBORTag(18, parts))


@pytest.fixture
def signer() -> EphemeralSigner:
    return EphemeralSigner()


#: scrypt cost for the keys tests seal (2**10: 1 MiB, about a millisecond). The real cost
#: (tinyward.fleet.keyseal.DEFAULT_SCRYPT, 128 MiB) is checked by
#: tests/fleet/test_keys.py::test_attack_keys_at_rest_are_memory_hard, which restores it.
TEST_SCRYPT_N = 2**10


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sealing fleet keys costs 128 MiB and ~0.5 s each at the real cost: far too slow for
    the hundreds of fleets the tests make. A key records its parameters, so opening one
    (even in a child process) costs what it was sealed with."""
    from tinyward.fleet import keyseal

    monkeypatch.setattr(keyseal, "DEFAULT_SCRYPT", keyseal.ScryptParams(n=TEST_SCRYPT_N))
