"""Verify a device's attestation token against a fleet: which device, still trusted, fresh.

The token codec (:mod:`tinyward.trust.attestation`) verifies a token with a key the caller
chooses. This module chooses it: it reads the Instance ID from the *unverified* token only
to look the device up in the fleet, then checks the device's attestation certificate
(issued by this fleet, right purpose, not revoked, in date) and verifies the token with
that certificate's key and the caller's nonce. Nothing in the token is trusted before its
signature verifies.
"""

from __future__ import annotations

from datetime import datetime

from tinyward.fleet.errors import RevokedDevice, UnknownDevice
from tinyward.fleet.pki import EnrolledDevice, Fleet
from tinyward.trust.attestation import PsaClaims, peek_instance_id, verify_token
from tinyward.trust.errors import BadClaim
from tinyward.trust.identity import device_id_from_instance_id


def verify_fleet_token(
    fleet: Fleet, token: bytes, nonce: bytes, now: datetime | None = None
) -> tuple[EnrolledDevice, PsaClaims]:
    """Return the enrolled device and its verified claims.

    Raises the token errors of :func:`tinyward.trust.attestation.verify_token`, and
    :class:`UnknownDevice` (not enrolled here: another fleet's device, or never enrolled),
    :class:`RevokedDevice`, or a certificate error from ``Fleet.verify_device_certificate``.
    """
    instance = peek_instance_id(token)
    try:
        device_id = device_id_from_instance_id(instance)
    except ValueError as error:
        raise BadClaim("instance_id", 256, str(error)) from None
    try:
        enrolled = fleet.device(device_id)
    except UnknownDevice:
        raise UnknownDevice(
            f"the token comes from device {device_id[:16]}…, which is not enrolled in fleet "
            f"{fleet.fleet_id}: a token from another fleet, or a device never enrolled"
        ) from None
    if enrolled.revoked:
        raise RevokedDevice(f"device {device_id[:16]}… has been revoked in this fleet")
    certificate = enrolled.certificates["attestation"]
    fleet.verify_device_certificate(certificate, "attestation", now)
    claims = verify_token(token, enrolled.public_key("attestation"), nonce)
    return enrolled, claims
