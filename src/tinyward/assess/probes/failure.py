"""failure-reporting (live): when the device's application fails and when the device
refuses an attack, its fleet hears of it, for that device (A-FAIL-1).

A tinyward device folder enrolled in a fleet whose server is on loopback, or in the lab
namespace the assessment runs in (``--uplink-port N``), and that fleet's folder
(``--fleet-dir``: its ``reports.db`` is read, read-only). The device's own runner
reports for :data:`RUN_SECONDS` with two things going wrong on the device:

- **a failing application**: the results come from a sandboxed application
  (``assess/data/hostile/hang``, in tinyward's sandbox configured as ``device run``
  configures it) that never returns from one frame; the supervisor kills and restarts it;
- **an attack the device refuses**: its update client (tinyward's, python-tuf) is offered
  an older version than it runs (a rollback, as a compromised fleet or path would offer
  it) and refuses it before fetching anything.

Then the fleet's store is read for the run's reports: the application's failure must show
as an ``app_*`` incident and a ``degraded`` health in a stored report, and the refused
attack as the device's update refusal (``upd.why``, the devices table's ``upd_why``).

The supervisor publishes faults per fault window (60 s on a device, so that the
application cannot signal through its faults faster than that); the probe shortens it to
:data:`FAULT_WINDOW` s so the run is short: the window delays what is reported, it does
not decide whether it is.

Pass: both reached the fleet. Fail: either happened on the device (its own records say
so) and the fleet's record of the run lacks it. Not-tested: no fleet folder or uplink
port, no report of the run stored, or nothing failed on the device (the sandbox did not
start the app). Not covered: the fleet noticing a device that went quiet (its quiet-device
incident needs minutes of silence).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.probes.outage import (
    StoredRun,
    StoreUnreadable,
    quiet_device_logs,
    read_store,
    uplink_device,
)
from tinyward.assess.target import Target

NAME = "failure-reporting"
RUN_SECONDS = 8.0
DRAIN_SECONDS = 10.0
INTERVAL = 0.25
FAULT_WINDOW = 1.0
TRIGGER = 666
APP = "hang"


@dataclass(frozen=True)
class Observed:
    """``app_failed``: the failures the device's supervisor recorded (its own, detailed
    kinds; empty: the app never failed); ``refused``: the update client's refusal code
    (None: it refused nothing); ``stored``: the fleet's record of the run."""

    app_failed: dict[str, int]
    refused: str | None
    stored: StoredRun | None
    note: str = ""


def verdict(seen: Observed, context: Context, where: str = "") -> list[Evidence]:
    """From the device's own records and the fleet's (pure)."""
    stored = seen.stored
    if stored is None or not stored.seqs:
        return for_all(context, NAME, "not-tested", "live",
                       f"no report of the run reached the fleet's store: {seen.note}", where)
    app_kinds = {k: n for k, n in stored.incidents.items() if k.startswith("app_")}
    degraded = sum(1 for h in stored.health.values() if h == "degraded")
    facts = (f"on the device: application failures {seen.app_failed or 'none'}, update "
             f"refusal {seen.refused or 'none'}; at the fleet, of {len(stored.seqs)} reports: "
             f"{degraded} degraded, incidents {app_kinds or 'none'}, update refusal "
             f"{stored.update_why or 'none'}")
    problems = []
    if seen.app_failed and not app_kinds:
        problems.append("the application's failure is in no incident the fleet stored")
    if seen.app_failed and not degraded:
        problems.append("no stored report says the device was degraded")
    if seen.refused and stored.update_why != seen.refused:
        problems.append(f"the refused update attack ({seen.refused}) is not in the fleet's "
                        "record of the device")
    if problems:
        return for_all(context, NAME, "fail", "live", "; ".join(problems) + f" ({facts})",
                       where)
    if not seen.app_failed or not seen.refused:
        return for_all(context, NAME, "not-tested", "live",
                       f"not everything the probe provoked happened on the device: {facts}",
                       where)
    return for_all(context, NAME, "pass", "live",
                   f"the failing application and the refused attack both reached the fleet "
                   f"for this device: {facts}", where)


class _Silent:
    """A device that keeps its failures to itself (the tests' control): results pass,
    incidents and health do not."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.healthy = True

    def take(self, now: float) -> list[Any]:
        result: list[Any] = self.source.take(now)
        return result

    def next_time(self) -> float | None:
        return None

    def incidents(self) -> dict[str, int]:
        return {}


def _frames(manifest: Any) -> Iterator[Any]:
    """Ordinary frames, the attack frame third, then ordinary frames for ever (a finished
    feed would itself make the device unhealthy)."""
    import numpy as np

    shape, dtype = tuple(manifest.input.frame_shape), manifest.input.dtype
    for i in itertools.count():
        frame = np.full(shape, 100, dtype=dtype)
        if i == 2:
            frame[0, 0] = TRIGGER
        yield frame


def _refusing_client(device: Any, scratch: Path) -> Any:
    """tinyward's update client, running model 1.1.0, offered 1.0.0: refused at once."""
    from tinyward.lab.tufrepo import PRODUCT, TufRepo
    from tinyward.update.client import UpdateClient
    from tinyward.update.meta import Offer, Version

    running = {"model": Version(1, 1, 0)}
    root = TufRepo(scratch / "repo").root_bytes  # never fetched from
    client = UpdateClient(device_id=device.device_id, trusted_root=root,
                          product_class=PRODUCT, workdir=scratch / "client",
                          on_verified=lambda *args: None, installed=running.get)
    client.offer(Offer("model", "model-1.0.0.bin", Version(1, 0, 0)))
    return client


