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
  on the next request without a restart.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.fleet.errors import BadCertificate, RevokedDevice, UnknownDevice
from tinyward.fleet.pki import STATUS_FILE, Fleet

_MAX_CACHED = 100_000


class FleetDirectory:
    """Implements :class:`tinyward.fleet.ingest.DeviceDirectory` for a fleet folder."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._lock = threading.Lock()
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._revoked: dict[str, tuple[tuple[int, int], bool]] = {}  # device -> (status file version, revoked)
        self._tls: dict[bytes, tuple[str, datetime]] = {}  # DER -> (device ID, not after)

    def report_key(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        """The device's report key, or None if it is not enrolled (or its ID is malformed)."""
        key = self._keys.get(device_id)
        if key is None:
            try:
                key = self.fleet.device(device_id).public_key("report")
            except UnknownDevice:
                return None
            with self._lock:
                if len(self._keys) >= _MAX_CACHED:
                    self._keys.clear()
                self._keys[device_id] = key
        return key

    def is_revoked(self, device_id: str) -> bool:
        """True if the device is revoked. Unknown devices are not "revoked" (see report_key)."""
        try:
            stat = os.stat(self.fleet.devices_path / device_id / STATUS_FILE)
            # Status files are replaced atomically (new inode), so inode + mtime spot any change.
            mtime = (stat.st_ino, stat.st_mtime_ns)
        except (OSError, ValueError):
            return False
        cached = self._revoked.get(device_id)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            revoked = self.fleet.device(device_id).revoked
        except UnknownDevice:
            return False
        with self._lock:
            if len(self._revoked) >= _MAX_CACHED:
                self._revoked.clear()
            self._revoked[device_id] = (mtime, revoked)
        return revoked

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
            device_id = self.fleet.verify_device_certificate(cert, "tls", now)
            with self._lock:
                if len(self._tls) >= _MAX_CACHED:
                    self._tls.clear()
                self._tls[der] = (device_id, cert.not_valid_after_utc)
        if self.is_revoked(device_id):
            raise RevokedDevice(f"device {device_id} has been revoked")
        return device_id
