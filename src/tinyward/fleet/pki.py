"""The fleet's certificate authority and device enrolment, on disk.

A fleet is a folder (all files 0600, folders 0700)::

    fleet.json                      format tag, fleet ID, server names, creation time,
                                    the default report interval of new devices
    ca/root-ca.cert.pem             root CA (~20 years)
    ca/device-ca.cert.pem           device-issuing CA (~10 years, pathlen 0)
    ca/device-ca.retiring/*.cert.pem  earlier device CAs, still trusted until retired
    ca/server.cert.pem              fleet server TLS certificate (2 years, serverAuth)
    ca/update-signing.pub.pem       update-signing public key (if the fleet has one)
    ca/server-next.pub.pem          the next server key's public key (its pin is in bundles)
    server/server.key               the server's TLS key, sealed under the server passphrase
      or server/server.key.pem      ... or in clear, 0600, for the server's user only
    keys/root-ca.key                offline keys, sealed: CA passphrase
    keys/device-ca.key              (enrolment, rotation)
    keys/update-signing.key         update passphrase (releases)
    keys/server-next.key            the next server TLS key, CA passphrase (pin roll-over)
    devices/<device ID>/{tls,report,attestation}.cert.pem, status.json (revocation and
                                    the device's declared report interval)

The server process needs only ``ca/``, ``server/`` and ``devices/``: it never opens
``keys/`` nor knows the CA or update passphrases. Private keys at rest are sealed with
scrypt + AES-256-GCM (:mod:`tinyward.fleet.keyseal`); the signing keys are used through
:class:`tinyward.fleet.tokens.SigningToken`, which a hardware token can implement. Public
material is readable without any passphrase (:meth:`Fleet.open`).

Every file is written atomically; a new fleet and a new device are each built in a
temporary folder and renamed into place, so a crash leaves either nothing or the whole
thing. Certificate shapes are in ``fleet/profiles.py``; request and bundle parsing in
``fleet/enrolment.py`` and ``fleet/bundle.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import ssl
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
    BadCertificate,
    BadFleet,
    BadRollout,
    BadSchedule,
    FleetExists,
    OldFleetFormat,
    RevokedDevice,
    UnknownDevice,
    UntrustedCertificate,
    WrongPassphrase,
)
from tinyward.fleet.keyseal import open_key, seal_key
from tinyward.fleet.passphrase import check_new_passphrase
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
from tinyward.fleet.rollout import check_cohort
from tinyward.fleet.tokens import FileSigningKey, SigningToken
from tinyward.trust.identity import device_id as device_id_from_attestation_key
from tinyward.trust.identity import is_device_id
from tinyward.update.meta import is_product_class

__all__ = [
    "DeviceBundle",
    "EnrolledDevice",
    "Fleet",
    "SigningToken",
    "device_ca_label",
    "device_id_from_attestation_key",
    "parse_enrolment_request",
]

FLEET_FORMAT = "tinyward-fleet/2"
#: One passphrase for every key, PKCS#8 PBKDF2 at 2,048 iterations: refused, migrated.
OLD_FLEET_FORMAT = "tinyward-fleet/1"
STATUS_FORMAT = "tinyward-device-status/1"
FLEET_FILE = "fleet.json"
STATUS_FILE = "status.json"
_ROOT, _DEVICE_CA, _SERVER, _UPDATE = "root-ca", "device-ca", "server", "update-signing"
_ROOT_KEY, _DEVICE_CA_KEY, _UPDATE_KEY = f"{_ROOT}.key", f"{_DEVICE_CA}.key", f"{_UPDATE}.key"
_SEALED_SERVER_KEY, _CLEAR_SERVER_KEY = "server.key", "server.key.pem"
_RETIRING = "device-ca.retiring"
#: The next server key: pre-made, its pin in every bundle, promoted by rotate_server_key.
_SERVER_NEXT = "server-next"
_SERVER_NEXT_KEY, _SERVER_NEXT_PUB = f"{_SERVER_NEXT}.key", f"{_SERVER_NEXT}.pub.pem"
_MAX_JSON = 64 * 1024
#: A device's declared report schedule (seconds between its reports): the default of a
#: new fleet, and the bounds every declaration must keep. The fleet server derives the
#: device's rate limit from it (``docs/fleet-server.md``).
DEFAULT_REPORT_INTERVAL = 10.0
MIN_REPORT_INTERVAL = 1.0
MAX_REPORT_INTERVAL = 86400.0


def check_report_interval(value: object) -> float:
    """A declared report interval in seconds, checked: a finite number from
    :data:`MIN_REPORT_INTERVAL` (1 s) to :data:`MAX_REPORT_INTERVAL` (1 day).

    Raises:
        BadSchedule: not a number, or out of bounds (the message gives the bounds).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadSchedule(f"a report interval is a number of seconds, not {value!r:.40}")
    seconds = float(value)
    if not MIN_REPORT_INTERVAL <= seconds <= MAX_REPORT_INTERVAL:  # NaN fails this too
        raise BadSchedule(
            f"a report interval must be {MIN_REPORT_INTERVAL:g} to {MAX_REPORT_INTERVAL:g} "
            f"seconds (1 s to 1 day), not {seconds:g}"
        )
    return seconds


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise Misuse("`now` must be a timezone-aware datetime (e.g. datetime.now(timezone.utc))")
    return now


def _check_passphrase(passphrase: bytes, what: str = "CA") -> None:
    if not isinstance(passphrase, bytes) or not passphrase:
        raise Misuse(f"the {what} passphrase must be non-empty bytes")


def _check_new_passphrase(passphrase: bytes, role: str) -> None:
    _check_passphrase(passphrase, role)
    try:
        text = passphrase.decode("utf-8")
    except UnicodeDecodeError:
        raise Misuse(f"the {role} passphrase must be UTF-8 text") from None
    check_new_passphrase(text, role)


