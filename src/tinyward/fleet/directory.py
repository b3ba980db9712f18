"""The fleet server's view of enrolled devices: a caching adapter over :class:`Fleet`.

:class:`~tinyward.fleet.pki.Fleet` reads certificates from disk on every call, which is
right for the CLI and too slow for a server verifying thousands of reports a second. This
adapter keeps what cannot change and re-reads what can:

- report keys by device ID: a device's certificates never change after enrolment, so
  they are cached for the life of the process;
- TLS identities by certificate (DER bytes): the chain, validity and purpose check of
  ``Fleet.verify_device_certificate`` runs once per certificate and is cached until the
  certificate expires;
- revocation: re-checked on *every* request, cheaply — the device's status file is only
  re-read when its modification time changes, so ``tinyward fleet revoke`` takes effect
  on the next request without a restart;
- the declared report schedule (:meth:`FleetDirectory.report_interval`) and the rollout
  cohort (:meth:`FleetDirectory.cohort`): read from the same status file at the same
  moments (first lookup, and whenever it changes, e.g. by ``tinyward fleet set-schedule``
  or ``set-cohort``), never from disk per report.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.fleet.errors import BadCertificate, RevokedDevice, UnknownDevice
from tinyward.fleet.pki import STATUS_FILE, EnrolledDevice, Fleet
from tinyward.fleet.profiles import device_id_of_certificate
from tinyward.trust.identity import is_device_id

_MAX_CACHED = 100_000


class FleetDirectory:
    """Implements :class:`tinyward.fleet.ingest.DeviceDirectory` for a fleet folder."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._devices_dir = str(fleet.devices_path)
        self._lock = threading.Lock()
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        # device -> (status file version, revoked)
        self._revoked: dict[str, tuple[tuple[int, int], bool]] = {}
        self._schedules: dict[str, float | None] = {}  # device -> declared report interval
        self._cohorts: dict[str, str | None] = {}  # device -> rollout cohort
        self._quarantined: dict[str, bool] = {}  # device -> quarantined
        self._tls: dict[bytes, tuple[str, datetime]] = {}  # DER -> (device ID, not after)

    def report_key(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        """The device's report key, or None if it is not enrolled (or its ID is malformed)."""
        key = self._keys.get(device_id)
        if key is None:
            try:
                self._remember(self.fleet.device(device_id), self._status_version(device_id))
            except UnknownDevice:
                return None
            key = self._keys[device_id]
        return key

    def is_revoked(self, device_id: str) -> bool:
        """True if the device is revoked. Unknown devices are not "revoked" (see report_key)."""
        version = self._status_version(device_id)
        if version is None:
            return False
        cached = self._revoked.get(device_id)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            device = self.fleet.device(device_id)
        except UnknownDevice:
            return False
        self._remember(device, version)
        return device.revoked

    def report_interval(self, device_id: str) -> float | None:
        """The device's declared seconds between reports, as last read from its status file
        (None: not read yet, or enrolled before schedules were recorded). No disk access:
        :meth:`tls_identity` and :meth:`is_revoked`, which every request runs first, keep
        it current."""
        return self._schedules.get(device_id)

    def cohort(self, device_id: str) -> str | None:
        """The device's rollout cohort as last read from its status file (None: none, or
        not read yet); kept current like :meth:`report_interval`."""
        return self._cohorts.get(device_id)

    def is_quarantined(self, device_id: str) -> bool:
        """True if the device is quarantined, as last read from its status file (False:
        not, or not read yet); kept current like :meth:`report_interval`."""
        return self._quarantined.get(device_id, False)

    def _status_version(self, device_id: str) -> tuple[int, int] | None:
        """Which version of the device's status file is on disk (None: no such file)."""
        if not is_device_id(device_id):  # it becomes part of a path
            return None
        try:
            # A plain string path: pathlib costs more than the stat itself (runs per request).
            stat = os.stat(f"{self._devices_dir}/{device_id}/{STATUS_FILE}")
        except (OSError, ValueError):
            return None
        # Status files are replaced atomically (new inode), so inode + mtime spot any change.
        return (stat.st_ino, stat.st_mtime_ns)

    def _remember(self, device: EnrolledDevice, version: tuple[int, int] | None) -> None:
        """Cache what one read of a device's files told: its report key and, tagged with the
        status file version seen *before* the read, its revocation (a later change shows as
        a new version and is read again)."""
        with self._lock:
            if len(self._keys) >= _MAX_CACHED:
                self._keys.clear()
                self._revoked.clear()
                self._schedules.clear()
                self._cohorts.clear()
                self._quarantined.clear()
            self._keys[device.device_id] = device.public_key("report")
            self._schedules[device.device_id] = device.report_interval
            self._cohorts[device.device_id] = device.cohort
            self._quarantined[device.device_id] = device.quarantined
            if version is not None:
                self._revoked[device.device_id] = (version, device.revoked)

    def tls_identity(self, der: bytes, now: datetime | None = None) -> str:
        """The device ID of a verified TLS client certificate (DER), checked for purpose ``tls``.

        Raises:
            BadCertificate: (and its subclasses) not a valid ``tls`` certificate of an
                enrolled device of this fleet; RevokedDevice if the device is revoked.
            UnknownDevice: the certificate's device is not enrolled.
        """
        now = now or datetime.now(UTC)
        cached = self._tls.get(der)
        if cached is not None and now <= cached[1]:
            device_id = cached[0]
        else:
            try:
                cert = x509.load_der_x509_certificate(der)
            except ValueError:
                raise BadCertificate("the TLS client certificate cannot be parsed") from None
            # The status version is read before the device's files (see _remember); the ID
            # it needs is only the certificate's claim, which verified_device then checks.
            version = self._status_version(device_id_of_certificate(cert))
            device = self.fleet.verified_device(cert, "tls", now)
            device_id = device.device_id
            self._remember(device, version)
            with self._lock:
                if len(self._tls) >= _MAX_CACHED:
                    self._tls.clear()
                self._tls[der] = (device_id, cert.not_valid_after_utc)
        if self.is_revoked(device_id):
            raise RevokedDevice(f"device {device_id} has been revoked")
        return device_id
