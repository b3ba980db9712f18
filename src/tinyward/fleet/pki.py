"""The fleet's certificate authority and device enrolment, on disk.

A fleet is a folder (all files 0600, folders 0700)::

    fleet.json                      format tag, fleet ID, server names, creation time
    ca/root-ca.cert.pem             root CA (~20 years), key kept encrypted beside it
    ca/root-ca.key.pem
    ca/device-ca.cert.pem           device-issuing CA (~10 years, pathlen 0)
    ca/device-ca.key.pem
    ca/server.cert.pem              fleet server TLS certificate (2 years, serverAuth)
    ca/server.key.pem
    ca/update-signing.key.pem       update-signing key: no certificate, never used by the CA
    ca/update-signing.pub.pem
    devices/<device ID>/{tls,report,attestation}.cert.pem, status.json

Private keys are PKCS#8 PEM encrypted under the fleet passphrase
(``BestAvailableEncryption``: PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC); Python's ``ssl``
loads the server key with ``load_cert_chain(cert, key, password=passphrase)``. Public
material is readable without the passphrase (:meth:`Fleet.open`).

Every file is written atomically; a new fleet and a new device are each built in a
temporary folder and renamed into place, so a crash leaves either nothing or the whole
thing. Certificate shapes are in ``fleet/profiles.py``; request and bundle parsing in
``fleet/enrolment.py`` and ``fleet/bundle.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward._fsutil import PRIVATE_DIR_MODE, atomic_write, fsync_directory
from tinyward.errors import Misuse
from tinyward.fleet.bundle import DeviceBundle
from tinyward.fleet.enrolment import (
    DEFAULT_ENROLMENT_LIMITS,
    EnrolmentLimits,
    parse_enrolment_request,
)
from tinyward.fleet.errors import (
    AlreadyEnrolled,
    BadFleet,
    FleetExists,
    RevokedDevice,
    UnknownDevice,
    UntrustedCertificate,
    WrongPassphrase,
)
from tinyward.fleet.profiles import (
    PURPOSE_EKU,
    PURPOSES,
    check_device_certificate,
    fleet_id_of,
    make_device_ca,
    make_device_certificate,
    make_root_ca,
    make_server_certificate,
    server_name_entry,
    spki_sha256,
)
from tinyward.trust.identity import device_id as device_id_from_attestation_key
from tinyward.trust.identity import is_device_id

__all__ = [
    "DeviceBundle",
    "EnrolledDevice",
    "Fleet",
    "device_id_from_attestation_key",
    "parse_enrolment_request",
]

FLEET_FORMAT = "tinyward-fleet/1"
STATUS_FORMAT = "tinyward-device-status/1"
FLEET_FILE = "fleet.json"
STATUS_FILE = "status.json"
_ROOT, _DEVICE_CA, _SERVER, _UPDATE = "root-ca", "device-ca", "server", "update-signing"


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise Misuse("`now` must be a timezone-aware datetime (e.g. datetime.now(timezone.utc))")
    return now


def _check_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes) or not passphrase:
        raise Misuse("the fleet passphrase must be non-empty bytes")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _encrypted(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


@dataclass(frozen=True)
class EnrolledDevice:
    """A device enrolled in a fleet: its certificates and whether it has been revoked."""

    device_id: str
    certificates: dict[str, x509.Certificate]
    revoked: bool
    enrolled_at: datetime
    revoked_at: datetime | None = None

    def public_key(self, purpose: str) -> ec.EllipticCurvePublicKey:
        """The device's public key for ``purpose`` (``tls``, ``report`` or ``attestation``).

        Raises:
            Misuse: unknown purpose.
        """
        if purpose not in self.certificates:
            raise Misuse(f"unknown purpose {purpose!r}; expected one of {', '.join(PURPOSES)}")
        key = self.certificates[purpose].public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):  # enforced at enrolment
            raise BadFleet(f"the {purpose} certificate of {self.device_id} has no ECDSA key")
        return key


class Fleet:
    """A fleet's PKI in a folder. Create one with :meth:`init`, use one with :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        fleet_id: str,
        server_names: tuple[str, ...],
        created: datetime,
        root_ca: x509.Certificate,
        device_ca: x509.Certificate,
        server_certificate: x509.Certificate,
        update_signing_public_key: ec.EllipticCurvePublicKey,
    ) -> None:
        # Use Fleet.open / Fleet.init; this only holds what they checked.
        self.directory = directory
        self.fleet_id = fleet_id
        self.server_names = server_names
        self.created = created
        self.root_ca = root_ca
        self.device_ca = device_ca
        self.server_certificate = server_certificate
        self.server_spki_sha256 = spki_sha256(server_certificate)
        self.update_signing_public_key = update_signing_public_key

    # -- paths ------------------------------------------------------------------------

    def _ca(self, name: str) -> Path:
        return self.directory / "ca" / name

    @property
    def root_ca_path(self) -> Path:
        return self._ca(f"{_ROOT}.cert.pem")

    @property
    def device_ca_path(self) -> Path:
        return self._ca(f"{_DEVICE_CA}.cert.pem")

    @property
    def server_certificate_path(self) -> Path:
        return self._ca(f"{_SERVER}.cert.pem")

    @property
    def server_key_path(self) -> Path:
        """The server's private key, encrypted PKCS#8 PEM (password: the fleet passphrase)."""
        return self._ca(f"{_SERVER}.key.pem")

    @property
    def devices_path(self) -> Path:
        return self.directory / "devices"

    # -- creating and opening ------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        passphrase: bytes,
        server_names: Sequence[str] = ("localhost", "127.0.0.1"),
        now: datetime | None = None,
    ) -> Fleet:
        """Create a new fleet in ``directory`` (which must not exist, or be empty).

        Makes four ECDSA P-256 keys — root CA, device CA, fleet server, update signing —
        and the certificates of the first three; all private keys are encrypted under
        ``passphrase``.

        Raises:
            FleetExists: ``directory`` holds a fleet or any other file.
            Misuse: empty passphrase, no or invalid server names, naive ``now``.
            OSError: the folder cannot be created or written.
        """
        _check_passphrase(passphrase)
        now = _utc_now(now)
        if isinstance(server_names, str):
            raise Misuse("server_names is a list of names, not one string")
        names = tuple(server_names)
        if not names:
            raise Misuse("give the fleet server at least one name")
        for name in names:
            server_name_entry(name)  # validates, raises Misuse
        directory = Path(directory)
        cls._refuse_existing(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)

        # Build the whole fleet in a private temporary folder, then rename it into place:
        # a crash leaves no half-made fleet, and rename refuses a non-empty target.
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            fleet_id = cls._populate(staging, passphrase, names, now)
            try:
                os.rename(staging, directory)
            except OSError:
                cls._refuse_existing(directory)
                raise
            fsync_directory(directory.parent)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fleet = cls.open(directory)
        if fleet.fleet_id != fleet_id:
            raise BadFleet(f"{directory} changed while the fleet was being created")
        return fleet

    @staticmethod
    def _refuse_existing(directory: Path) -> None:
        if (directory / FLEET_FILE).exists():
            raise FleetExists(f"{directory} already holds a fleet; it is never overwritten")
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise FleetExists(
                f"{directory} exists and is not an empty folder; choose a new folder for the fleet"
            )

    @staticmethod
    def _populate(staging: Path, passphrase: bytes, names: tuple[str, ...], now: datetime) -> str:
        os.chmod(staging, PRIVATE_DIR_MODE)
        ca = staging / "ca"
        ca.mkdir(mode=PRIVATE_DIR_MODE)
        (staging / "devices").mkdir(mode=PRIVATE_DIR_MODE)

        root_key, device_ca_key, server_key, update_key = (_new_key() for _ in range(4))
        root_ca = make_root_ca(root_key, now)
        device_ca = make_device_ca(device_ca_key.public_key(), root_ca, root_key, now)
        server = make_server_certificate(server_key.public_key(), names, root_ca, root_key, now)
        for name, cert, key in (
            (_ROOT, root_ca, root_key),
            (_DEVICE_CA, device_ca, device_ca_key),
            (_SERVER, server, server_key),
        ):
            atomic_write(ca / f"{name}.cert.pem", _pem(cert))
            atomic_write(ca / f"{name}.key.pem", _encrypted(key, passphrase))
        atomic_write(ca / f"{_UPDATE}.key.pem", _encrypted(update_key, passphrase))
        atomic_write(
            ca / f"{_UPDATE}.pub.pem",
            update_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        fleet_id = fleet_id_of(root_ca)
        # fleet.json last: it marks a complete fleet.
        atomic_write(
            staging / FLEET_FILE,
            _json_bytes(
                {
                    "format": FLEET_FORMAT,
                    "fleet_id": fleet_id,
                    "server_names": list(names),
                    "created": now.isoformat(),
                }
            ),
        )
        return fleet_id

    @classmethod
    def open(cls, directory: Path) -> Fleet:
        """Open an existing fleet's public material (no passphrase needed).

        Raises:
            BadFleet: not a fleet folder, or a file is missing, damaged or inconsistent.
        """
        directory = Path(directory)
        try:
            raw = (directory / FLEET_FILE).read_bytes()
        except OSError:
            raise BadFleet(
                f"{directory} is not a tinyward fleet (no {FLEET_FILE}); "
                "create one with `tinyward fleet init`"
            ) from None
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict) or meta.get("format") != FLEET_FORMAT:
                raise ValueError("unknown format")
            fleet_id = meta["fleet_id"]
            server_names = tuple(meta["server_names"])
            created = datetime.fromisoformat(meta["created"])
            if not isinstance(fleet_id, str) or not all(isinstance(n, str) for n in server_names):
                raise ValueError("bad field types")
        except (ValueError, KeyError, TypeError) as error:
            raise BadFleet(f"{directory / FLEET_FILE} is damaged ({error})") from None

        def certificate(name: str) -> x509.Certificate:
            path = directory / "ca" / f"{name}.cert.pem"
            try:
                return x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                raise BadFleet(f"{path} is missing or damaged") from None

        root_ca, device_ca, server = (certificate(n) for n in (_ROOT, _DEVICE_CA, _SERVER))
        if fleet_id_of(root_ca) != fleet_id:
            raise BadFleet(f"{directory}: the root CA does not match the fleet ID in {FLEET_FILE}")
        for what, cert in (("device CA", device_ca), ("server certificate", server)):
            try:
                cert.verify_directly_issued_by(root_ca)
            except (ValueError, TypeError, InvalidSignature):
                raise BadFleet(f"{directory}: the {what} is not issued by the root CA") from None
        update_path = directory / "ca" / f"{_UPDATE}.pub.pem"
        try:
            update_key = serialization.load_pem_public_key(update_path.read_bytes())
        except (OSError, ValueError):
            raise BadFleet(f"{update_path} is missing or damaged") from None
        if not isinstance(update_key, ec.EllipticCurvePublicKey):
            raise BadFleet(f"{update_path} is not an ECDSA public key")
        return cls(
            directory, fleet_id, server_names, created, root_ca, device_ca, server, update_key
        )

    # -- private keys ------------------------------------------------------------------

    def _load_key(self, name: str, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
        _check_passphrase(passphrase)
        path = self._ca(f"{name}.key.pem")
        try:
            data = path.read_bytes()
        except OSError:
            raise BadFleet(f"{path} is missing") from None
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError:
            raise BadFleet(f"{path} is not encrypted; it should never be stored in clear") from None
        except ValueError:
            # cryptography reports a wrong password and a damaged file alike.
            raise WrongPassphrase(
                f"the passphrase does not open the fleet's keys ({path.name}); "
                "check TINYWARD_FLEET_PASSPHRASE (or the file is damaged)"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise BadFleet(f"{path} is not an ECDSA private key")
        return key

    def load_update_signing_key(self, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
        """The update-signing private key (for signing update manifests).

        Raises:
            WrongPassphrase: the passphrase does not decrypt it.
            BadFleet: the key file is missing, in clear or does not match its public key.
        """
        key = self._load_key(_UPDATE, passphrase)
        if spki_sha256(key.public_key()) != spki_sha256(self.update_signing_public_key):
            raise BadFleet("the update-signing key does not match update-signing.pub.pem")
        return key

    # -- devices ----------------------------------------------------------------------------

    def _device_path(self, device_id: str) -> Path:
        # The ID becomes a path: only the exact hex form is accepted (no "../").
        if not is_device_id(device_id):
            raise UnknownDevice(
                f"{str(device_id)[:80]!r} is not a device ID (64 lowercase hex characters)"
            )
        return self.devices_path / device_id

    def enroll(
        self,
        request_pem: bytes,
        passphrase: bytes,
        now: datetime | None = None,
        limits: EnrolmentLimits = DEFAULT_ENROLMENT_LIMITS,
    ) -> DeviceBundle:
        """Enrol the device whose enrolment request this is, and return its bundle.

        Raises:
            BadEnrolmentRequest: the request is refused (see ``parse_enrolment_request``).
            AlreadyEnrolled: the device is already enrolled here (revoked or not).
            WrongPassphrase: the passphrase does not open the device CA key.
            BadFleet: the device CA is not valid at ``now``, or its key does not match.
            Misuse: naive ``now`` or empty passphrase.
        """
        now = _utc_now(now)
        _check_passphrase(passphrase)
        csrs = parse_enrolment_request(request_pem, limits)
        device_id = device_id_from_attestation_key(csrs["attestation"].public_key())  # type: ignore[arg-type]
        target = self._device_path(device_id)
        if target.exists():
            raise AlreadyEnrolled(
                f"device {device_id} is already enrolled in fleet {self.fleet_id}; "
                "a device enrols once"
            )
        if not self.device_ca.not_valid_before_utc <= now < self.device_ca.not_valid_after_utc:
            raise BadFleet(
                f"the fleet's device CA is not valid at {now.isoformat()} (valid "
                f"{self.device_ca.not_valid_before_utc.isoformat()} to "
                f"{self.device_ca.not_valid_after_utc.isoformat()}); it cannot issue certificates"
            )
        ca_key = self._load_key(_DEVICE_CA, passphrase)
        if spki_sha256(ca_key.public_key()) != spki_sha256(self.device_ca):
            raise BadFleet("the device CA key does not match the device CA certificate")
        certificates: dict[str, x509.Certificate] = {}
        for purpose, csr in csrs.items():
            key = csr.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):  # parse_enrolment_request checked
                raise Misuse("parse_enrolment_request let a non-EC key through (a bug)")
            certificates[purpose] = make_device_certificate(
                csr.subject, key, device_id, purpose, self.device_ca, ca_key, now
            )
        staging = Path(tempfile.mkdtemp(prefix=".enrol-", dir=self.devices_path))
        try:
            for purpose, cert in certificates.items():
                atomic_write(staging / f"{purpose}.cert.pem", _pem(cert))
            atomic_write(staging / STATUS_FILE, self._status(device_id, now, None))
            try:
                # rename(2) refuses a non-empty target: two racing enrolments, one wins.
                os.rename(staging, target)
            except OSError:
                raise AlreadyEnrolled(
                    f"device {device_id} is already enrolled in fleet {self.fleet_id}"
                ) from None
            fsync_directory(self.devices_path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return DeviceBundle(
            device_id=device_id,
            fleet_id=self.fleet_id,
            certificates={p: _pem(c).decode("ascii") for p, c in certificates.items()},
            device_ca_pem=_pem(self.device_ca).decode("ascii"),
            root_ca_pem=_pem(self.root_ca).decode("ascii"),
            server_spki_sha256=self.server_spki_sha256,
        )

    @staticmethod
    def _status(device_id: str, enrolled_at: datetime, revoked_at: datetime | None) -> bytes:
        return _json_bytes(
            {
                "format": STATUS_FORMAT,
                "device_id": device_id,
                "enrolled_at": enrolled_at.isoformat(),
                "revoked": revoked_at is not None,
                "revoked_at": None if revoked_at is None else revoked_at.isoformat(),
            }
        )

    def device(self, device_id: str) -> EnrolledDevice:
        """The enrolled device with this ID.

        Raises:
            UnknownDevice: malformed ID, or no such device in this fleet.
            BadFleet: the device's files are damaged.
        """
        path = self._device_path(device_id)
        if not path.is_dir():
            raise UnknownDevice(
                f"device {device_id} is not enrolled in fleet {self.fleet_id} "
                "(enrolled in another fleet?)"
            )
        try:
            status = json.loads((path / STATUS_FILE).read_bytes())
            if status.get("format") != STATUS_FORMAT or status.get("device_id") != device_id:
                raise ValueError("wrong format or device ID")
            revoked = status["revoked"]
            if not isinstance(revoked, bool):
                raise TypeError("revoked is not a boolean")
            enrolled_at = datetime.fromisoformat(status["enrolled_at"])
            revoked_at = (
                None
                if status["revoked_at"] is None
                else datetime.fromisoformat(status["revoked_at"])
            )
            certificates = {
                purpose: x509.load_pem_x509_certificate((path / f"{purpose}.cert.pem").read_bytes())
                for purpose in PURPOSES
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise BadFleet(f"the files of device {device_id} are damaged ({error})") from None
        return EnrolledDevice(device_id, certificates, revoked, enrolled_at, revoked_at)

    def devices(self) -> list[EnrolledDevice]:
        """Every enrolled device (revoked ones included), sorted by enrolment time, then ID.

        Raises:
            BadFleet: a device's files are damaged.
        """
        try:
            names = sorted(entry.name for entry in self.devices_path.iterdir())
        except OSError:
            raise BadFleet(f"{self.devices_path} is missing") from None
        found = [self.device(name) for name in names if is_device_id(name)]
        return sorted(found, key=lambda device: (device.enrolled_at, device.device_id))

    def revoke(self, device_id: str, now: datetime | None = None) -> None:
        """Revoke a device: from now on its certificates are refused. Revoking twice is a no-op.

        Raises:
            UnknownDevice: malformed ID, or no such device in this fleet.
            BadFleet: the device's files are damaged.
        """
        now = _utc_now(now)
        device = self.device(device_id)
        if device.revoked:
            return
        atomic_write(
            self._device_path(device_id) / STATUS_FILE,
            self._status(device_id, device.enrolled_at, now),
        )

    def verify_device_certificate(
        self, cert: x509.Certificate, purpose: str, now: datetime | None = None
    ) -> str:
        """Check a certificate a device presents for ``purpose``; return the device ID.

        (:meth:`verified_device` does the same and returns the loaded device.)

        Checks: issued by this fleet's device CA, valid at ``now``, its EKU names
        ``purpose``, the device is enrolled here, the certificate is the one the fleet
        recorded for it, and the device is not revoked.

        Raises:
            UntrustedCertificate: not issued by this fleet's device CA, or not the
                certificate recorded at enrolment.
            CertificateExpired, CertificateNotYetValid: outside its validity period.
            WrongPurpose: issued for another purpose.
            UnknownDevice: issued by this CA but the device is not enrolled.
            RevokedDevice: the device has been revoked.
            BadCertificate: any other defect.
            Misuse: unknown ``purpose`` or naive ``now``.
        """
        return self.verified_device(cert, purpose, now).device_id

    def verified_device(
        self, cert: x509.Certificate, purpose: str, now: datetime | None = None
    ) -> EnrolledDevice:
        """:meth:`verify_device_certificate`, returning the device as read from disk for the
        check (a caller that caches device data needs not read it again)."""
        now = _utc_now(now)
        if purpose not in PURPOSE_EKU:
            raise Misuse(f"unknown purpose {purpose!r}; expected one of {', '.join(PURPOSES)}")
        device_id = check_device_certificate(cert, purpose, self.device_ca, now)
        device = self.device(device_id)
        if device.certificates[purpose] != cert:
            raise UntrustedCertificate(
                f"this {purpose} certificate is not the one fleet {self.fleet_id} recorded "
                f"for device {device_id}"
            )
        if device.revoked:
            when = device.revoked_at.isoformat() if device.revoked_at else "earlier"
            raise RevokedDevice(f"device {device_id} was revoked ({when})")
        return device