def _check_apart(secrets: dict[str, bytes | None]) -> None:
    """Each role has its own secret: the server's must not open the CA (and so on)."""
    given = [(role, secret) for role, secret in secrets.items() if secret is not None]
    for index, (role, secret) in enumerate(given):
        for other, other_secret in given[index + 1 :]:
            if hmac.compare_digest(secret, other_secret):
                raise Misuse(
                    f"the {role} and {other} passphrases are the same; each key role needs "
                    "its own secret (taking the server must not give the CA)"
                )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _clear_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class _Secrets:
    ca: bytes
    update: bytes | None
    server: bytes | None


def device_ca_label(cert: x509.Certificate) -> str:
    """A device CA's short name in ``ca/device-ca.retiring/`` (its key's SHA-256, 16 hex)."""
    return spki_sha256(cert).hex()[:16]


def _fleet_json(fleet_id: str, names: tuple[str, ...], created: datetime,
                report_interval: float | None = None) -> bytes:
    document: dict[str, Any] = {
        "format": FLEET_FORMAT,
        "fleet_id": fleet_id,
        "server_names": list(names),
        "created": created.isoformat(),
    }
    if report_interval is not None:  # optional: fleets made before have none (10 s)
        document["report_interval"] = report_interval
    return _json_bytes(document)


def _read_fleet_json(directory: Path) -> dict[str, Any]:
    try:
        with (directory / FLEET_FILE).open("rb") as handle:
            raw = handle.read(_MAX_JSON + 1)
    except OSError:
        raise BadFleet(
            f"{directory} is not a tinyward fleet (no {FLEET_FILE}); "
            "create one with `tinyward fleet init`"
        ) from None
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise TypeError("not an object")
    except (ValueError, TypeError) as error:
        raise BadFleet(f"{directory / FLEET_FILE} is damaged ({error})") from None
    return meta


def _certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        raise BadFleet(f"{path} is missing or damaged") from None


