"""A device folder: the trusted core's state on disk, and provisioning.

Layout of ``DIR`` (the stand-in for a device's flash)::

    device.json          public summary: device ID, lifecycle state, fleet ID
    rot/root.key         the root key (mode 0600; software stand-in for hardware)
    rot/counters         monotonic version counters (HMAC-protected)
    storage/*.rec        protected storage: sealed keys, fleet trust anchors, state
    keys/tls.key.pem     the TLS client key as *encrypted* PKCS#8, for Python's ssl
    enroll.csr.pem       the enrolment request (three CSRs; public)
    certs/*.pem          certificates and CA certificates (public copies)

Provisioning runs in three steps so that a factory line can split them: :meth:`Device.init`
makes the keys on the device and writes the enrolment request; the fleet answers with a
bundle (``tinyward fleet enroll``); :meth:`Device.install` checks the bundle against the
device's own keys and stores the fleet's trust anchors and the server pins (current and
next) in protected storage. No secret ever leaves the device, and provisioning a folder
twice is refused; :meth:`Device.refresh` takes a later bundle of the same fleet, for the
same device and certificates, only to learn new server pins (pin roll-over).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tinyward._fsutil import atomic_write, make_private_dir
from tinyward.errors import BadInput, Misuse, StateError
from tinyward.trust.errors import TrustError
from tinyward.trust.identity import device_id as derive_device_id
from tinyward.trust.identity import instance_id as derive_instance_id
from tinyward.trust.keystore import KeyHandle, Keystore, KeystoreSigner, KeyUsage
from tinyward.trust.rot import FileRootOfTrust, RootOfTrust
from tinyward.trust.storage import ProtectedStorage

FORMAT = "tinyward-device/1"
KEY_PURPOSES: dict[str, KeyUsage] = {
    "tls": KeyUsage.TLS_CLIENT,
    "report": KeyUsage.SIGN_REPORT,
    "attestation": KeyUsage.SIGN_ATTESTATION,
}
_TRUST_RECORD = "fleet-trust"
_MODE_RECORD = "device.mode"
#: The signed-update trust from the bundle: the update repository's root and the
#: device's product class (CBOR map; absent for bundles without them).
_UPDATE_RECORD = "update-trust"
_MAX_UPDATE_ROOT = 48 * 1024
MODES = ("connected", "air-gapped")
#: PSA Implementation ID: names the implementation of the root of trust (here, tinyward's
#: software stand-in), not the device; the same for every device of this implementation.
IMPLEMENTATION_ID = hashlib.sha256(b"tinyward software root of trust / FileRootOfTrust").digest()
#: The caller of the attestation service: the trusted core itself, a secure partition (> 0).
CLIENT_ID = 1
#: A fresh random value per boot (per process here), as the PSA boot seed claim requires.
_BOOT_SEED = os.urandom(32)


class DeviceExists(TrustError, StateError):
    """The folder already holds a device; its keys are never replaced."""


class NotADevice(TrustError, BadInput):
    """The folder is not a tinyward device (or its summary file is damaged)."""


class AlreadyProvisioned(TrustError, StateError):
    """The device already has a fleet; provisioning twice is refused."""


class NotProvisioned(TrustError, StateError):
    """The operation needs a provisioned device (run `tinyward device provision`)."""


class ModeRefused(TrustError, StateError):
    """The device is provisioned for air-gapped use and was asked to connect."""


class BundleMismatch(TrustError, BadInput):
    """The certificate bundle does not belong to this device's keys."""


@dataclass(frozen=True)
class FleetTrust:
    """What a provisioned device trusts, read from protected storage."""

    fleet_id: str
    root_ca_pem: bytes
    device_ca_pem: bytes
    server_spki_sha256: bytes
    #: The fleet's next server key (pin roll-over); None for a one-pin bundle.
    server_next_spki_sha256: bytes | None = None

    @property
    def pins(self) -> tuple[bytes, ...]:
        """Every server pin the device accepts: the current one, then the next one."""
        if self.server_next_spki_sha256 is None:
            return (self.server_spki_sha256,)
        return (self.server_spki_sha256, self.server_next_spki_sha256)


