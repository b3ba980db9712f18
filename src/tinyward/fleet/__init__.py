"""The fleet: certificate authority, enrolment, the report server and its store.

Runs on the operator's side, never on a device (tests/test_layout.py keeps device
packages from importing it). :class:`Fleet` is a fleet folder (CAs, enrolment records,
revocation); :func:`decide` is the pure ingest rule the server applies to each report;
:func:`verify_offline` checks a report scanned from an air-gapped device's QR code.
The CA and update keys sign through a :class:`SigningToken` (a hardware token can
implement it; :class:`FileSigningKey` is the software stand-in, a key sealed by
:func:`seal_key` under a passphrase that :func:`check_new_passphrase` accepted).
Typical use::

    from tinyward.fleet import Fleet, open_store, verify_offline

    fleet = Fleet.open(Path("fleet"))
    store = open_store("sqlite:///fleet/reports.db")
    try:
        report = verify_offline(fleet, data, store)       # data: the scanned report bytes
    finally:
        store.close()

Names are imported on first use, so ``import tinyward.fleet`` loads no SQLite or server
code by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyward._lazy import exports

if TYPE_CHECKING:
    from tinyward.fleet.attestation import verify_fleet_token
    from tinyward.fleet.bundle import DeviceBundle
    from tinyward.fleet.errors import (
        AlreadyEnrolled,
        BadBundle,
        BadCertificate,
        RevokedDevice,
        UnknownDevice,
        WeakPassphrase,
        WrongPassphrase,
    )
    from tinyward.fleet.ingest import Accept, DeviceDirectory, IngestPolicy, Reject, decide
    from tinyward.fleet.keyseal import ScryptParams, open_key, seal_key
    from tinyward.fleet.offline import ReplayedReport, verify_offline
    from tinyward.fleet.passphrase import check_new_passphrase
    from tinyward.fleet.pki import EnrolledDevice, Fleet
    from tinyward.fleet.server import FleetServer, ServerConfig
    from tinyward.fleet.store import ReportStore, SQLiteStore, open_store
    from tinyward.fleet.tokens import FileSigningKey, SigningToken

_EXPORTS: dict[str, tuple[str, ...]] = {
    "pki": ("Fleet", "EnrolledDevice"),
    "bundle": ("DeviceBundle",),
    "ingest": ("decide", "IngestPolicy", "Accept", "Reject", "DeviceDirectory"),
    "offline": ("verify_offline", "ReplayedReport"),
    "store": ("ReportStore", "SQLiteStore", "open_store"),
    "server": ("FleetServer", "ServerConfig"),
    "attestation": ("verify_fleet_token",),
    "tokens": ("SigningToken", "FileSigningKey"),
    "keyseal": ("seal_key", "open_key", "ScryptParams"),
    "passphrase": ("check_new_passphrase",),
    "errors": (
        "UnknownDevice", "RevokedDevice", "AlreadyEnrolled", "BadCertificate", "BadBundle",
        "WrongPassphrase", "WeakPassphrase",
    ),
}

__all__ = [
    "Accept",
    "AlreadyEnrolled",
    "BadBundle",
    "BadCertificate",
    "DeviceBundle",
    "DeviceDirectory",
    "EnrolledDevice",
    "FileSigningKey",
    "Fleet",
    "FleetServer",
    "IngestPolicy",
    "Reject",
    "ReplayedReport",
    "ReportStore",
    "RevokedDevice",
    "SQLiteStore",
    "ScryptParams",
    "ServerConfig",
    "SigningToken",
    "UnknownDevice",
    "WeakPassphrase",
    "WrongPassphrase",
    "check_new_passphrase",
    "decide",
    "open_key",
    "open_store",
    "seal_key",
    "verify_fleet_token",
    "verify_offline",
]

__getattr__, __dir__ = exports(globals(), _EXPORTS)