def _old_key(path: Path, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    """A key of the old format (encrypted PKCS#8 PEM), for migration only."""
    try:
        data = path.read_bytes()
    except OSError:
        raise BadFleet(f"{path} is missing") from None
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise BadFleet(f"{path} is not encrypted") from None
    except ValueError:
        raise WrongPassphrase(
            f"the old fleet passphrase does not open {path.name} "
            "(TINYWARD_FLEET_PASSPHRASE; or the file is damaged)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BadFleet(f"{path} is not an ECDSA private key")
    return key


def _move_keys(source: Path, target: Path) -> None:
    """Move the sealed offline keys out of the fleet folder (another disk: copy, then
    delete). Interrupted, the keys are in one place or both, never lost."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.rmdir()  # checked empty before the fleet was made
    try:
        os.rename(source, target)
    except OSError:
        shutil.copytree(source, target)  # copy2 keeps the 0600/0700 modes
        for path in target.iterdir():  # on the disk before the originals go
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(target)
        shutil.rmtree(source)
    fsync_directory(target.parent)
    fsync_directory(source.parent)


def _write_server_key(
    folder: Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | None
) -> None:
    """Store the server key sealed, or in clear (0600) when it has no passphrase; remove
    the other form so exactly one is there."""
    if passphrase is None:
        atomic_write(folder / _CLEAR_SERVER_KEY, _clear_pem(key))
        (folder / _SEALED_SERVER_KEY).unlink(missing_ok=True)
    else:
        atomic_write(folder / _SEALED_SERVER_KEY, seal_key(key, passphrase, _SERVER))
        (folder / _CLEAR_SERVER_KEY).unlink(missing_ok=True)
    fsync_directory(folder)


#: The last server key opened in this process, by SHA-256 of (file, passphrase): forked
#: server workers inherit it, so N workers do not each spend a 128 MiB scrypt derivation.
_opened_server_key: dict[bytes, ec.EllipticCurvePrivateKey] = {}


def _open_server_key(path: Path, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    data = path.read_bytes()
    tag = hashlib.sha256(len(data).to_bytes(4, "big") + data + passphrase).digest()
    key = _opened_server_key.get(tag)
    if key is None:
        key = open_key(data, passphrase, _SERVER, name=str(path))
        _opened_server_key.clear()
        _opened_server_key[tag] = key
    return key


def _load_server_chain(fleet: Fleet, context: ssl.SSLContext, passphrase: bytes | None) -> None:
    folder = fleet.directory / "server"
    sealed, clear = folder / _SEALED_SERVER_KEY, folder / _CLEAR_SERVER_KEY
    cert = str(fleet.server_certificate_path)
    if sealed.exists():
        if passphrase is None:
            raise Misuse(
                "the server key is sealed; give its passphrase (TINYWARD_SERVER_PASSPHRASE)"
            )
        _check_passphrase(passphrase, "server")
        key = _open_server_key(sealed, passphrase)
        if spki_sha256(key.public_key()) != fleet.server_spki_sha256:
            raise BadFleet(f"{sealed} does not match {fleet.server_certificate_path}")
        # OpenSSL loads keys from files only: an anonymous memory file, the key in it
        # encrypted under a random one-time password (other processes of the user can
        # open /proc/<pid>/fd/...), closed as soon as it is loaded.
        once = os.urandom(32).hex().encode("ascii")
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(once),
        )
        fd = os.memfd_create("tinyward-server-key", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            context.load_cert_chain(cert, f"/proc/self/fd/{fd}", password=once)
        finally:
            os.close(fd)
        return
    if not clear.exists():
        raise BadFleet(
            f"{folder} holds no server key ({_SEALED_SERVER_KEY} or {_CLEAR_SERVER_KEY})"
        )
    if passphrase is not None:
        raise Misuse(
            f"the server key {clear} is stored without a passphrase; unset "
            "TINYWARD_SERVER_PASSPHRASE (or seal the key with `tinyward fleet rotate-server-key`)"
        )
    mode = clear.stat()
    if mode.st_mode & 0o077 or mode.st_uid != os.getuid():
        # As ssh does with identity files: a clear key others can read is not private.
        raise BadFleet(f"{clear} is readable by others (mode {mode.st_mode & 0o777:o}); chmod 600")
    try:
        context.load_cert_chain(cert, str(clear))
    except ssl.SSLError as error:
        raise BadFleet(f"{clear} does not load with {cert} ({error.reason})") from None


def _write_next_server_key(
    keys: Path, ca: Path, key: ec.EllipticCurvePrivateKey, ca_passphrase: bytes
) -> None:
    """The next server key: sealed under the CA passphrase and kept with the offline keys,
    so that taking the server (and its passphrase) does not give the key that replaces
    its own. The public half goes to ``ca/`` for the bundles' next pin. Key first: a crash
    between the two leaves the old public key, which a new rotation repairs (see
    :meth:`Fleet.rotate_server_key`); never a published pin without its key."""
    atomic_write(keys / _SERVER_NEXT_KEY, seal_key(key, ca_passphrase, _SERVER_NEXT))
    fsync_directory(keys)
    atomic_write(ca / _SERVER_NEXT_PUB, _public_pem(key.public_key()))
    fsync_directory(ca)


def _read_public_key(path: Path) -> ec.EllipticCurvePublicKey | None:
    """An optional public key file of ``ca/`` (None when absent)."""
    if not path.exists():
        return None
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError):
        raise BadFleet(f"{path} is damaged") from None
    if not isinstance(loaded, ec.EllipticCurvePublicKey):
        raise BadFleet(f"{path} is not an ECDSA public key")
    return loaded


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
    #: Seconds between the device's reports, declared at enrolment (or by
    #: ``set_schedule``); None for a device enrolled before schedules were recorded.
    report_interval: float | None = None
    #: The device's rollout cohort (``fleet enroll --cohort``, ``fleet set-cohort``), or
    #: None: in no cohort.
    cohort: str | None = None
    #: The product the fleet enrolled it as (signed updates are per product class).
    product_class: str | None = None
    #: When an administrator quarantined it (``fleet quarantine``, the dashboard), or None.
    #: A quarantined device still authenticates and its reports are still verified and
    #: stored (they are evidence), but it is offered no update.
    quarantined_at: datetime | None = None

    @property
    def quarantined(self) -> bool:
        """True while the device is quarantined (see :meth:`Fleet.quarantine`)."""
        return self.quarantined_at is not None

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
        update_signing_public_key: ec.EllipticCurvePublicKey | None,
        retiring_device_cas: tuple[x509.Certificate, ...] = (),
        server_next_public_key: ec.EllipticCurvePublicKey | None = None,
        report_interval: float = DEFAULT_REPORT_INTERVAL,
    ) -> None:
        # Use Fleet.open / Fleet.init; this only holds what they checked.
        self.directory = directory
        #: The report interval of devices enrolled without one of their own.
        self.report_interval = report_interval
        self.fleet_id = fleet_id
        self.server_names = server_names
        self.created = created
        self.root_ca = root_ca
        self.device_ca = device_ca
        #: Earlier device CAs: their devices are still trusted until the CA is retired.
        self.retiring_device_cas = retiring_device_cas
        self.server_certificate = server_certificate
        self.server_spki_sha256 = spki_sha256(server_certificate)
        #: The next server key's pin (bundles carry it; devices accept it too), or None
        #: for a fleet made before pin roll-over (``make_next_server_key`` adds one).
        self.server_next_spki_sha256 = (
            None if server_next_public_key is None else spki_sha256(server_next_public_key)
        )
        #: None for a fleet made without an update-signing key (see :meth:`init`).
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
    def retiring_device_ca_path(self) -> Path:
        return self._ca(_RETIRING)

    @property
    def device_cas(self) -> tuple[x509.Certificate, ...]:
        """Every device CA the fleet trusts: the current one first, then retiring ones."""
        return (self.device_ca, *self.retiring_device_cas)

    @property
    def server_certificate_path(self) -> Path:
        return self._ca(f"{_SERVER}.cert.pem")

    @property
    def server_key_path(self) -> Path:
        """The server's TLS key: sealed (``server.key``) or in clear for its user (``.pem``)."""
        sealed = self.directory / "server" / _SEALED_SERVER_KEY
        return sealed if sealed.exists() else self.directory / "server" / _CLEAR_SERVER_KEY

    @property
    def keys_path(self) -> Path:
        """The offline keys' default folder (move it to removable media; see tokens.py)."""
        return self.directory / "keys"

    @property
    def devices_path(self) -> Path:
        return self.directory / "devices"

    # -- creating and opening ------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        ca_passphrase: bytes,
        server_names: Sequence[str] = ("localhost", "127.0.0.1"),
        now: datetime | None = None,
        *,
        update_passphrase: bytes | None = None,
        server_passphrase: bytes | None = None,
        keys_dir: Path | None = None,
        report_interval: float = DEFAULT_REPORT_INTERVAL,
    ) -> Fleet:
        """Create a new fleet in ``directory`` (which must not exist, or be empty).

        Makes ECDSA P-256 keys — root CA, device CA, fleet server and (when
        ``update_passphrase`` is given) update signing — and the certificates of the first
        three. Each role has its own secret: the CA keys are sealed under
        ``ca_passphrase``, the update key under ``update_passphrase``, the server key under
        ``server_passphrase`` or, when that is None, kept in clear (0600) for the server's
        user only. Every new passphrase must pass :mod:`tinyward.fleet.passphrase`'s rule,
        and no two may be equal. The sealed CA and update keys go to ``keys_dir`` (a new
        or empty folder, e.g. on removable media) when given, else to ``directory/keys``.
        ``report_interval`` is the schedule a device gets when its enrolment declares none.

        Raises:
            BadSchedule: ``report_interval`` is out of bounds.
            FleetExists: ``directory`` holds a fleet or any other file.
            WeakPassphrase: a passphrase breaks the rule (the message says which).
            Misuse: empty or equal passphrases, no or invalid server names, naive ``now``.
            OSError: the folder cannot be created or written.
        """
        _check_new_passphrase(ca_passphrase, "CA")
        if update_passphrase is not None:
            _check_new_passphrase(update_passphrase, "update")
        if server_passphrase is not None:
            _check_new_passphrase(server_passphrase, "server")
        _check_apart(
            {"CA": ca_passphrase, "update": update_passphrase, "server": server_passphrase}
        )
        report_interval = check_report_interval(report_interval)
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
        if keys_dir is not None and Path(keys_dir).exists() and any(Path(keys_dir).iterdir()):
            raise FleetExists(f"{keys_dir} is not empty; the offline keys need a new folder")
        directory.parent.mkdir(parents=True, exist_ok=True)

        # Build the whole fleet in a private temporary folder, then rename it into place:
        # a crash leaves no half-made fleet, and rename refuses a non-empty target.
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            secrets = _Secrets(ca_passphrase, update_passphrase, server_passphrase)
            fleet_id = cls._populate(staging, secrets, names, now, report_interval)
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
        if keys_dir is not None:
            _move_keys(directory / "keys", Path(keys_dir))
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
    def _populate(
        staging: Path, secrets: _Secrets, names: tuple[str, ...], now: datetime,
        report_interval: float = DEFAULT_REPORT_INTERVAL,
    ) -> str:
        os.chmod(staging, PRIVATE_DIR_MODE)
        for folder in ("ca", "server", "keys", "devices"):
            (staging / folder).mkdir(mode=PRIVATE_DIR_MODE)
        ca, keys = staging / "ca", staging / "keys"

        root_key, device_ca_key, server_key = (_new_key() for _ in range(3))
        root_ca = make_root_ca(root_key, now)
        device_ca = make_device_ca(device_ca_key.public_key(), root_ca, root_key, now)
        server = make_server_certificate(server_key.public_key(), names, root_ca, root_key, now)
        for name, cert in ((_ROOT, root_ca), (_DEVICE_CA, device_ca), (_SERVER, server)):
            atomic_write(ca / f"{name}.cert.pem", _pem(cert))
        atomic_write(keys / _ROOT_KEY, seal_key(root_key, secrets.ca, _ROOT))
        atomic_write(keys / _DEVICE_CA_KEY, seal_key(device_ca_key, secrets.ca, _DEVICE_CA))
        _write_server_key(staging / "server", server_key, secrets.server)
        _write_next_server_key(keys, ca, _new_key(), secrets.ca)
        if secrets.update is not None:
            update_key = _new_key()
            atomic_write(keys / _UPDATE_KEY, seal_key(update_key, secrets.update, _UPDATE))
            atomic_write(ca / f"{_UPDATE}.pub.pem", _public_pem(update_key.public_key()))
        fleet_id = fleet_id_of(root_ca)
        # fleet.json last: it marks a complete fleet.
        atomic_write(staging / FLEET_FILE, _fleet_json(fleet_id, names, now, report_interval))
        return fleet_id

    @classmethod
    def open(cls, directory: Path) -> Fleet:
        """Open an existing fleet's public material (no passphrase needed).

        Raises:
            OldFleetFormat: made by an older tinyward (one passphrase, PBKDF2): migrate it.
            BadFleet: not a fleet folder, or a file is missing, damaged or inconsistent.
        """
        directory = Path(directory)
        meta = _read_fleet_json(directory)
        if meta.get("format") == OLD_FLEET_FORMAT:
            raise OldFleetFormat(
                f"{directory} is a fleet made by an older tinyward: one passphrase for every "
                "key, under PBKDF2 with 2,048 iterations. Migrate it (it asks for the old "
                f"passphrase and a new one per role): tinyward fleet migrate {directory}"
            )
        try:
            if meta.get("format") != FLEET_FORMAT:
                raise ValueError("unknown format")
            fleet_id = meta["fleet_id"]
            server_names = tuple(meta["server_names"])
            created = datetime.fromisoformat(meta["created"])
            if not isinstance(fleet_id, str) or not all(isinstance(n, str) for n in server_names):
                raise ValueError("bad field types")
            report_interval = check_report_interval(
                meta.get("report_interval", DEFAULT_REPORT_INTERVAL))
        except (ValueError, KeyError, TypeError, BadSchedule) as error:
            raise BadFleet(f"{directory / FLEET_FILE} is damaged ({error})") from None
        root_ca, device_ca, server = (
            _certificate(directory / "ca" / f"{n}.cert.pem") for n in (_ROOT, _DEVICE_CA, _SERVER)
        )
        retiring = tuple(
            _certificate(path)
            for path in sorted((directory / "ca" / _RETIRING).glob("*.cert.pem"))
        )
        if fleet_id_of(root_ca) != fleet_id:
            raise BadFleet(f"{directory}: the root CA does not match the fleet ID in {FLEET_FILE}")
        retiring_cas = [("retiring device CA", old) for old in retiring]
        for what, cert in [("device CA", device_ca), ("server certificate", server), *retiring_cas]:
            try:
                cert.verify_directly_issued_by(root_ca)
            except (ValueError, TypeError, InvalidSignature):
                raise BadFleet(f"{directory}: the {what} is not issued by the root CA") from None
        update_key = _read_public_key(directory / "ca" / f"{_UPDATE}.pub.pem")
        next_key = _read_public_key(directory / "ca" / _SERVER_NEXT_PUB)
        return cls(
            directory, fleet_id, server_names, created, root_ca, device_ca, server, update_key,
            retiring, next_key, report_interval,
        )

    # -- signing keys (offline) and the server key ----------------------------------------

    def _token(
        self, file_name: str, purpose: str, secret: bytes, keys_dir: Path | None,
        public: ec.EllipticCurvePublicKey | x509.Certificate | None,
    ) -> SigningToken:
        _check_passphrase(secret, "CA" if purpose != _UPDATE else "update")
        token = FileSigningKey((keys_dir or self.keys_path) / file_name, secret, purpose)
        if public is not None and spki_sha256(token.public_key()) != spki_sha256(public):
            raise BadFleet(f"the {purpose} key in {token.path} does not belong to this fleet")
        return token

    def device_ca_token(self, ca_passphrase: bytes, keys_dir: Path | None = None) -> SigningToken:
        """The device CA's signing key (for enrolment), opened with the CA passphrase.

        Open it once to enrol many devices (``enroll(request, token)``).

        Raises:
            WrongPassphrase: the passphrase does not open it.
            BadFleet: the key file is missing (offline: pass ``keys_dir``), damaged, an old
                PEM key, or does not match the device CA certificate.
        """
        return self._token(_DEVICE_CA_KEY, _DEVICE_CA, ca_passphrase, keys_dir, self.device_ca)

    def root_ca_token(self, ca_passphrase: bytes, keys_dir: Path | None = None) -> SigningToken:
        """The root CA's signing key (for rotations), opened with the CA passphrase."""
        return self._token(_ROOT_KEY, _ROOT, ca_passphrase, keys_dir, self.root_ca)

    def update_signing_token(
        self, update_passphrase: bytes, keys_dir: Path | None = None
    ) -> SigningToken:
        """The update-signing key (for signing update manifests), with its own passphrase.

        Raises:
            WrongPassphrase: the passphrase does not open it.
            BadFleet: this fleet has no update key, or its file is missing, damaged or
                does not match ``update-signing.pub.pem``.
        """
        if self.update_signing_public_key is None:
            raise BadFleet(f"fleet {self.fleet_id} was made without an update-signing key")
        return self._token(
            _UPDATE_KEY, _UPDATE, update_passphrase, keys_dir, self.update_signing_public_key
        )

    def load_server_chain(self, context: ssl.SSLContext, passphrase: bytes | None) -> None:
        """Load the server certificate and key into ``context`` (the server's only secret).

        A sealed key is opened with ``passphrase`` and handed to OpenSSL through an
        anonymous memory file, re-encrypted under a one-time random password: the clear
        key never touches a disk. A clear key (0600, the server's user only) needs no
        passphrase.

        Raises:
            WrongPassphrase: the passphrase does not open the sealed server key.
            BadFleet: no server key, a clear key others can read, or a mismatched key.
            Misuse: a passphrase given for a clear key, or none for a sealed one.
        """
        _load_server_chain(self, context, passphrase)

    # -- rotation --------------------------------------------------------------------------

    @property
    def server_pins(self) -> tuple[bytes, ...]:
        """The pins a bundle carries: the current server key's, then the next one's (if
        the fleet has one and a rotation did not stop half-way: then it equals the current)."""
        nxt = self.server_next_spki_sha256
        if nxt is None or nxt == self.server_spki_sha256:
            return (self.server_spki_sha256,)
        return (self.server_spki_sha256, nxt)

    def _next_key_path(self, keys_dir: Path | None) -> Path:
        return (keys_dir or self.keys_path) / _SERVER_NEXT_KEY

    def rotate_server_key(
        self,
        root: SigningToken,
        server_passphrase: bytes | None,
        now: datetime | None = None,
        *,
        ca_passphrase: bytes,
        keys_dir: Path | None = None,
        discard_next: bool = False,
    ) -> Fleet:
        """Promote the next server key to the server's TLS key, with a new certificate
        from ``root``, and make a fresh next key (pin roll-over).

        Devices carry both pins (current and next), so the ones provisioned before keep
        talking to the server; they learn the fresh next pin from a refreshed bundle
        (:meth:`bundle`, ``tinyward device install --refresh``). ``ca_passphrase`` opens
        the next key and seals the fresh one. A fleet without a next key (made before pin
        roll-over), or ``discard_next`` (the next key may be compromised too), gets a
        brand-new key instead: then devices refuse the server until they are given a
        bundle with its pin.

        Safe to run again after a crash: the server key and certificate are written
        before the fresh next key, and a next pin equal to the current one (a rotation
        stopped there) only makes the fresh next key.

        Raises:
            WrongPassphrase: ``ca_passphrase`` does not open the next key.
            WeakPassphrase: ``server_passphrase`` breaks the rule.
            BadFleet: the next key is missing (offline: pass ``keys_dir``), or does not
                match ``ca/server-next.pub.pem``.
        """
        now = _utc_now(now)
        _check_passphrase(ca_passphrase)
        if server_passphrase is not None:
            _check_new_passphrase(server_passphrase, "server")
            _check_apart({"CA": ca_passphrase, "server": server_passphrase})
        keys = keys_dir or self.keys_path
        pending = self.server_next_spki_sha256
        if pending == self.server_spki_sha256 and not discard_next:
            key = None  # promoted already; the crash came before the fresh next key
        elif pending is None or discard_next:
            key = _new_key()
        else:
            key = self._open_next_server_key(ca_passphrase, keys)
        if key is not None:
            cert = make_server_certificate(
                key.public_key(), self.server_names, self.root_ca, root, now
            )
            old = self.server_key_path
            _write_server_key(self.directory / "server", key, server_passphrase)
            new = self.directory / "server" / (
                _SEALED_SERVER_KEY if server_passphrase is not None else _CLEAR_SERVER_KEY
            )
            if old != new:
                old.unlink(missing_ok=True)
            atomic_write(self.server_certificate_path, _pem(cert))
        _write_next_server_key(keys, self.directory / "ca", _new_key(), ca_passphrase)
        return Fleet.open(self.directory)

    def _open_next_server_key(self, ca_passphrase: bytes, keys: Path) -> ec.EllipticCurvePrivateKey:
        path = keys / _SERVER_NEXT_KEY
        try:
            data = path.read_bytes()
        except OSError:
            raise BadFleet(
                f"{path} is missing; the next server key is kept with the offline keys "
                "(pass --keys DIR)"
            ) from None
        key = open_key(data, ca_passphrase, _SERVER_NEXT, name=str(path))
        if spki_sha256(key.public_key()) != self.server_next_spki_sha256:
            raise BadFleet(
                f"{path} does not match {self._ca(_SERVER_NEXT_PUB)} (the pin devices "
                "carry); it is not this fleet's next server key"
            )
        return key

    def make_next_server_key(self, ca_passphrase: bytes, keys_dir: Path | None = None) -> Fleet:
        """Give a fleet made before pin roll-over its next server key (sealed under the CA
        passphrase, with the offline keys); bundles carry its pin from now on.

        Raises:
            BadFleet: the fleet already has a next server key.
        """
        _check_passphrase(ca_passphrase)
        if self.server_next_spki_sha256 is not None:
            raise BadFleet(
                f"fleet {self.fleet_id} already has a next server key "
                f"({self.server_next_spki_sha256.hex()[:16]}…); `rotate-server-key` promotes it"
            )
        # The passphrase must be the CA's: it is the one rotate_server_key opens it with.
        self.root_ca_token(ca_passphrase, keys_dir)
        _write_next_server_key(keys_dir or self.keys_path, self.directory / "ca", _new_key(),
                               ca_passphrase)
        return Fleet.open(self.directory)

    def renew_server_certificate(self, root: SigningToken, now: datetime | None = None) -> Fleet:
        """A new server certificate (2 years from ``now``) for the *same* key: the devices'
        pin stays valid, so this is the routine renewal; no server secret is needed."""
        now = _utc_now(now)
        key = self.server_certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise BadFleet("the server certificate has no ECDSA key")
        cert = make_server_certificate(key, self.server_names, self.root_ca, root, now)
        atomic_write(self.server_certificate_path, _pem(cert))
        return Fleet.open(self.directory)

    def rotate_device_ca(
        self, root: SigningToken, ca_passphrase: bytes, now: datetime | None = None
    ) -> Fleet:
        """Make a new device CA; the current one keeps being trusted (retiring) for the
        devices it issued, until :meth:`retire_device_ca`. New enrolments use the new one.

        Raises:
            WeakPassphrase: ``ca_passphrase`` breaks the rule.
        """
        now = _utc_now(now)
        _check_new_passphrase(ca_passphrase, "CA")
        key = _new_key()
        cert = make_device_ca(key.public_key(), self.root_ca, root, now)
        retiring = self.retiring_device_ca_path
        retiring.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        atomic_write(retiring / f"{device_ca_label(self.device_ca)}.cert.pem", _pem(self.device_ca))
        fsync_directory(retiring)
        # The old certificate is kept (above) before anything changes. A crash between the
        # key and the certificate below leaves a pair that does not match: device_ca_token
        # refuses it (nothing is signed with the wrong key) and rotating again repairs it.
        atomic_write(self.keys_path / _DEVICE_CA_KEY, seal_key(key, ca_passphrase, _DEVICE_CA))
        atomic_write(self.device_ca_path, _pem(cert))
        return Fleet.open(self.directory)

    def retire_device_ca(self, label: str) -> Fleet:
        """Stop trusting a retiring device CA (``label`` as :func:`device_ca_label` gives):
        devices it issued are refused from now on.

        Raises:
            BadFleet: no retiring device CA with this label.
        """
        path = self.retiring_device_ca_path / f"{label}.cert.pem"
        if not label.isalnum() or not path.exists():
            raise BadFleet(f"no retiring device CA {label[:80]!r} in fleet {self.fleet_id}")
        path.unlink()
        fsync_directory(path.parent)
        return Fleet.open(self.directory)

    # -- migration from the old format -----------------------------------------------------

    @classmethod
    def migrate(
        cls,
        directory: Path,
        old_passphrase: bytes,
        ca_passphrase: bytes,
        update_passphrase: bytes,
        server_passphrase: bytes | None,
    ) -> Fleet:
        """Move a fleet of the old format (one passphrase, PKCS#8 PBKDF2) to this one:
        every key sealed under scrypt with its own role's passphrase, the CA and update
        keys into ``keys/``, the old key files deleted. Safe to run again after a crash.

        Raises:
            WrongPassphrase: ``old_passphrase`` does not open the old keys.
            WeakPassphrase: a new passphrase breaks the rule.
            BadFleet: not an old fleet, or its files are damaged.
        """
        directory = Path(directory)
        _check_passphrase(old_passphrase, "old fleet")
        for role, secret in (("CA", ca_passphrase), ("update", update_passphrase)):
            _check_new_passphrase(secret, role)
        if server_passphrase is not None:
            _check_new_passphrase(server_passphrase, "server")
        _check_apart(
            {"CA": ca_passphrase, "update": update_passphrase, "server": server_passphrase}
        )
        meta = _read_fleet_json(directory)
        ca = directory / "ca"
        leftovers = [ca / f"{n}.key.pem" for n in (_ROOT, _DEVICE_CA, _SERVER, _UPDATE)]
        if meta.get("format") == FLEET_FORMAT and any(p.exists() for p in leftovers):
            for path in leftovers:  # a migration that stopped after declaring the new format
                path.unlink(missing_ok=True)
            fsync_directory(ca)
            return cls.open(directory)
        if meta.get("format") != OLD_FLEET_FORMAT:
            raise BadFleet(f"{directory} is not a fleet of the old format; nothing to migrate")
        old = {name: _old_key(ca / f"{name}.key.pem", old_passphrase)
               for name in (_ROOT, _DEVICE_CA, _SERVER, _UPDATE)}
        for folder in ("server", "keys"):
            (directory / folder).mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        keys = directory / "keys"
        atomic_write(keys / _ROOT_KEY, seal_key(old[_ROOT], ca_passphrase, _ROOT))
        atomic_write(keys / _DEVICE_CA_KEY, seal_key(old[_DEVICE_CA], ca_passphrase, _DEVICE_CA))
        atomic_write(keys / _UPDATE_KEY, seal_key(old[_UPDATE], update_passphrase, _UPDATE))
        _write_server_key(directory / "server", old[_SERVER], server_passphrase)
        # No bundle was issued with a next pin yet (the old format is refused): a run
        # after a crash may replace this one freely.
        _write_next_server_key(keys, ca, _new_key(), ca_passphrase)
        # The new format is declared only once every key is in its new place ...
        atomic_write(
            directory / FLEET_FILE,
            _fleet_json(meta["fleet_id"], tuple(meta["server_names"]),
                        datetime.fromisoformat(meta["created"])),
        )
        # ... and only then do the old, weakly protected copies go.
        for name in old:
            (ca / f"{name}.key.pem").unlink()
        fsync_directory(ca)
        return cls.open(directory)

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
        ca: bytes | SigningToken,
        now: datetime | None = None,
        limits: EnrolmentLimits = DEFAULT_ENROLMENT_LIMITS,
        *,
        report_interval: float | None = None,
        cohort: str | None = None,
        product_class: str | None = None,
    ) -> DeviceBundle:
        """Enrol the device whose enrolment request this is, and return its bundle.

        ``cohort``: the device's rollout cohort (None: none), recorded with it.
        ``product_class`` (optional) is the product the fleet decides the device is: it
        is recorded with the device and goes into its bundle, with the update
        repository's trusted root (if the fleet has one), for signed updates.

        ``report_interval`` is the device's declared schedule (seconds between its
        reports; default: the fleet's), recorded with the device: the fleet server derives
        the device's rate limit from it.

        Raises:
            BadSchedule: ``report_interval`` is out of bounds (nothing is recorded).
            BadEnrolmentRequest: the request is refused (see ``parse_enrolment_request``).
            AlreadyEnrolled: the device is already enrolled here (revoked or not).
            WrongPassphrase: the CA passphrase does not open the device CA key.
            BadFleet: the device CA is not valid at ``now``, or its key does not match.
            Misuse: naive ``now`` or empty passphrase.

        ``ca`` is the device CA: its passphrase (the key is opened from ``keys/``), or a
        token from :meth:`device_ca_token` (open it once to enrol many devices).
        """
        now = _utc_now(now)
        interval = check_report_interval(
            self.report_interval if report_interval is None else report_interval)
        if cohort is not None:
            check_cohort(cohort)
        if product_class is not None and not is_product_class(product_class):
            raise BadFleet(f"product class {str(product_class)[:80]!r} is not a name "
                           "(letters, digits, _.-; up to 64)")
        if isinstance(ca, bytes):
            _check_passphrase(ca)
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
        ca_key = self.device_ca_token(ca) if isinstance(ca, bytes) else ca
        # Before anything is recorded: a damaged update repository refuses the enrolment
        # instead of leaving an enrolled device without a bundle.
        update_root = self.update_trusted_root()
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
            atomic_write(staging / STATUS_FILE,
                         self._status(device_id, now, None, interval, cohort, product_class))
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
        return self._bundle(device_id, certificates, self.device_ca, product_class, update_root)

    def update_trusted_root(self) -> bytes | None:
        """The update repository's newest root (``N.root.json`` bytes), None without one."""
        from tinyward.fleet.update_repo import UpdateRepository

        repo = UpdateRepository(self.directory)
        return repo.trusted_root() if repo.exists else None

    def _bundle(
        self, device_id: str, certificates: dict[str, x509.Certificate],
        device_ca: x509.Certificate, product_class: str | None = None,
        update_root: bytes | None = None,
    ) -> DeviceBundle:
        pins = self.server_pins
        return DeviceBundle(
            device_id=device_id,
            fleet_id=self.fleet_id,
            certificates={p: _pem(c).decode("ascii") for p, c in certificates.items()},
            device_ca_pem=_pem(device_ca).decode("ascii"),
            root_ca_pem=_pem(self.root_ca).decode("ascii"),
            server_spki_sha256=pins[0],
            server_next_spki_sha256=pins[1] if len(pins) > 1 else None,
            update_root=update_root,
            product_class=product_class,
        )

    def bundle(self, device_id: str) -> DeviceBundle:
        """The bundle of an enrolled device, made again from the fleet's records with the
        fleet's pins of today (after a rotation: the promoted key and the fresh next one).
        No passphrase: a bundle is public material, and nothing new is issued.

        Raises:
            UnknownDevice: malformed ID, or no such device in this fleet.
            RevokedDevice: the device was revoked; it gets no bundle.
            UntrustedCertificate: the device CA that issued it was retired.
        """
        device = self.device(device_id)
        if device.revoked:
            raise RevokedDevice(f"device {device_id} is revoked in fleet {self.fleet_id}; "
                                "it gets no bundle")
        for device_ca in self.device_cas:  # the one that issued it, current or retiring
            try:
                for cert in device.certificates.values():
                    cert.verify_directly_issued_by(device_ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return self._bundle(device_id, device.certificates, device_ca, device.product_class,
                                self.update_trusted_root())
        raise UntrustedCertificate(f"the device CA that issued device {device_id}'s "
                                   "certificates is no longer trusted (retired)")

    @staticmethod
    def _status(device_id: str, enrolled_at: datetime, revoked_at: datetime | None,
                report_interval: float | None, cohort: str | None = None,
                product_class: str | None = None,
                quarantined_at: datetime | None = None) -> bytes:
        document: dict[str, Any] = {
            "format": STATUS_FORMAT,
            "device_id": device_id,
            "enrolled_at": enrolled_at.isoformat(),
            "revoked": revoked_at is not None,
            "revoked_at": None if revoked_at is None else revoked_at.isoformat(),
        }
        # Optional (same format): a device enrolled before schedules has none, and older
        # readers ignore it.
        if report_interval is not None:
            document["report_interval"] = report_interval
        if cohort is not None:  # optional too
            document["cohort"] = cohort
        if product_class is not None:  # optional too: devices enrolled before have none
            document["product_class"] = product_class
        if quarantined_at is not None:  # optional too: absent means "not quarantined"
            document["quarantined_at"] = quarantined_at.isoformat()
        return _json_bytes(document)

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
            declared = status.get("report_interval")
            interval = None if declared is None else check_report_interval(declared)
            cohort = status.get("cohort")
            if cohort is not None:
                check_cohort(cohort)
            product_class = status.get("product_class")
            if product_class is not None and not is_product_class(product_class):
                raise ValueError("product_class is not a name")
            quarantined = status.get("quarantined_at")
            quarantined_at = (None if quarantined is None
                              else datetime.fromisoformat(quarantined))
            certificates = {
                purpose: x509.load_pem_x509_certificate((path / f"{purpose}.cert.pem").read_bytes())
                for purpose in PURPOSES
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError, BadSchedule,
                BadRollout) as error:
            raise BadFleet(f"the files of device {device_id} are damaged ({error})") from None
        return EnrolledDevice(device_id, certificates, revoked, enrolled_at, revoked_at,
                              interval, cohort, product_class, quarantined_at)

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
            self._status(device_id, device.enrolled_at, now, device.report_interval,
                         device.cohort, device.product_class, device.quarantined_at),
        )

    def set_schedule(self, device_id: str, report_interval: float) -> EnrolledDevice:
        """Record a new declared schedule for a device (an administrator's decision: the
        device's own ``device run --interval`` must match it). A running server applies it
        at the device's next request (the status file is re-read when it changes).

        Raises:
            BadSchedule: out of bounds (nothing is changed).
            UnknownDevice: malformed ID, or no such device in this fleet.
            BadFleet: the device's files are damaged.
        """
        interval = check_report_interval(report_interval)
        device = self.device(device_id)
        atomic_write(
            self._device_path(device_id) / STATUS_FILE,
            self._status(device_id, device.enrolled_at, device.revoked_at, interval,
                         device.cohort, device.product_class, device.quarantined_at),
        )
        return self.device(device_id)

    def set_cohort(self, device_id: str, cohort: str | None) -> EnrolledDevice:
        """Put a device in a rollout cohort (None: in none). Rollouts read it at the
        device's next request (a running server re-reads a changed status file).

        Raises:
            BadRollout: not a cohort name (nothing is changed).
            UnknownDevice: malformed ID, or no such device in this fleet.
            BadFleet: the device's files are damaged.
        """
        if cohort is not None:
            check_cohort(cohort)
        device = self.device(device_id)
        atomic_write(
            self._device_path(device_id) / STATUS_FILE,
            self._status(device_id, device.enrolled_at, device.revoked_at,
                         device.report_interval, cohort,
                         device.product_class, device.quarantined_at),
        )
        return self.device(device_id)

    def quarantine(self, device_id: str, now: datetime | None = None) -> EnrolledDevice:
        """Quarantine a device: it still connects and its reports are still verified and
        stored (they are evidence), but it is offered no update until :meth:`release`.
        Quarantining twice keeps the first time. A running server sees it at the device's
        next request (a changed status file is re-read).

        Raises:
            UnknownDevice: malformed ID, or no such device in this fleet.
            BadFleet: the device's files are damaged.
        """
        device = self.device(device_id)
        if device.quarantined:
            return device
        atomic_write(
            self._device_path(device_id) / STATUS_FILE,
            self._status(device_id, device.enrolled_at, device.revoked_at,
                         device.report_interval, device.cohort, device.product_class,
                         _utc_now(now)),
        )
        return self.device(device_id)

    def release(self, device_id: str) -> EnrolledDevice:
        """End a device's quarantine (a no-op if it is not quarantined).

        Raises:
            UnknownDevice: malformed ID, or no such device in this fleet.
            BadFleet: the device's files are damaged.
        """
        device = self.device(device_id)
        if not device.quarantined:
            return device
        atomic_write(
            self._device_path(device_id) / STATUS_FILE,
            self._status(device_id, device.enrolled_at, device.revoked_at,
                         device.report_interval, device.cohort, device.product_class),
        )
        return self.device(device_id)

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

    def _check_with_device_cas(self, cert: x509.Certificate, purpose: str, now: datetime) -> str:
        # The current device CA first; retiring ones (same name, other key) after it.
        first: BadCertificate | None = None
        for device_ca in self.device_cas:
            try:
                return check_device_certificate(cert, purpose, device_ca, now)
            except UntrustedCertificate as error:
                first = first or error
        if first is None:  # not an assert: it must hold under python -O too
            raise Misuse("a fleet has at least one device CA")
        raise first

    def verified_device(
        self, cert: x509.Certificate, purpose: str, now: datetime | None = None
    ) -> EnrolledDevice:
        """:meth:`verify_device_certificate`, returning the device as read from disk for the
        check (a caller that caches device data needs not read it again)."""
        now = _utc_now(now)
        if purpose not in PURPOSE_EKU:
            raise Misuse(f"unknown purpose {purpose!r}; expected one of {', '.join(PURPOSES)}")
        device_id = self._check_with_device_cas(cert, purpose, now)
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