class Device:
    """The trusted core's view of one device folder."""

    def __init__(self, directory: Path, root: RootOfTrust) -> None:
        self.directory = Path(directory)
        self.root = root
        self.storage = ProtectedStorage(self.directory / "storage", root)
        self.keystore = Keystore(self.storage, root, self.directory / "keys")
        self._summary = self._read_summary()

    # ---- creating and opening -------------------------------------------------------

    @classmethod
    def init(cls, directory: Path, *, now: float | None = None) -> Device:
        """Make a new device: root key, the three device keys, and the enrolment request.

        ``now`` (Unix seconds, default the wall clock) is recorded as the keys' creation time.

        Raises :class:`DeviceExists` if ``directory`` already holds a device.
        """
        directory = Path(directory)
        if (directory / "device.json").exists() or (directory / "rot" / "root.key").exists():
            raise DeviceExists(f"{directory} already holds a device; refusing to replace its keys")
        for sub in ("", "rot", "keys", "certs"):
            make_private_dir(directory / sub)
        root = FileRootOfTrust.create(
            directory / "rot" / "root.key", directory / "rot" / "counters"
        )
        storage = ProtectedStorage(directory / "storage", root)
        keystore = Keystore(storage, root, directory / "keys")
        made_at = time.time() if now is None else now
        handles = {purpose: keystore.generate(purpose, usage, now=made_at)
                   for purpose, usage in KEY_PURPOSES.items()}
        dev_id = derive_device_id(keystore.public_key(handles["attestation"]))
        request = b"".join(
            keystore.certificate_request(handles[purpose], _subject(dev_id, purpose)).public_bytes(
                serialization.Encoding.PEM
            )
            for purpose in ("tls", "report", "attestation")
        )
        atomic_write(directory / "enroll.csr.pem", request, mode=0o644)
        summary = {"format": FORMAT, "device_id": dev_id, "state": "initialised", "fleet_id": None,
                   "root_of_trust": root.description}
        atomic_write(directory / "device.json", json.dumps(summary, indent=2).encode(), mode=0o644)
        return cls(directory, root)

    @classmethod
    def open(cls, directory: Path) -> Device:
        """Open an existing device folder. Raises :class:`NotADevice`."""
        directory = Path(directory)
        if not (directory / "device.json").is_file():
            raise NotADevice(f"{directory} is not a tinyward device (no device.json); "
                             "create one with `tinyward device init`")
        root = FileRootOfTrust(directory / "rot" / "root.key", directory / "rot" / "counters")
        return cls(directory, root)

    def _read_summary(self) -> dict[str, Any]:
        try:
            summary = json.loads((self.directory / "device.json").read_text())
        except (OSError, ValueError) as error:
            raise NotADevice(f"{self.directory}/device.json is unreadable: {error}") from None
        if not isinstance(summary, dict) or summary.get("format") != FORMAT:
            raise NotADevice(f"{self.directory}/device.json is not a {FORMAT} summary")
        return summary

    # ---- identity ---------------------------------------------------------------------

    def handle(self, purpose: str) -> KeyHandle:
        """The handle of one of the device keys (``tls``, ``report``, ``attestation``)."""
        if purpose not in KEY_PURPOSES:
            raise Misuse(f"unknown key purpose {purpose!r}; expected one of {sorted(KEY_PURPOSES)}")
        return self.keystore.handle(purpose)

    def signer(self, purpose: str) -> KeystoreSigner:
        """A Signer for ``report`` or ``attestation``, bound to that key's usage."""
        return self.keystore.signer(self.handle(purpose), KEY_PURPOSES[purpose])

    @property
    def device_id(self) -> str:
        return derive_device_id(self.keystore.public_key(self.handle("attestation")))

    @property
    def instance_id(self) -> bytes:
        return derive_instance_id(self.keystore.public_key(self.handle("attestation")))

    @property
    def enrolment_request(self) -> bytes:
        return (self.directory / "enroll.csr.pem").read_bytes()

    @property
    def provisioned(self) -> bool:
        return self.storage.exists(_TRUST_RECORD)

    def certificate_path(self, name: str) -> Path:
        """Path of a public certificate: ``tls``, ``report``, ``attestation``, ``device-ca``,
        ``root-ca``."""
        return self.directory / "certs" / f"{name}.crt.pem"

    # ---- provisioning ------------------------------------------------------------------

    def install(self, bundle: Any) -> None:
        """Store the fleet's answer (a :class:`tinyward.fleet.pki.DeviceBundle`).

        Checks that every certificate carries the public key of the matching device key and
        is issued by the bundle's device CA, which is issued by its root CA. Raises
        :class:`BundleMismatch`, or :class:`AlreadyProvisioned` on a second install
        (:meth:`refresh` takes a later bundle of the same fleet).
        """
        with self.storage.transaction():  # two installs at once: the second sees the first
            self._install(bundle)

    def _install(self, bundle: Any) -> None:
        if self.provisioned:
            raise AlreadyProvisioned(
                f"device {self.device_id[:16]}… is already provisioned for fleet "
                f"{self.fleet_trust().fleet_id}; make a new device instead (or, to take "
                "new server pins from the same fleet, refresh: device install --refresh)"
            )
        root_ca, device_ca, certs, pins = self._checked(bundle)
        self._store_update_trust(bundle)
        for name, cert in [*certs.items(), ("device-ca", device_ca), ("root-ca", root_ca)]:
            atomic_write(
                self.certificate_path(name), cert.public_bytes(serialization.Encoding.PEM), 0o644
            )
        self._store_trust(bundle, pins)
        self._summary.update(state="provisioned", fleet_id=bundle.fleet_id)
        atomic_write(
            self.directory / "device.json", json.dumps(self._summary, indent=2).encode(), 0o644
        )

    def refresh(self, bundle: Any, *, new_pins: bool = False) -> FleetTrust:
        """Take new server pins from a later bundle of the same fleet (pin roll-over).

        Only the pins (and the device CA certificate) change. Refused, with
        :class:`BundleMismatch`, unless the bundle is for this device, chains to the root
        CA the device already trusts, and carries exactly the certificates installed; and,
        unless ``new_pins``, its pins must be the device's own or one rotation on
        (:func:`pin_step_refused`): a refresh rolls the pins forward, never swaps them all,
        replays an older bundle or drops the next pin (after ``fleet rotate-server-key
        --discard-next``, or for a device two rotations behind, ``new_pins`` re-pins it).

        Raises:
            NotProvisioned: nothing to refresh (use :meth:`install`).
            BundleMismatch: as above; nothing is changed.
        """
        trust = self.fleet_trust()
        if bundle.device_id != self.device_id:
            raise BundleMismatch(
                f"the bundle is for device {bundle.device_id[:16]}…, this is "
                f"{self.device_id[:16]}…; a refresh takes only this device's own bundle"
            )
        if (bundle.fleet_id != trust.fleet_id
                or _der(_b(bundle.root_ca_pem)) != _der(trust.root_ca_pem)):
            raise BundleMismatch(
                f"the bundle is from another fleet root (fleet {bundle.fleet_id}); this device "
                f"trusts fleet {trust.fleet_id} and a refresh never changes its fleet"
            )
        _root_ca, device_ca, certs, pins = self._checked(bundle)
        for name, cert in certs.items():
            try:
                installed = self.certificate_path(name).read_bytes()
            except OSError:
                raise BundleMismatch(f"this device's {name} certificate is missing "
                                     f"({self.certificate_path(name)})") from None
            if cert.public_bytes(serialization.Encoding.DER) != _der(installed):
                raise BundleMismatch(
                    f"the bundle's {name} certificate is not the one installed; a refresh "
                    "changes only the server pins (new certificates need a new device)"
                )
        refused = None if new_pins else pin_step_refused(trust.pins, pins)
        if refused is not None:
            raise BundleMismatch(refused)
        self._store_update_trust(bundle)  # may refuse: before anything else is written
        atomic_write(self.certificate_path("device-ca"),
                     device_ca.public_bytes(serialization.Encoding.PEM), 0o644)
        self._store_trust(bundle, pins)
        return self.fleet_trust()

    def _checked(self, bundle: Any) -> tuple[
            x509.Certificate, x509.Certificate, dict[str, x509.Certificate], tuple[bytes, ...]]:
        if bundle.device_id != self.device_id:
            raise BundleMismatch(
                f"the bundle is for device {bundle.device_id[:16]}…, this is {self.device_id[:16]}…"
            )
        try:
            root_ca = x509.load_pem_x509_certificate(_b(bundle.root_ca_pem))
            device_ca = x509.load_pem_x509_certificate(_b(bundle.device_ca_pem))
            certs = {
                p: x509.load_pem_x509_certificate(_b(bundle.certificates[p])) for p in KEY_PURPOSES
            }
        except (KeyError, ValueError) as error:
            raise BundleMismatch(f"the bundle's certificates do not parse: {error}") from None
        try:
            device_ca.verify_directly_issued_by(root_ca)
        except (ValueError, TypeError, InvalidSignature) as error:
            raise BundleMismatch(
                f"the bundle's device CA is not issued by its root CA: {error}"
            ) from None
        for purpose, cert in certs.items():
            own = self.keystore.public_key(self.handle(purpose))
            if cert.public_key() != own:
                raise BundleMismatch(
                    f"the {purpose} certificate is for another key, not this device's"
                )
            try:
                cert.verify_directly_issued_by(device_ca)
            except (ValueError, TypeError, InvalidSignature) as error:
                raise BundleMismatch(
                    f"the {purpose} certificate is not issued by the bundle's device CA: {error}"
                ) from None
        pins = tuple(bytes(p) for p in getattr(bundle, "server_pins", (bundle.server_spki_sha256,)))
        if not pins or any(len(pin) != 32 for pin in pins) or len(set(pins)) != len(pins):
            raise BundleMismatch("the server pins must be distinct 32-byte SHA-256 digests")
        return root_ca, device_ca, certs, pins

    def _store_trust(self, bundle: Any, pins: tuple[bytes, ...]) -> None:
        trust: dict[str, Any] = {
            "fleet_id": bundle.fleet_id, "root_ca": _b(bundle.root_ca_pem),
            "device_ca": _b(bundle.device_ca_pem), "server_spki_sha256": pins[0]}
        if len(pins) > 1:
            trust["server_next_spki_sha256"] = pins[1]  # absent in records of one-pin bundles
        self.storage.write(_TRUST_RECORD, cbor2.dumps(trust))

    def _store_update_trust(self, bundle: Any) -> None:
        """Keep the bundle's update root and product class, the first time one comes.

        Written once: afterwards the device's TUF client moves its root forward through
        the root chain itself, so a later bundle (a refresh) can neither roll the root
        back nor change the product class."""
        root = getattr(bundle, "update_root", None)
        product = getattr(bundle, "product_class", None)
        if root is None and product is None:
            return
        if root is not None and (not isinstance(root, bytes | bytearray)
                                 or not 0 < len(root) <= _MAX_UPDATE_ROOT):
            raise BundleMismatch(f"the bundle's update root must be 1 to {_MAX_UPDATE_ROOT} bytes")
        if product is not None and not isinstance(product, str):
            raise BundleMismatch("the bundle's product class must be text")
        record = self._update_trust()
        if product is not None and record.get("product_class") not in (None, product):
            raise BundleMismatch(
                f"the bundle names product class {product!r}, this device is "
                f"{record['product_class']!r}; a refresh never changes it")
        changed = False
        if root is not None and record.get("root") is None:
            record["root"], changed = bytes(root), True
        if product is not None and record.get("product_class") is None:
            record["product_class"], changed = product, True
        if changed:
            self.storage.write(_UPDATE_RECORD, cbor2.dumps(record))

    def _update_trust(self) -> dict[str, Any]:
        if not self.storage.exists(_UPDATE_RECORD):
            return {}
        record = cbor2.loads(self.storage.read(_UPDATE_RECORD))
        return record if isinstance(record, dict) else {}

    def update_trusted_root(self) -> bytes | None:
        """The update repository root this device was provisioned with (the bytes of the
        fleet's ``N.root.json``: a TUF client's bootstrap), or None."""
        root = self._update_trust().get("root")
        return bytes(root) if isinstance(root, bytes) else None

    def product_class(self) -> str | None:
        """The product class the fleet enrolled this device as, or None."""
        product = self._update_trust().get("product_class")
        return product if isinstance(product, str) else None

    def fleet_trust(self) -> FleetTrust:
        """The fleet trust anchors and server pin, verified from protected storage."""
        if not self.provisioned:
            raise NotProvisioned(
                f"device {self.device_id[:16]}… has no fleet yet; provision it first"
            )
        record = cbor2.loads(self.storage.read(_TRUST_RECORD))
        return FleetTrust(record["fleet_id"], record["root_ca"], record["device_ca"],
                          record["server_spki_sha256"], record.get("server_next_spki_sha256"))

    # ---- operating mode ----------------------------------------------------------------
    # Two different things: the mode the device is *provisioned* for (a policy in protected
    # storage, changed only by re-provisioning: `tinyward device set-mode`), and the mode
    # actually *enforced* in a running process tree (trust.airgap.enforced_mode, found by
    # trying). Only the latter is ever claimed in status, tokens and reports.

    @property
    def provisioned_mode(self) -> str:
        """``"connected"`` (the default) or ``"air-gapped"``: what the device may do."""
        if not self.storage.exists(_MODE_RECORD):
            return "connected"
        mode = self.storage.read(_MODE_RECORD).decode("ascii", "replace")
        return mode if mode in MODES else "air-gapped"  # unknown: the stricter one

    def set_mode(self, mode: str) -> None:
        """Re-provision the device's mode (an air-gapped device refuses to connect)."""
        if mode not in MODES:
            raise Misuse(f"mode must be one of {MODES}, not {mode!r}")
        if mode != self.provisioned_mode:
            self.storage.write(_MODE_RECORD, mode.encode("ascii"))

    def check_may_connect(self) -> None:
        """Raise :class:`ModeRefused` unless the device is provisioned to connect."""
        if self.provisioned_mode != "connected":
            raise ModeRefused(
                f"device {self.device_id[:16]}… is provisioned for air-gapped use and does not "
                f"connect; re-provision it first: tinyward device set-mode {self.directory} "
                "connected")

    # ---- attestation -------------------------------------------------------------------

    def attestation_token(
        self,
        nonce: bytes,
        *,
        measured: Sequence[tuple[str, Sequence[Path]]] = (),
        protections: Sequence[str] | None = None,
        components: Sequence[Any] = (),
    ) -> bytes:
        """A PSA attestation token (RFC 9783) answering ``nonce``, signed by the attestation key.

        Software components: the tinyward code (the trusted core) and each
        ``(measurement_type, paths)`` in ``measured`` — e.g. ``("App", [app_dir])`` and
        ``("App_CONFIG", [model_file])``. The operating-mode claim is the mode enforced in
        *this* process right now (tried, never taken from provisioning); ``protections``
        names the protections in force in this process tree (the running device passes its
        application sandbox's active layers and its air gap's). ``components`` are software
        components measured elsewhere, e.g. the active update slots
        (``tinyward.update.agent.UpdateAgent.software_components``). Raises ``TokenMisuse``
        for a bad nonce size and ``MeasurementError`` for an unreadable path.
        """
        from tinyward.trust import attestation as psa
        from tinyward.trust.airgap import enforced_mode

        software = [psa.measure_tinyward_code()]
        software += [psa.measure_files(list(paths), kind, psa.UNSIGNED_SIGNER_ID)
                     for kind, paths in measured]
        software += list(components)
        lifecycle = (
            psa.LIFECYCLE_SECURED if self.provisioned else psa.LIFECYCLE_PSA_ROT_PROVISIONING
        )
        claims = psa.PsaClaims(
            nonce=nonce,
            instance_id=self.instance_id,
            implementation_id=IMPLEMENTATION_ID,
            security_lifecycle=lifecycle,
            boot_seed=_BOOT_SEED,
            client_id=CLIENT_ID,
            software_components=tuple(software),
            operating_mode=enforced_mode(),
            protections=tuple(sorted(set(protections))) if protections is not None else None,
        )
        return psa.encode_token(claims, self.signer("attestation"))

    def status(self) -> dict[str, Any]:
        """A public summary for people and logs (no secrets)."""
        from tinyward.trust.instance import running_instance

        running = running_instance(self.directory)
        return {
            "device_id": self.device_id,
            "state": "provisioned" if self.provisioned else "initialised",
            # what the running instance enforces (tried by it), not what was provisioned
            "mode": running.mode if running else "not running",
            "protections": list(running.protections) if running else [],
            "provisioned_mode": self.provisioned_mode,
            "fleet_id": self.fleet_trust().fleet_id if self.provisioned else None,
            "root_of_trust": self.root.description,
            "hardware_backed": self.root.hardware_backed,
            "keys": self.keystore.names(),
        }


