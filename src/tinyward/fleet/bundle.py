"""The device bundle: the fleet's JSON answer to an enrolment request. Pure.

Format (``docs/architecture.md``)::

    {"format": "tinyward-device-bundle/1", "device_id": "<64 hex>", "fleet_id": "<32 hex>",
     "certificates": {"tls": "PEM", "report": "PEM", "attestation": "PEM"},
     "device_ca": "PEM", "root_ca": "PEM", "server_spki_sha256": "<64 hex>"}

Format ``tinyward-device-bundle/2`` is the same plus ``"server_next_spki_sha256": "<64
hex>"``: the pin of the fleet's *next* server key (pin roll-over, ``docs/fleet-pki.md``),
which a device accepts as well as the current one. The next pin is optional in the model
(:attr:`DeviceBundle.server_next_spki_sha256` may be None); the format says whether it is
there: a bundle without one is written as ``/1``, so older devices still read it, and each
format has exactly its own keys (a ``/1`` bundle with a next pin is refused, not half-read).

Format ``tinyward-device-bundle/3`` adds the device's signed-update trust: every key of
``/2``, with ``server_next_spki_sha256`` allowed to be null, plus ``"update_root"`` (the
fleet update repository's trusted root, the exact bytes of its newest ``N.root.json``,
base64) and ``"product_class"`` (the product the fleet enrolled the device as), each a
string or null. A bundle with neither is written as ``/1`` or ``/2`` as before. The root
must parse as TUF root metadata signed by its own root threshold (python-tuf checks it).

A device installs the bundle it is handed, so :meth:`DeviceBundle.from_json` treats it
as hostile: size, UTF-8, JSON without duplicate keys or non-finite numbers, exactly
these keys and types, hex of the right length, and each PEM string exactly one
certificate. It then checks that the pieces belong together — the fleet ID is the root
CA's, the device CA is signed by the root, each device certificate is signed by the
device CA for its purpose and names the device, and the device ID is the one derived
from the attestation certificate's key. It does not check validity dates (no clock
here) nor that the keys are the device's own (the keystore does that on install).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from tinyward.errors import Misuse
from tinyward.fleet._pem import PemError, split_pem
from tinyward.fleet.errors import BadBundle, BadCertificate
from tinyward.fleet.profiles import (
    PURPOSE_EKU,
    PURPOSES,
    device_id_of_certificate,
    fleet_id_of,
)
from tinyward.trust.identity import device_id as derive_device_id
from tinyward.trust.identity import is_device_id
from tinyward.update.meta import is_product_class

BUNDLE_FORMAT = "tinyward-device-bundle/1"
#: /1 plus the next server pin (pin roll-over).
BUNDLE_FORMAT_NEXT_PIN = "tinyward-device-bundle/2"
_NEXT_PIN = "server_next_spki_sha256"
#: /2 plus the update repository's root and the device's product class.
BUNDLE_FORMAT_UPDATES = "tinyward-device-bundle/3"
_UPDATE_ROOT, _PRODUCT_CLASS = "update_root", "product_class"
_KEYS = (
    "format",
    "device_id",
    "fleet_id",
    "certificates",
    "device_ca",
    "root_ca",
    "server_spki_sha256",
)
_FLEET_ID = re.compile(r"[0-9a-f]{32}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BundleLimits:
    """Bounds on a bundle (a real one is about 4 KB)."""

    max_bundle_bytes: int = 96 * 1024
    max_pem_chars: int = 8 * 1024
    #: A TUF root with nine keys per role is about 8 KB.
    max_update_root_bytes: int = 48 * 1024


DEFAULT_BUNDLE_LIMITS = BundleLimits()


def _certificate(pem: str, what: str, limits: BundleLimits) -> x509.Certificate:
    if not isinstance(pem, str):
        raise BadBundle(f"{what} must be a PEM string")
    if len(pem) > limits.max_pem_chars:
        raise BadBundle(f"{what} is longer than {limits.max_pem_chars} characters")
    try:
        blocks = split_pem(pem.encode("utf-8"), max_blocks=1)
    except PemError as error:
        raise BadBundle(f"{what} is not one PEM certificate: {error}") from None
    label, block = blocks[0]
    if label != "CERTIFICATE":
        raise BadBundle(f"{what} is a {label!r} PEM block, not a 'CERTIFICATE'")
    try:
        cert = x509.load_pem_x509_certificate(block)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
        raise BadBundle(f"{what} does not parse as an X.509 certificate") from None
    try:
        # cryptography reads the key lazily: a key it cannot load (e.g. an unknown curve
        # OID) would otherwise escape later, from the fleet-ID or chain check, as
        # UnsupportedAlgorithm instead of BadBundle (found by tests/fuzz/fuzz_bundle.py).
        cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise BadBundle(f"{what} holds a public key that cannot be read") from None
    return cert


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise BadBundle(f"{what} is not signed by the CA that comes with it") from None


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadBundle(f"the key {key[:40]!r} appears twice")
        result[key] = value
    return result


def _refuse_constant(name: str) -> None:
    raise BadBundle(f"{name} is not allowed in a bundle")


def _update_root(text: object, limits: BundleLimits) -> bytes:
    """The bundle's TUF root: base64 of a root metadata file signed by its own threshold."""
    if not isinstance(text, str) or len(text) > limits.max_update_root_bytes * 4 // 3 + 4:
        raise BadBundle(f"{_UPDATE_ROOT} must be base64 of at most "
                        f"{limits.max_update_root_bytes} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadBundle(f"{_UPDATE_ROOT} is not base64") from None
    from tuf.api.exceptions import UnsignedMetadataError
    from tuf.api.metadata import Metadata, Root
    from tuf.api.serialization import DeserializationError

    try:
        root: Metadata[Root] = Metadata.from_bytes(data)
        if not isinstance(root.signed, Root):
            raise BadBundle(f"{_UPDATE_ROOT} is {root.signed.type} metadata, not root")
        root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
    except (DeserializationError, ValueError):
        raise BadBundle(f"{_UPDATE_ROOT} is not TUF root metadata") from None
    except UnsignedMetadataError as error:
        raise BadBundle(f"{_UPDATE_ROOT} is not signed by its own threshold ({error})") from None
    return data


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class DeviceBundle:
    """What a device needs from its fleet: its certificates, the fleet CAs and the pin."""

    device_id: str
    fleet_id: str
    certificates: dict[str, str]  # purpose -> PEM
    device_ca_pem: str
    root_ca_pem: str
    server_spki_sha256: bytes
    #: The fleet's next server key's pin (accepted too), or None (a ``/1`` bundle).
    server_next_spki_sha256: bytes | None = None
    #: The update repository's trusted root (``N.root.json`` bytes), or None (no repository
    #: when the device was enrolled, or a ``/1``/``/2`` bundle).
    update_root: bytes | None = None
    #: The device's product class, as the fleet enrolled it, or None.
    product_class: str | None = None

    @property
    def server_pins(self) -> tuple[bytes, ...]:
        """The server pins a device accepts: the current one, then the next one if any."""
        if self.server_next_spki_sha256 is None:
            return (self.server_spki_sha256,)
        return (self.server_spki_sha256, self.server_next_spki_sha256)

    def certificate(self, purpose: str) -> x509.Certificate:
        """The device certificate for ``purpose``.

        Raises:
            Misuse: unknown purpose.
        """
        if purpose not in self.certificates:
            raise Misuse(f"unknown purpose {purpose!r}; expected one of {', '.join(PURPOSES)}")
        return x509.load_pem_x509_certificate(self.certificates[purpose].encode("ascii"))

    @property
    def device_ca(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.device_ca_pem.encode("ascii"))

    @property
    def root_ca(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.root_ca_pem.encode("ascii"))

    def to_json(self) -> bytes:
        """The bundle as UTF-8 JSON, keys in the documented order."""
        updates = self.update_root is not None or self.product_class is not None
        document: dict[str, Any] = {
            "format": BUNDLE_FORMAT_UPDATES if updates
            else BUNDLE_FORMAT if self.server_next_spki_sha256 is None
            else BUNDLE_FORMAT_NEXT_PIN,
            "device_id": self.device_id,
            "fleet_id": self.fleet_id,
            "certificates": {purpose: self.certificates[purpose] for purpose in PURPOSES},
            "device_ca": self.device_ca_pem,
            "root_ca": self.root_ca_pem,
            "server_spki_sha256": self.server_spki_sha256.hex(),
        }
        if self.server_next_spki_sha256 is not None or updates:
            document[_NEXT_PIN] = (None if self.server_next_spki_sha256 is None
                                   else self.server_next_spki_sha256.hex())
        if updates:
            document[_UPDATE_ROOT] = (None if self.update_root is None
                                      else base64.b64encode(self.update_root).decode("ascii"))
            document[_PRODUCT_CLASS] = self.product_class
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, limits: BundleLimits = DEFAULT_BUNDLE_LIMITS) -> DeviceBundle:
        """Parse and check a bundle taken from outside.

        Raises:
            Misuse: ``data`` is not bytes.
            BadBundle: anything wrong with it; the message names the field and the defect.
        """
        if not isinstance(data, bytes | bytearray):
            raise Misuse("a bundle is bytes (the content of a .bundle.json file)")
        if len(data) > limits.max_bundle_bytes:
            raise BadBundle(f"the bundle is larger than {limits.max_bundle_bytes} bytes")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise BadBundle("the bundle is not UTF-8 text") from None
        try:
            document = json.loads(
                text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
            )
        except (ValueError, RecursionError) as error:
            # ValueError covers JSONDecodeError and over-long integers; RecursionError
            # deeply nested arrays.
            if isinstance(error, json.JSONDecodeError):
                message = f"{error.msg} at character {error.pos}"
            elif isinstance(error, RecursionError):
                message = "nested too deeply"
            else:
                message = str(error)[:100]
            raise BadBundle(f"the bundle is not valid JSON ({message})") from None
        if not isinstance(document, dict):
            raise BadBundle("the bundle must be a JSON object")
        form = document.get("format")
        if form not in (BUNDLE_FORMAT, BUNDLE_FORMAT_NEXT_PIN, BUNDLE_FORMAT_UPDATES):
            raise BadBundle(
                f"not a device bundle (the format must be {BUNDLE_FORMAT!r}, "
                f"{BUNDLE_FORMAT_NEXT_PIN!r} or {BUNDLE_FORMAT_UPDATES!r})"
            )
        keys = (_KEYS if form == BUNDLE_FORMAT else (*_KEYS, _NEXT_PIN)
                if form == BUNDLE_FORMAT_NEXT_PIN else (*_KEYS, _NEXT_PIN, _UPDATE_ROOT,
                                                        _PRODUCT_CLASS))
        unknown = sorted(set(document) - set(keys))
        missing = [key for key in keys if key not in document]
        if unknown or missing:
            raise BadBundle(
                "the bundle "
                + "; ".join(
                    part
                    for part in (
                        f"lacks {', '.join(missing)}" if missing else "",
                        f"has unknown keys {', '.join(k[:40] for k in unknown)}" if unknown else "",
                    )
                    if part
                )
            )
        device_id = document["device_id"]
        fleet_id = document["fleet_id"]
        pin = document["server_spki_sha256"]
        certificates = document["certificates"]
        if not is_device_id(device_id):
            raise BadBundle("device_id must be 64 lowercase hex characters")
        if not isinstance(fleet_id, str) or _FLEET_ID.fullmatch(fleet_id) is None:
            raise BadBundle("fleet_id must be 32 lowercase hex characters")
        if not isinstance(pin, str) or _SHA256_HEX.fullmatch(pin) is None:
            raise BadBundle("server_spki_sha256 must be 64 lowercase hex characters")
        next_pin = document.get(_NEXT_PIN)
        update_root = product_class = None
        if form == BUNDLE_FORMAT_UPDATES:
            product_class = document[_PRODUCT_CLASS]
            if product_class is not None and not is_product_class(product_class):
                raise BadBundle(f"{_PRODUCT_CLASS} must be a name (letters, digits, _.-) or null")
            if document[_UPDATE_ROOT] is not None:
                update_root = _update_root(document[_UPDATE_ROOT], limits)
        if next_pin is not None or form == BUNDLE_FORMAT_NEXT_PIN:
            if not isinstance(next_pin, str) or _SHA256_HEX.fullmatch(next_pin) is None:
                raise BadBundle(f"{_NEXT_PIN} must be 64 lowercase hex characters")
            if next_pin == pin:
                raise BadBundle(f"{_NEXT_PIN} repeats the current pin (a rotation left "
                                "unfinished? run `tinyward fleet rotate-server-key` again)")
        if not isinstance(certificates, dict) or sorted(certificates) != sorted(PURPOSES):
            raise BadBundle(f"certificates must map exactly {', '.join(PURPOSES)} to PEM")

        root_ca = _certificate(document["root_ca"], "root_ca", limits)
        device_ca = _certificate(document["device_ca"], "device_ca", limits)
        leaves = {
            purpose: _certificate(certificates[purpose], f"the {purpose} certificate", limits)
            for purpose in PURPOSES
        }
        if fleet_id_of(root_ca) != fleet_id:
            raise BadBundle("fleet_id is not the ID of the root CA in the bundle")
        _issued_by(root_ca, root_ca, "root_ca")
        _issued_by(device_ca, root_ca, "device_ca")
        for purpose, cert in leaves.items():
            what = f"the {purpose} certificate"
            _issued_by(cert, device_ca, what)
            try:
                named = device_id_of_certificate(cert)
                eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except (BadCertificate, x509.ExtensionNotFound, ValueError):
                raise BadBundle(f"{what} is not a tinyward device certificate") from None
            if named != device_id:
                raise BadBundle(f"{what} names another device")
            if list(eku) != [PURPOSE_EKU[purpose]]:
                raise BadBundle(f"{what} is not issued for the {purpose} purpose")
        try:
            derived = derive_device_id(leaves["attestation"].public_key())  # type: ignore[arg-type]
        except Misuse:
            raise BadBundle("the attestation certificate's key is not ECDSA P-256") from None
        if derived != device_id:
            raise BadBundle("device_id is not the one derived from the attestation key")
        return cls(
            device_id=device_id,
            fleet_id=fleet_id,
            certificates={purpose: _cert_pem(cert) for purpose, cert in leaves.items()},
            device_ca_pem=_cert_pem(device_ca),
            root_ca_pem=_cert_pem(root_ca),
            server_spki_sha256=bytes.fromhex(pin),
            server_next_spki_sha256=None if next_pin is None else bytes.fromhex(next_pin),
            update_root=update_root,
            product_class=product_class,
        )
