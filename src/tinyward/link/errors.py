"""Errors of the device link.

:class:`LinkError` and its subclasses are trouble from outside — a server that fails the
chain or the pin, an answer that makes no sense, a damaged queue record — so they derive
from :class:`~tinyward.errors.BadInput`. A server that cannot be reached is
:class:`ServerUnreachable`: the runner keeps the report and tries again later.
"""

from tinyward.errors import BadInput

# One instance per device folder in every mode: the lock and its error live in the trusted
# core (trust/instance.py); re-exported here for the link's callers.
from tinyward.trust.instance import DeviceBusy


class LinkError(BadInput):
    """Base class of refusals by the device link."""


class ServerUnreachable(LinkError):
    """The fleet server could not be reached or the connection broke (retry later)."""


class ServerRefused(LinkError):
    """The TLS handshake with the server failed: its certificate chain is not the fleet's,
    it does not name the host, or it did not accept this device's certificate."""


class PinMismatch(ServerRefused):
    """The server's certificate chains to the fleet CA but carries another public key
    than the pinned one: a man in the middle holding a certificate the CA issued."""


class BadServerAnswer(LinkError):
    """The server answered something that is not a valid acknowledgement."""


class ReportRejected(LinkError):
    """The server refused one report for good (a 4xx about the report itself)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class QueueDamaged(LinkError):
    """The store-and-forward queue's records in protected storage do not make sense."""




__all__ = ["BadServerAnswer", "DeviceBusy", "LinkError", "PinMismatch", "QueueDamaged",
           "ReportRejected", "ServerRefused", "ServerUnreachable"]
