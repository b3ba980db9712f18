"""Errors of the fleet PKI and enrolment.

Two families, as everywhere in tinyward (``tinyward.errors``):

- :class:`~tinyward.errors.BadInput`: something from outside was refused — an enrolment
  request, a bundle, a certificate, a passphrase, a damaged fleet folder. One class per
  kind of refusal, so that tests (and callers) can tell them apart.
- :class:`~tinyward.errors.Misuse`: the caller asked for something the API does not allow
  (an unknown purpose, overwriting a fleet, a naive datetime).
"""

from __future__ import annotations

from tinyward.errors import BadInput, StateError, TinywardError


class BadEnrolmentRequest(BadInput):
    """An enrolment request (three CSRs in one PEM file) was refused; the message says why."""


class BadBundle(BadInput):
    """A device bundle (the JSON answer to an enrolment) was refused; the message says why."""


class AlreadyEnrolled(BadInput):
    """The device in the request is already enrolled in this fleet."""


class UnknownDevice(BadInput):
    """No device with this ID is enrolled in this fleet (or the ID is malformed)."""


class WrongPassphrase(BadInput):
    """The passphrase does not decrypt the fleet's private keys."""


class BadFleet(BadInput):
    """The folder is not a tinyward fleet, or its files are damaged."""


class BadCertificate(BadInput):
    """A device certificate was refused (base class of the specific refusals below)."""


class UntrustedCertificate(BadCertificate):
    """The certificate was not issued by this fleet's device CA."""


class CertificateExpired(BadCertificate):
    """The certificate (or the CA that issued it) is past its validity period."""


class CertificateNotYetValid(BadCertificate):
    """The certificate (or the CA that issued it) is not valid yet at the given time."""


class WrongPurpose(BadCertificate):
    """The certificate is not for the purpose it was presented for."""


class RevokedDevice(BadCertificate):
    """The device that holds the certificate has been revoked."""


class FleetExists(StateError):
    """``Fleet.init`` was pointed at a folder that already holds a fleet or other files."""


class WeakPassphrase(BadInput):
    """A new passphrase was refused as too weak (the message says which rule it broke)."""


class OldFleetFormat(BadFleet):
    """The fleet was made by an older tinyward (one passphrase, PBKDF2); migrate it."""


class CannotListen(TinywardError):
    """The fleet server cannot listen where it was asked to (port in use, no such address)."""


class BadSchedule(BadInput):
    """A device's declared report schedule is outside the fleet's bounds (or not a number)."""


class BadRollout(BadInput):
    """A rollout was refused (bad target, percentage, cohort, threshold) or its record
    in FLEET_DIR/updates/rollouts.json is damaged; the message says which."""


class UnknownRollout(BadInput):
    """No rollout with this ID exists in the fleet."""


class RolloutConflict(StateError):
    """The rollout cannot do that in its state (widen a halted one, resume a running one,
    start a second one for a component)."""
