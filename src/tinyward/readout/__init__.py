"""The local readout: what an air-gapped ML sensor shows, and to whom.

- :func:`run_air_gapped` — the device loop with no network at all, enforced by the kernel.
- :class:`DisplayState` — the latest results kept for the display, in protected storage.
- :class:`ReadoutScreen` — the terminal stand-in for the e-ink display, locked until the
  reader authenticates (:class:`tinyward.trust.ReadoutGate`).
- :func:`make_offline_report` and :func:`to_text` — a signed report carried out as a QR
  code (``TW1:`` text, :mod:`tinyward.readout.carrier`); a fleet checks it with
  :func:`tinyward.fleet.verify_offline`. No module here imports fleet code.

Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyward._lazy import exports

if TYPE_CHECKING:
    from tinyward.readout.airgapped import run_air_gapped
    from tinyward.readout.carrier import OFFLINE_REPORT_SIZE, BadOfflineText, from_text, to_text
    from tinyward.readout.offline import make_offline_report
    from tinyward.readout.screen import ReadoutScreen
    from tinyward.readout.state import DisplayState

_EXPORTS: dict[str, tuple[str, ...]] = {
    "airgapped": ("run_air_gapped",),
    "state": ("DisplayState",),
    "screen": ("ReadoutScreen",),
    "offline": ("make_offline_report",),
    "carrier": ("to_text", "from_text", "BadOfflineText", "OFFLINE_REPORT_SIZE"),
}

__all__ = [
    "OFFLINE_REPORT_SIZE",
    "BadOfflineText",
    "DisplayState",
    "ReadoutScreen",
    "from_text",
    "make_offline_report",
    "run_air_gapped",
    "to_text",
]

__getattr__, __dir__ = exports(globals(), _EXPORTS)
