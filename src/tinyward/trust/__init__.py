"""The trusted core: the only code that touches a device's secrets.

A device builder starts here. :class:`Device` is a device folder (keys generated on the
device, enrolment request, the fleet's bundle installed); its keystore signs reports and
attestation tokens and never hands out private key bytes; protected storage keeps
records authenticated, encrypted and safe from rollback. Pure helpers encode and verify
the signed report (:func:`encode_report`, :func:`verify_report`) and apply the replay
rule (:func:`is_replay`). :class:`InstanceLock` keeps a device folder to one running
process (a second one gets :class:`DeviceBusy`). Typical use::

    from tinyward.trust import Device, Report, encode_report

    device = Device.open(Path("dev1"))                 # or Device.init(...) once
    report = Report(device_id=device.device_id, seq=1, timestamp=now, mode="connected",
                    results=(), incidents={}, health="ok")
    signed = encode_report(report, device.signer("report"))

Every error derives from :class:`tinyward.errors.TinywardError`. The core's size is
published: ``tinyward tcb`` (docs/trust.md). Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyward._lazy import exports

if TYPE_CHECKING:
    from tinyward.trust.airgap import forbid_network, network_is_forbidden
    from tinyward.trust.attestation import decode_claims, encode_token, verify_token
    from tinyward.trust.device import (
        AlreadyProvisioned,
        BundleMismatch,
        Device,
        DeviceExists,
        FleetTrust,
        NotADevice,
        NotProvisioned,
    )
    from tinyward.trust.errors import RecordMissing, StorageError, TrustError
    from tinyward.trust.instance import DeviceBusy, InstanceLock, RunningInstance, running_instance
    from tinyward.trust.keystore import KeyHandle, Keystore, KeyUsage
    from tinyward.trust.lockout import LockoutPolicy
    from tinyward.trust.psa_claims import PsaClaims, TokenConfig
    from tinyward.trust.readout import ReadoutGate
    from tinyward.trust.replay import is_replay
    from tinyward.trust.report import (
        BadReportSignature,
        MalformedReport,
        Report,
        ReportError,
        ReportLimits,
        UnverifiedReport,
        decode_report,
        encode_report,
        peek_device_id,
        verify_report,
    )
    from tinyward.trust.rot import FileRootOfTrust, RootOfTrust
    from tinyward.trust.storage import ProtectedStorage, StorageLimits

_EXPORTS: dict[str, tuple[str, ...]] = {
    "device": (
        "Device", "FleetTrust", "NotADevice", "DeviceExists", "AlreadyProvisioned",
        "NotProvisioned", "BundleMismatch",
    ),
    "keystore": ("Keystore", "KeyHandle", "KeyUsage"),
    "storage": ("ProtectedStorage", "StorageLimits"),
    "rot": ("RootOfTrust", "FileRootOfTrust"),
    "report": (
        "Report", "ReportLimits", "UnverifiedReport", "encode_report", "decode_report",
        "verify_report", "peek_device_id", "ReportError", "MalformedReport", "BadReportSignature",
    ),
    "replay": ("is_replay",),
    "attestation": ("encode_token", "verify_token", "decode_claims"),
    "psa_claims": ("PsaClaims", "TokenConfig"),
    "readout": ("ReadoutGate",),
    "lockout": ("LockoutPolicy",),
    "airgap": ("forbid_network", "network_is_forbidden"),
    "instance": ("InstanceLock", "RunningInstance", "running_instance", "DeviceBusy"),
    "errors": ("TrustError", "StorageError", "RecordMissing"),
}

__all__ = [
    "AlreadyProvisioned",
    "BadReportSignature",
    "BundleMismatch",
    "Device",
    "DeviceBusy",
    "DeviceExists",
    "FileRootOfTrust",
    "FleetTrust",
    "InstanceLock",
    "KeyHandle",
    "KeyUsage",
    "Keystore",
    "LockoutPolicy",
    "MalformedReport",
    "NotADevice",
    "NotProvisioned",
    "ProtectedStorage",
    "PsaClaims",
    "ReadoutGate",
    "RecordMissing",
    "Report",
    "ReportError",
    "ReportLimits",
    "RootOfTrust",
    "RunningInstance",
    "StorageError",
    "StorageLimits",
    "TokenConfig",
    "TrustError",
    "UnverifiedReport",
    "decode_claims",
    "decode_report",
    "encode_report",
    "encode_token",
    "forbid_network",
    "is_replay",
    "network_is_forbidden",
    "peek_device_id",
    "running_instance",
    "verify_report",
    "verify_token",
]

__getattr__, __dir__ = exports(globals(), _EXPORTS)
