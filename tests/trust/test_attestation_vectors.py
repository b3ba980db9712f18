"""tinyward's PSA token code against the specification's own vectors (RFC 9783 repository).

The vectors live outside the repository, in ``../shared/vectors/psa-token`` (see its
README); ``TINYWARD_PSA_VECTORS`` may point elsewhere. A folder named by
``TINYWARD_PSA_VECTORS`` must be there; without ../shared the tests skip, except under
``CI=true``, where a missing folder fails them: these are the interoperability checks.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import needs
from tinyward.trust import psa_claims
from tinyward.trust.attestation import decode_claims, peek_instance_id, verify_token
from tinyward.trust.errors import BadClaim, ClaimError, InstanceIdMismatch, MissingClaim

from .cbor_diag import loads_diag

VECTORS = Path(
    os.environ.get(
        "TINYWARD_PSA_VECTORS",
        Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors" / "psa-token",
    )
)
NAMED = "TINYWARD_PSA_VECTORS" in os.environ
HAVE_VECTORS = (VECTORS / "psa-sign1.cbor").is_file()
# Named explicitly: missing is an error; from ../shared: skipped (failed under CI=true).
pytestmark = needs(HAVE_VECTORS or NAMED,
                   f"PSA token vectors not found in {VECTORS} (../shared; see README)")
GOOD = sorted(VECTORS.glob("GOOD_*.diag"))
FAIL = sorted(VECTORS.glob("FAIL_*.diag"))

# File-name words -> (claim name, component attribute) in tinyward's errors.
CLAIM_NAMES = {
    "BootSeed": ("boot_seed", None),
    "ImplementationID": ("implementation_id", None),
    "InstanceID": ("instance_id", None),
    "Nonce": ("nonce", None),
    "SoftwareComponent_Measurement": ("software_components", "measurement_value"),
}
DEFECTS = {
    "missing": MissingClaim,
    "wrong_format": BadClaim,
    "too_big": BadClaim,
    "too_small": BadClaim,
}


def _jwk_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    jwk = json.loads(path.read_text())
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"

    def coord(name: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(jwk[name] + "=" * (-len(jwk[name]) % 4)))

    # Only the public coordinates: the JWK also holds "d", which a verifier never needs.
    return ec.EllipticCurvePublicNumbers(coord("x"), coord("y"), ec.SECP256R1()).public_key()


def test_the_vector_folder_is_there() -> None:
    assert (VECTORS / "psa-sign1.cbor").is_file(), f"PSA vectors not found in {VECTORS}"
    assert GOOD and FAIL


def test_spec_token_verifies_with_the_key_beside_it() -> None:
    token = (VECTORS / "psa-sign1.cbor").read_bytes()
    key = _jwk_public_key(VECTORS / "tfm-es-iak.json")
    expected = loads_diag((VECTORS / "sign1-claims.diag").read_text())
    nonce = expected[10]
    # The example's Instance ID is a placeholder (0x01 followed by 32 bytes of 0x02), not
    # SHA-256 of the IAK as TF-M and tinyward derive it. RFC 9783 §7 lets an endorser
    # supply the (Instance ID, key) pair, which is what this argument stands for.
    claims = verify_token(token, key, nonce, expected_instance_id=peek_instance_id(token))
    assert claims == decode_claims(expected)
    assert claims.instance_id == b"\x01" + b"\x02" * 32
    assert claims.client_id == 2147483647
    assert claims.boot_seed == bytes(8)
    assert [c.measurement_type for c in claims.software_components] == ["PRoT"]


def test_spec_token_fails_tinyward_instance_id_binding() -> None:
    # Documented above: with tinyward's own derivation the placeholder does not match.
    token = (VECTORS / "psa-sign1.cbor").read_bytes()
    key = _jwk_public_key(VECTORS / "tfm-es-iak.json")
    with pytest.raises(InstanceIdMismatch):
        verify_token(token, key, b"\x01" * 32)


def test_spec_hex_file_is_the_same_token() -> None:
    hex_text = "".join((VECTORS / "psa-sign1.hex").read_text().split())
    assert bytes.fromhex(hex_text) == (VECTORS / "psa-sign1.cbor").read_bytes()


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_claim_sets_are_accepted(path: Path) -> None:
    claimset = loads_diag(path.read_text())
    claims = decode_claims(claimset)
    assert claims.instance_id == claimset[256]
    assert len(claims.software_components) == len(claimset[2399])


@pytest.mark.parametrize("path", FAIL, ids=lambda p: p.name)
def test_fail_claim_sets_are_refused_for_their_stated_defect(path: Path) -> None:
    match = re.fullmatch(r"FAIL_(.+)_(missing|wrong_format|too_big|too_small)\.diag", path.name)
    assert match, f"no rule for vector {path.name}: extend CLAIM_NAMES/DEFECTS"
    claim, field = CLAIM_NAMES[match.group(1)]
    defect = match.group(2)
    claimset = loads_diag(path.read_text())
    with pytest.raises(ClaimError) as caught:
        decode_claims(claimset)
    error = caught.value
    assert type(error) is DEFECTS[defect], str(error)
    assert (error.claim, error.field) == (claim, field), str(error)
    if defect in ("too_big", "too_small"):
        size = len(claimset[getattr(psa_claims, f"KEY_{claim.upper()}")])
        assert f"got {size}" in error.detail
        limit = psa_claims.BOOT_SEED_MAX if defect == "too_big" else psa_claims.BOOT_SEED_MIN
        assert (size > limit) if defect == "too_big" else (size < limit)


@pytest.mark.parametrize("path", FAIL, ids=lambda p: p.name)
def test_fail_claim_sets_are_refused_from_cbor_bytes_too(path: Path) -> None:
    import cbor2

    with pytest.raises(ClaimError):
        decode_claims(cbor2.dumps(loads_diag(path.read_text())))
