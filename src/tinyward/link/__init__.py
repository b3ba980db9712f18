"""The device's link to its fleet: outbound only, pinned, mutually authenticated TLS.

:class:`DeviceRunner` is a connected device's loop: results from a
:class:`~tinyward.app.results.ResultSource` become constant-rate, fixed-size signed
reports (:class:`Shaper`), numbered and kept in protected storage (:class:`ReportQueue`)
before :class:`ReportLink` posts them; nothing is lost across crashes. Typical use::

    import threading
    from tinyward.link import DeviceRunner, RunnerConfig, SimulatedSensor
    from tinyward.trust import Device

    runner = DeviceRunner(Device.open(Path("dev1")), "https://fleet.example:8443",
                          RunnerConfig(), SimulatedSensor())
    stats = runner.run(threading.Event(), duration=60.0)

Names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinyward._lazy import exports

if TYPE_CHECKING:
    from tinyward.link.client import LinkConfig, ReportLink, ServerURL, device_context
    from tinyward.link.errors import (
        DeviceBusy,
        LinkError,
        PinMismatch,
        ReportRejected,
        ServerRefused,
        ServerUnreachable,
    )
    from tinyward.link.queue import QueueConfig, ReportQueue
    from tinyward.link.runner import DeviceRunner, RunnerConfig, RunStats, SimulatedSensor
    from tinyward.link.shaper import Shaper, ShaperConfig, bandwidth_bytes_per_hour

_EXPORTS: dict[str, tuple[str, ...]] = {
    "runner": ("DeviceRunner", "RunnerConfig", "RunStats", "SimulatedSensor"),
    "client": ("LinkConfig", "ReportLink", "ServerURL", "device_context"),
    "queue": ("ReportQueue", "QueueConfig"),
    "shaper": ("Shaper", "ShaperConfig", "bandwidth_bytes_per_hour"),
    "errors": (
        "LinkError", "ServerUnreachable", "ServerRefused", "PinMismatch", "ReportRejected",
        "DeviceBusy",
    ),
}

__all__ = [
    "DeviceBusy",
    "DeviceRunner",
    "LinkConfig",
    "LinkError",
    "PinMismatch",
    "QueueConfig",
    "ReportLink",
    "ReportQueue",
    "ReportRejected",
    "RunStats",
    "RunnerConfig",
    "ServerRefused",
    "ServerURL",
    "ServerUnreachable",
    "Shaper",
    "ShaperConfig",
    "SimulatedSensor",
    "bandwidth_bytes_per_hour",
    "device_context",
]

__getattr__, __dir__ = exports(globals(), _EXPORTS)