def observe(device: Any, port: int, fleet_dir: Path, *, host: str = "127.0.0.1",
            seconds: float = RUN_SECONDS, unsafe_silent: bool = False) -> Observed:
    """Run the device with a failing app and a refused attack; read what the fleet kept."""
    from tinyward.app.manifest import load_manifest
    from tinyward.app.sandbox import SandboxConfig
    from tinyward.app.source import AppResultSource
    from tinyward.app.supervisor import SupervisorConfig
    from tinyward.assess.hostile_apps import copy_app
    from tinyward.link.client import LinkConfig
    from tinyward.link.runner import DeviceRunner, RunnerConfig
    from tinyward.link.shaper import ShaperConfig

    scratch = Path(tempfile.mkdtemp(prefix="tinyward-failure-probe-", dir="/tmp"))
    client = _refusing_client(device, scratch / "update")
    source: Any = None
    try:
        scratch.chmod(0o755)  # the sandbox user must reach the app
        app = copy_app(APP, scratch / APP)
        (app / "target.json").write_text("{}")  # the app's "model": it aims at nothing
        (app / "target.json").chmod(0o644)
        manifest = load_manifest(app / "sensor.toml")
        source = AppResultSource.start(
            manifest, _frames(manifest),
            SupervisorConfig(fault_window_s=FAULT_WINDOW, backoff_initial_s=0.5),
            sandbox_config=SandboxConfig(secret_paths=(Path(device.directory),)))
        runner = DeviceRunner(
            device, f"https://{host}:{port}",
            RunnerConfig(shaper=ShaperConfig(interval=INTERVAL), drain=DRAIN_SECONDS,
                         link=LinkConfig(backoff_initial=0.1, backoff_max=1.0)),
            _Silent(source) if unsafe_silent else source,
            update_status=None if unsafe_silent else client.status)
        runner.run(duration=seconds)
        failed = {k: n for k, n in source.local_incidents().items()
                  if k not in ("frames_dropped", "core_errors")}
    finally:
        if source is not None:
            source.close()
        client.close()
        shutil.rmtree(scratch, ignore_errors=True)
    refused = client.last_error.code if client.last_error is not None else None
    if runner.stats.first_seq is None or runner.queue.acked < runner.stats.first_seq:
        return Observed(failed, refused, None, runner.stats.last_error or "nothing acknowledged")
    stored = read_store(fleet_dir, device.device_id, runner.stats.first_seq, runner.queue.acked)
    return Observed(failed, refused, stored)


class FailureReporting:
    name = NAME
    kind = "live"

    def __init__(self, *, seconds: float = RUN_SECONDS, unsafe_silent: bool = False) -> None:
        # ``unsafe_silent``: the control, a device whose reports leave out its failures.
        self.seconds = seconds
        self.unsafe_silent = unsafe_silent

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        from tinyward.app.errors import SandboxError
        from tinyward.errors import TinywardError

        device = uplink_device(target, NAME, context)
        if isinstance(device, list):
            return device
        if target.uplink_port is None or target.fleet_dir is None:  # uplink_device saw them
            raise ValueError("uplink_device let a target without a port or fleet through")
        if budget.left() < self.seconds + DRAIN_SECONDS + 10 or not budget.spend():
            return for_all(context, NAME, "not-tested", "live",
                           f"the time budget ({budget.seconds:.0f} s) leaves no room for a "
                           f"{self.seconds:.0f} s run and its drain")
        fleet_host = (target.uplink or (target.address, 0))[0]
        where = f"tcp://{fleet_host}:{target.uplink_port}, {target.fleet_dir}/reports.db"
        try:
            with quiet_device_logs():
                seen = observe(device, target.uplink_port, target.fleet_dir,
                               host=(target.uplink or ("127.0.0.1", 0))[0], seconds=self.seconds,
                               unsafe_silent=self.unsafe_silent)
        except StoreUnreadable as error:
            return for_all(context, NAME, "not-tested", "live",
                           f"the fleet's store could not be read: {error}", where)
        except (SandboxError, TinywardError) as error:
            return for_all(context, NAME, "not-tested", "live",
                           f"the device did not run: {error}", where)
        return verdict(seen, context, where)


__all__ = ["FailureReporting", "Observed", "observe", "verdict"]
