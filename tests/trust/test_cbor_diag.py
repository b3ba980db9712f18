"""The diagnostic-notation reader used by the vector tests is itself checked here."""

from __future__ import annotations

import cbor2
import pytest

from .cbor_diag import DiagError, loads_diag
from .test_attestation_vectors import VECTORS


def test_scalars_and_containers() -> None:
    text = '{ / c / 1: [0, -1, 0x10, "a\\"b", h\'00 ff\', true, false, null], "k": 18([]) }'
    assert loads_diag(text) == {
        1: [0, -1, 16, 'a"b', b"\x00\xff", True, False, None],
        "k": cbor2.CBORTag(18, []),
    }


@pytest.mark.parametrize(
    "text",
    ["{1: 2, 1: 3}", "[1, 2", "h'0g'", "1.5", "[_ 1]", "/ open", "1 2", '"abc', "-1(2)", ""],
)
def test_refuses_what_it_does_not_understand(text: str) -> None:
    with pytest.raises(DiagError):
        loads_diag(text)


def test_spec_token_diag_encodes_to_the_spec_token_bytes() -> None:
    # The .diag and .cbor files of the specification describe the same token: encoding
    # our reading of the first with cbor2 must give the second, byte for byte.
    parsed = loads_diag((VECTORS / "psa-sign1.diag").read_text())
    assert cbor2.dumps(parsed) == (VECTORS / "psa-sign1.cbor").read_bytes()


def test_spec_claims_diag_matches_the_token_payload() -> None:
    token = cbor2.loads((VECTORS / "psa-sign1.cbor").read_bytes())
    payload = cbor2.loads(token.value[2])
    assert loads_diag((VECTORS / "sign1-claims.diag").read_text()) == payload
