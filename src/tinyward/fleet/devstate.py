"""A device's state as an operator sees it (pure: no I/O).

One function decides it for every view (the dashboard, ``fleet devices``, the metrics'
devices-by-state gauge, the quiet-device incidents), so they never disagree:

=============  ===============================================================
``revoked``    the fleet revoked its certificates (it can no longer report)
``quarantined`` an administrator quarantined it (reports kept, no updates)
``never``      enrolled, but no report stored yet
``quiet``      it missed its declared schedule: no report for :func:`quiet_after`
``degraded``   its latest report says ``health: degraded``
``ok``         none of the above
=============  ===============================================================

The first that applies wins, in that order: an administrator's decision outranks what the
device says, and a silent device's last word (``ok``) is no longer news.
"""

from __future__ import annotations

from tinyward.fleet.store import DeviceStatus

DEVICE_STATES = ("never", "ok", "degraded", "quiet", "quarantined", "revoked")
#: Seconds of lateness tolerated beyond one interval (network, clock and restart slack).
DEFAULT_GRACE = 30.0


def quiet_after(interval: float, grace: float = DEFAULT_GRACE) -> float:
    """Seconds without a report after which a device on a ``interval``-second schedule is
    quiet: three missed reports, and never less than one interval plus ``grace``."""
    return max(3.0 * interval, interval + grace)


def device_state(status: DeviceStatus | None, *, revoked: bool, quarantined: bool,
                 now: float, interval: float | None, grace: float = DEFAULT_GRACE) -> str:
    """The device's state (one of :data:`DEVICE_STATES`).

    ``status`` is the store's record (None: never reported); ``interval`` its declared
    schedule in seconds (None: none declared, so it is never "quiet"); ``now`` the fleet's
    clock, in the same Unix seconds as ``status.last_received_at``.
    """
    if revoked:
        return "revoked"
    if quarantined:
        return "quarantined"
    if status is None:
        return "never"
    if interval is not None and now - status.last_received_at > quiet_after(interval, grace):
        return "quiet"
    if status.health == "degraded":
        return "degraded"
    return "ok"