def _subject(device_id: str, purpose: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tinyward device"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, purpose),
        x509.NameAttribute(NameOID.COMMON_NAME, device_id),
    ])


def pin_step_refused(held: tuple[bytes, ...], offered: tuple[bytes, ...]) -> str | None:
    """Why a refresh from the pins ``held`` (current, next) to ``offered`` is not a roll-over
    step, or None if it is. Pure.

    The fleet's server keys form a chain K0, K1, K2, …; a bundle made between rotations
    e and e+1 carries (K_e, K_e+1). A device may take the same pair (a lost bundle again),
    gain a next pin it lacked (a one-pin device, a fleet given its next key), or move one
    rotation on: (its next pin, a fresh one). Anything else is refused: an older bundle
    replayed (its current pin is one the fleet rotated out), a bundle two rotations
    ahead (no pin in common with what the server may hold next), a bundle without the
    next pin the device holds (it would lose roll-over), or another next pin for the same
    current one (the fleet names one next key per rotation).
    """
    current, upcoming = held[0], (held[1] if len(held) > 1 else None)
    new_current, new_upcoming = offered[0], (offered[1] if len(offered) > 1 else None)
    if upcoming is not None and new_upcoming is None:
        return ("the bundle has no next server pin but this device has one: installing it "
                "would drop the pin that lets the device follow the next rotation (a bundle "
                "from an older tinyward or fleet? write it again with `fleet bundle`)")
    if new_current == current:
        if upcoming is not None and new_upcoming != upcoming:
            return ("the bundle names another next server key for the same current key "
                    "than the one this device holds; refused (a fleet names one next key "
                    "per rotation)")
        return None
    if upcoming is not None and new_current == upcoming:
        return None  # one rotation on: the promoted key, and a fresh next one
    held_text = ", ".join(pin.hex()[:16] + "…" for pin in held)
    return (f"the bundle's server pin {new_current.hex()[:16]}… is neither this device's "
            f"current nor its next pin ({held_text}): an older bundle replayed, or the fleet "
            "rotated more than once since this device was last refreshed. A refresh rolls "
            "the pins one rotation forward at most; to re-pin on purpose (after "
            "`fleet rotate-server-key --discard-next`), refresh with --new-pins")


def _der(pem: bytes) -> bytes:
    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    except ValueError:
        raise BundleMismatch("a certificate (installed or in the bundle) does not parse") from None


def _b(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


__all__ = ["KEY_PURPOSES", "Device", "FleetTrust", "pin_step_refused"]
