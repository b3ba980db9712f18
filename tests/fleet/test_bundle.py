"""The device bundle parser takes hostile bytes: named attacks, then fuzzing.

``data/bundle-v1.json`` is a real bundle made once by ``Fleet.enroll`` (fixed device keys,
seed 7, at 2026-01-01T12:00Z); it pins the documented format, and is the fuzz seed.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fleet.conftest import NOW
from tests.fleet.helpers import PASSPHRASE, PURPOSES, request_pem
from tinyward.errors import Misuse
from tinyward.fleet.bundle import BUNDLE_FORMAT, BUNDLE_FORMAT_NEXT_PIN, DeviceBundle
from tinyward.fleet.errors import BadBundle
from tinyward.fleet.pki import Fleet

GOLDEN = (Path(__file__).parent / "data" / "bundle-v1.json").read_bytes()


def _doc() -> dict[str, Any]:
    return json.loads(GOLDEN)  # type: ignore[no-any-return]


def _encode(document: object) -> bytes:
    return json.dumps(document).encode()


NEXT_PIN = "5e" * 32


def _doc_v2() -> dict[str, Any]:
    """The golden bundle in the format with a next server pin (pins are not signed, so
    adding one keeps it a valid bundle)."""
    document = _doc()
    document["format"] = BUNDLE_FORMAT_NEXT_PIN
    document["server_next_spki_sha256"] = NEXT_PIN
    return document


GOLDEN_V2 = _encode(_doc_v2())


def test_golden_bundle_parses() -> None:
    bundle = DeviceBundle.from_json(GOLDEN)
    assert bundle.device_id == "a08269ab925f17ab3e35ca8a91283e5b24d556058142668b0ca81fbc40f398a3"
    assert bundle.fleet_id == _doc()["fleet_id"]
    assert bundle.server_spki_sha256.hex() == _doc()["server_spki_sha256"]
    assert set(bundle.certificates) == set(PURPOSES)


def test_bundle_round_trips(fleet: Fleet) -> None:
    bundle = fleet.enroll(request_pem(), PASSPHRASE, now=NOW)
    assert DeviceBundle.from_json(bundle.to_json()) == bundle
    # A fleet has a next server key: its bundles carry both pins, in format /2.
    assert json.loads(bundle.to_json())["format"] == BUNDLE_FORMAT_NEXT_PIN
    assert bundle.server_pins == (fleet.server_spki_sha256, fleet.server_next_spki_sha256)
    assert list(json.loads(bundle.to_json())) == [
        "format", "device_id", "fleet_id", "certificates", "device_ca", "root_ca",
        "server_spki_sha256", "server_next_spki_sha256",
    ]  # fmt: skip


def test_old_bundle_with_one_pin_still_parses() -> None:
    bundle = DeviceBundle.from_json(GOLDEN)
    assert bundle.server_next_spki_sha256 is None
    assert bundle.server_pins == (bundle.server_spki_sha256,)
    assert json.loads(bundle.to_json())["format"] == BUNDLE_FORMAT  # still written as /1


def test_bundle_with_a_next_pin_round_trips() -> None:
    bundle = DeviceBundle.from_json(GOLDEN_V2)
    assert bundle.server_next_spki_sha256 == bytes.fromhex(NEXT_PIN)
    assert bundle.server_pins == (bundle.server_spki_sha256, bytes.fromhex(NEXT_PIN))
    assert DeviceBundle.from_json(bundle.to_json()) == bundle
    keys = list(json.loads(bundle.to_json()))
    assert (keys[0], keys[-1]) == ("format", "server_next_spki_sha256")


def test_attack_next_pin_smuggled_into_a_v1_bundle_refused() -> None:
    # An old device would not know the field: a /1 bundle has exactly the /1 keys.
    document = _doc()
    document["server_next_spki_sha256"] = NEXT_PIN
    with pytest.raises(BadBundle, match="unknown keys server_next_spki_sha256"):
        DeviceBundle.from_json(_encode(document))


def test_v2_bundle_without_its_next_pin_refused() -> None:
    document = _doc_v2()
    del document["server_next_spki_sha256"]
    with pytest.raises(BadBundle, match="lacks server_next_spki_sha256"):
        DeviceBundle.from_json(_encode(document))


@pytest.mark.parametrize("pin", ["AB" * 32, "ab" * 31, "zz" * 32, 12, None, ""])
def test_bundle_malformed_next_pin_refused(pin: object) -> None:
    document = _doc_v2()
    document["server_next_spki_sha256"] = pin
    with pytest.raises(BadBundle, match="server_next_spki_sha256 must be 64"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_next_pin_equal_to_the_current_one_refused() -> None:
    document = _doc_v2()
    document["server_next_spki_sha256"] = document["server_spki_sha256"]
    with pytest.raises(BadBundle, match="repeats the current pin"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_wrong_format_tag_refused() -> None:
    document = _doc()
    document["format"] = "tinyward-device-bundle/9"
    with pytest.raises(BadBundle, match="not a device bundle"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_unknown_key_refused() -> None:
    document = _doc()
    document["private_key"] = "-----BEGIN PRIVATE KEY-----"
    with pytest.raises(BadBundle, match="unknown keys private_key"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_missing_key_refused() -> None:
    document = _doc()
    del document["server_spki_sha256"]
    with pytest.raises(BadBundle, match="lacks server_spki_sha256"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_duplicate_key_refused() -> None:
    # A second "server_spki_sha256" would silently win in a lax parser: a pin swap.
    tampered = GOLDEN.rstrip().rstrip(b"}") + b', "server_spki_sha256": "' + b"0" * 64 + b'"}'
    with pytest.raises(BadBundle, match="appears twice"):
        DeviceBundle.from_json(tampered)


@pytest.mark.parametrize("pin", ["AB" * 32, "ab" * 31, "zz" * 32, 12, None])
def test_bundle_malformed_pin_refused(pin: object) -> None:
    document = _doc()
    document["server_spki_sha256"] = pin
    with pytest.raises(BadBundle, match="server_spki_sha256"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_fleet_id_not_of_its_root_refused() -> None:
    document = _doc()
    document["fleet_id"] = "0" * 32
    with pytest.raises(BadBundle, match="fleet_id is not the ID of the root CA"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_certificate_from_another_fleet_refused(fleet: Fleet) -> None:
    foreign = json.loads(fleet.enroll(request_pem(), PASSPHRASE, now=NOW).to_json())
    document = _doc()
    document["certificates"]["tls"] = foreign["certificates"]["tls"]
    with pytest.raises(BadBundle, match="tls certificate is not signed by the CA"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_device_ca_from_another_fleet_refused(fleet: Fleet) -> None:
    document = _doc()
    document["device_ca"] = fleet.device_ca_path.read_text()
    with pytest.raises(BadBundle, match="device_ca is not signed"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_certificates_swapped_between_purposes_refused() -> None:
    document = _doc()
    certificates = document["certificates"]
    certificates["tls"], certificates["report"] = certificates["report"], certificates["tls"]
    with pytest.raises(BadBundle, match="not issued for the tls purpose"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_for_another_device_refused(fleet: Fleet) -> None:
    other = json.loads(fleet.enroll(request_pem(), PASSPHRASE, now=NOW).to_json())
    other["device_id"] = _doc()["device_id"]
    with pytest.raises(BadBundle, match="names another device"):
        DeviceBundle.from_json(_encode(other))


def test_bundle_pem_with_trailing_text_refused() -> None:
    document = _doc()
    document["root_ca"] += "hidden"
    with pytest.raises(BadBundle, match="root_ca is not one PEM certificate"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_two_certificates_in_one_field_refused() -> None:
    document = _doc()
    document["device_ca"] += document["root_ca"]
    with pytest.raises(BadBundle, match="more than 1 PEM blocks"):
        DeviceBundle.from_json(_encode(document))


@pytest.mark.parametrize("slot", ["root_ca", "device_ca"])
def test_bundle_certificate_key_on_unknown_curve_refused(slot: str) -> None:
    # Found by tests/fuzz/fuzz_bundle.py: one byte of the P-256 OID changed made
    # cryptography raise UnsupportedAlgorithm out of the parser instead of BadBundle.
    document = _doc()
    der = x509.load_pem_x509_certificate(document[slot].encode()).public_bytes(
        serialization.Encoding.DER
    )
    p256_oid = bytes.fromhex("06082a8648ce3d030107")
    assert der.count(p256_oid) == 1
    der = der.replace(p256_oid, bytes.fromhex("0608308648ce3d030107"))
    document[slot] = ssl.DER_cert_to_PEM_cert(der)
    with pytest.raises(BadBundle, match=f"{slot} holds a public key that cannot be read"):
        DeviceBundle.from_json(_encode(document))


def test_bundle_certificate_with_invalid_x509_version_refused() -> None:
    # Found by tests/fuzz/fuzz_bundle.py: cryptography's x509.InvalidVersion (version 8 in
    # the root CA's DER) is not a ValueError and escaped the parser.
    document = _doc()
    der = x509.load_pem_x509_certificate(document["root_ca"].encode()).public_bytes(
        serialization.Encoding.DER
    )
    v3 = bytes.fromhex("a003020102")
    assert der.count(v3) == 1
    document["root_ca"] = ssl.DER_cert_to_PEM_cert(der.replace(v3, bytes.fromhex("a003020108")))
    with pytest.raises(BadBundle, match=r"root_ca does not parse as an X\.509 certificate"):
        DeviceBundle.from_json(_encode(document))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "must be a JSON object"),
        (b'{"format": NaN}', "NaN is not allowed"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        (b"1" * 5000, "not valid JSON"),
        (b" " * 100_000, "larger than"),
    ],
    ids=["empty", "utf16", "array", "nan", "deep", "huge-int", "oversize"],
)
def test_bundle_not_json_refused(data: bytes, reason: str) -> None:
    with pytest.raises(BadBundle, match=reason):
        DeviceBundle.from_json(data)


def test_bundle_str_input_is_a_caller_bug() -> None:
    with pytest.raises(Misuse):
        DeviceBundle.from_json(GOLDEN.decode())  # type: ignore[arg-type]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=20,
)


def _with_field(field: str, value: object) -> bytes:
    document = _doc()
    document[field] = value
    return _encode(document)


def _with_field_v2(field: str, value: object) -> bytes:
    document = _doc_v2()
    document[field] = value
    return _encode(document)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=512),
        st.tuples(st.integers(0, len(GOLDEN) - 1), st.integers(1, 255)).map(
            lambda p: GOLDEN[: p[0]] + bytes([GOLDEN[p[0]] ^ p[1]]) + GOLDEN[p[0] + 1 :]
        ),
        st.integers(0, len(GOLDEN)).map(lambda n: GOLDEN[:n]),
        _JSON.map(_encode),
        st.tuples(st.sampled_from(sorted(_doc())), _JSON).map(lambda p: _with_field(*p)),
        # The format with a next server pin: bytes flipped, and each field replaced.
        st.tuples(st.integers(0, len(GOLDEN_V2) - 1), st.integers(1, 255)).map(
            lambda p: GOLDEN_V2[: p[0]] + bytes([GOLDEN_V2[p[0]] ^ p[1]]) + GOLDEN_V2[p[0] + 1 :]
        ),
        st.tuples(st.sampled_from(sorted(_doc_v2())), _JSON).map(lambda p: _with_field_v2(*p)),
    )
)
def test_fuzz_bundle_parser_raises_only_bad_bundle(data: bytes) -> None:
    try:
        bundle = DeviceBundle.from_json(data)
    except BadBundle:
        return
    # Whatever got through is a complete, self-consistent bundle.
    assert DeviceBundle.from_json(bundle.to_json()) == bundle
