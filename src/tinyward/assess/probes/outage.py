"""outage-recovery (live): the device goes on sensing while its fleet is out of reach,
reconnects by itself when the fleet is back, and every result it sensed reaches the fleet
exactly once, or its loss is declared (A-OUTAGE-1).

A tinyward device folder enrolled in a fleet whose server is on loopback, or in the lab
namespace the assessment runs in (``--uplink-port N``), and that fleet's folder
(``--fleet-dir``: its ``reports.db`` is read, read-only, never written). The device's own
runner (its keys, queue, shaper, link) reports through a proxy the probe owns
(:class:`tinyward.lab.proxy.TCPProxy`), with a simulated sensor whose every event carries
a running number ``n``:

1. **up** (:data:`UP_SECONDS`): reports flow;
2. **outage** (:data:`OUTAGE_SECONDS`): the probe closes the proxy's listener and every
   connection (to the device this is its fleet gone: connections refused), while the
   device keeps sensing;
3. **back**: the proxy listens again; the device must deliver everything it queued and a
   report made after the return within :data:`RECOVERY_SECONDS`, by itself (nobody tells
   it the fleet is back);

then the fleet's store is read: every report the device counts as delivered must be
there, and every event ``n`` the sensor produced (up to the last one stored) must be in
exactly one stored report of this run, or be covered by the device's own count of dropped
results or reports (a declared gap).

Pass: reports made during the outage, all delivered after it without help, every event
stored once or declared lost. Fail: the device stopped sensing during the outage, did not
reconnect in time, or an event is missing undeclared or stored twice. Not-tested: no fleet
folder or uplink port, the device never reached the fleet before the outage, or the
store could not be read. The fleet server itself keeps running: the probe cuts only its
own path to it (stopping someone's fleet is not a probe's business), and a power cut
(the other half of A-OUTAGE-1's statement) is not simulated here
(``tests/update/test_power_cut.py`` covers the update slots').
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target
from tinyward.errors import StateError

NAME = "outage-recovery"
INTERVAL = 0.25  # seconds between reports (shortened from a device's minutes)
UP_SECONDS = 3.0
OUTAGE_SECONDS = 8.0
RECOVERY_SECONDS = 30.0
EVENT_RATE = 2.0  # simulated events per second


@contextlib.contextmanager
def quiet_device_logs() -> Iterator[None]:
    """The device parts' warnings (a refused update, an unreachable fleet) are what the
    probes provoke, and their evidence says so: kept off the assessment's progress lines."""
    loggers = [logging.getLogger(n) for n in ("tinyward.update", "tinyward.link",
                                              "tinyward.app")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# -- the fleet's store, read only ---------------------------------------------------------

class StoreUnreadable(StateError):
    """The fleet folder has no readable report store."""


@dataclass(frozen=True)
class StoredRun:
    """What the fleet stored of one device's reports ``first..last``."""

    seqs: tuple[int, ...]
    health: dict[int, str]
    results: list[Any]
    incidents: dict[str, int]  # summed over the stored reports (what the device declared)
    events: list[tuple[str, int, int | None]]  # incident events (kind, count, seq)
    update_why: str | None


def read_store(fleet_dir: Path, device_id: str, first: int, last: int) -> StoredRun:
    """The fleet's record of reports ``first..last`` of ``device_id`` (read-only SQLite)."""
    import json

    path = Path(fleet_dir) / "reports.db"
    if not path.is_file():
        raise StoreUnreadable(f"{path} does not exist (a fleet on PostgreSQL cannot be read "
                              "by this probe yet)")
    try:
        db = sqlite3.connect(f"file:{path.absolute()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as error:
        raise StoreUnreadable(f"{path}: {error}") from None
    try:
        rows = db.execute("SELECT seq, health, results, incidents FROM reports "
                          "WHERE device_id = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                          (device_id, first, last)).fetchall()
        events = db.execute("SELECT kind, count, seq FROM incident_events WHERE device_id = ?"
                            " AND seq BETWEEN ? AND ? ORDER BY id",
                            (device_id, first, last)).fetchall()
        why = db.execute("SELECT upd_why FROM devices WHERE device_id = ?",
                         (device_id,)).fetchone()
    except sqlite3.Error as error:
        raise StoreUnreadable(f"{path}: {error}") from None
    finally:
        db.close()
    incidents: Counter[str] = Counter()
    results: list[Any] = []
    for _, _, result_text, incident_text in rows:
        results.extend(json.loads(result_text))
        incidents.update({k: int(v) for k, v in json.loads(incident_text).items()})
    return StoredRun(tuple(int(r[0]) for r in rows), {int(r[0]): str(r[1]) for r in rows},
                     results, dict(incidents),
                     [(str(k), int(c), None if s is None else int(s)) for k, c, s in events],
                     None if why is None or why[0] is None else str(why[0]))


def uplink_device(target: Target, probe: str, context: Context) -> Any:
    """The target's tinyward device, or the not-tested evidence saying what is missing."""
    from tinyward.errors import TinywardError

    if target.address is not None and target.netns is None \
            and not ipaddress.ip_address(target.address).is_loopback:
        return for_all(context, probe, "not-tested", "live",
                       "the probe runs the device's link on this machine: its fleet server "
                       "must be on loopback or in the lab namespace the assessment runs in")
    folder = target.device_dir
    if folder is None or not (folder / "device.json").is_file() \
            or target.uplink_port is None or target.address is None \
            or target.fleet_dir is None:
        return for_all(context, probe, "not-tested", "live",
                       "needs a tinyward device folder, its fleet server's device port "
                       "(--uplink-port N) and the fleet folder (--fleet-dir) whose store "
                       "shows what the fleet recorded")
    from tinyward.trust.device import Device

    try:
        return Device.open(folder)
    except TinywardError as error:
        return for_all(context, probe, "not-tested", "live", f"the device folder: {error}")


# -- the verdict (pure) ---------------------------------------------------------------------

@dataclass(frozen=True)
class Outage:
    """What one run showed. ``made_during``: reports the device made while cut off;
    ``reconnected``: seconds from the fleet's return to the last report acknowledged (None:
    not within the limit); ``stored``: the fleet's record of the run's acknowledged reports
    (None: nothing was stored before the outage)."""

    outage_seconds: float
    made_during: int
    reconnected: float | None
    stored: StoredRun | None
    note: str = ""
    recovery: float = RECOVERY_SECONDS
    #: the run's reports the device counts as delivered (first, last): each must be in
    #: the fleet's store, or declared dropped
    delivered: tuple[int, int] = (0, -1)


def verdict(run: Outage, context: Context, where: str = "") -> list[Evidence]:
    if run.stored is None:
        return for_all(context, NAME, "not-tested", "live",
                       f"the device reached no fleet before the outage: {run.note}", where)
    numbers: Counter[int] = Counter(r["n"] for r in run.stored.results
                                    if isinstance(r, dict) and isinstance(r.get("n"), int))
    twice = sorted(n for n, k in numbers.items() if k > 1)
    # Events are numbered 1, 2, … by the sensor; up to the last one stored, each must be
    # there (the ones after it were still on the device when the run stopped).
    last = max(numbers, default=0)
    missing = [n for n in range(1, last + 1) if n not in numbers]
    declared = run.stored.incidents.get("dropped_results", 0) + \
        run.stored.incidents.get("dropped_reports", 0)
    held = set(run.stored.seqs)
    unstored = [q for q in range(run.delivered[0], run.delivered[1] + 1) if q not in held]
    facts = (f"{run.made_during} reports made during a {run.outage_seconds:.0f} s outage; "
             f"events 1-{last} expected, {len(numbers)} stored, {len(missing)} missing, "
             f"{len(twice)} stored twice, {declared} declared lost; reports "
             f"{run.delivered[0]}-{run.delivered[1]} counted delivered, {len(unstored)} of "
             "them not in the fleet's store")
    problems = []
    if run.made_during == 0:
        problems.append("the device made no report while the fleet was out of reach")
    if run.reconnected is None:
        problems.append(f"it did not deliver its queue within {run.recovery:.0f} s of "
                        "the fleet's return")
    if len(unstored) > run.stored.incidents.get("dropped_reports", 0):
        problems.append(f"reports the device counts as delivered are not in the fleet's "
                        f"store, undeclared: {unstored[:10]}"
                        + (" …" if len(unstored) > 10 else ""))
    if twice:
        problems.append(f"events stored twice: {twice[:10]}")
    if len(missing) > declared:
        problems.append(f"events lost and not declared: {missing[:10]}"
                        + (" …" if len(missing) > 10 else ""))
    if problems:
        return for_all(context, NAME, "fail", "live", "; ".join(problems) + f" ({facts})",
                       where)
    return for_all(context, NAME, "pass", "live",
                   f"kept sensing, reconnected by itself and delivered its queue "
                   f"{run.reconnected:.1f} s after the fleet came back, every event once: "
                   f"{facts}", where)


# -- the run --------------------------------------------------------------------------------

#: (device, server URL, config, source) -> a runner (DeviceRunner's shape); the tests'
#: controls pass weaker ones.
RunnerFactory = Callable[..., Any]


def tinyward_runner(device: Any, url: str, config: Any, source: Any) -> Any:
    from tinyward.link.runner import DeviceRunner

    return DeviceRunner(device, url, config, source, record_acks=True)


def run_outage(device: Any, port: int, fleet_dir: Path, *, host: str = "127.0.0.1",
               outage: float = OUTAGE_SECONDS,
               recovery: float = RECOVERY_SECONDS,
               make_runner: RunnerFactory = tinyward_runner, seed: int = 16) -> Outage:
    from tinyward.lab.proxy import TCPProxy
    from tinyward.link.client import LinkConfig
    from tinyward.link.runner import RunnerConfig, SimulatedSensor
    from tinyward.link.shaper import ShaperConfig

    sensor = SimulatedSensor(EVENT_RATE, seed)
    proxy = TCPProxy((host, port))
    config = RunnerConfig(shaper=ShaperConfig(interval=INTERVAL),
                          link=LinkConfig(backoff_initial=0.1, backoff_max=2.0))
    stop = threading.Event()
    runner = make_runner(device, proxy.url, config, sensor)
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True,
                              name="tinyward-outage-probe")
    reconnected: float | None = None
    made_during = 0
    try:
        thread.start()
        deadline = time.monotonic() + UP_SECONDS + 10.0
        time.sleep(UP_SECONDS)
        while runner.stats.delivered == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # a slow first handshake
        if runner.stats.delivered == 0:
            return Outage(outage, 0, None, None,
                          runner.stats.last_error or "no report acknowledged")
        before = runner.stats.generated
        proxy.cut()
        time.sleep(outage)
        made_during = runner.stats.generated - before
        back = time.monotonic()
        # A report made after the fleet's return, acknowledged: everything before it was
        # delivered (the queue is oldest first), and the events it carries bound the run.
        after = (runner.stats.last_seq or 0) + 1
        proxy.restore()
        while time.monotonic() - back < recovery:
            if (runner.stats.last_seq or 0) >= after and runner.queue.acked >= after:
                reconnected = time.monotonic() - back
                break
            time.sleep(0.05)
        stop.set()
        thread.join(30)
    finally:
        stop.set()
        proxy.close()
        thread.join(30)
    # The reports the fleet acknowledged are what its store can be asked for.
    first, acked = runner.stats.first_seq or 0, runner.queue.acked
    stored = read_store(fleet_dir, device.device_id, first, acked)
    return Outage(outage, made_during, reconnected, stored, recovery=recovery,
                  delivered=(first, acked))


class OutageRecovery:
    name = NAME
    kind = "live"

    def __init__(self, *, outage: float = OUTAGE_SECONDS, recovery: float = RECOVERY_SECONDS,
                 make_runner: RunnerFactory = tinyward_runner) -> None:
        # ``make_runner``: the device's runner (the tests' controls pass weaker ones).
        self.outage = outage
        self.recovery = recovery
        self.make_runner = make_runner

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        from tinyward.errors import TinywardError

        device = uplink_device(target, NAME, context)
        if isinstance(device, list):
            return device
        if target.uplink_port is None or target.fleet_dir is None:  # uplink_device saw them
            raise ValueError("uplink_device let a target without a port or fleet through")
        needed = UP_SECONDS + self.outage + self.recovery + 10
        if budget.left() < needed or not budget.spend():
            return for_all(context, NAME, "not-tested", "live",
                           f"the time budget ({budget.seconds:.0f} s) is less than the "
                           f"{needed:.0f} s an outage run may take")
        fleet_host = (target.uplink or (target.address, 0))[0]
        where = f"tcp://{fleet_host}:{target.uplink_port} via the probe's proxy"
        try:
            with quiet_device_logs():
                run = run_outage(device, target.uplink_port, target.fleet_dir,
                                 host=(target.uplink or ("127.0.0.1", 0))[0], outage=self.outage,
                                 recovery=self.recovery, make_runner=self.make_runner)
        except StoreUnreadable as error:
            return for_all(context, NAME, "not-tested", "live",
                           f"the fleet's store could not be read: {error}", where)
        except TinywardError as error:  # not enrolled, the device busy, …
            return for_all(context, NAME, "not-tested", "live",
                           f"the device's link did not run: {error}", where)
        return verdict(run, context, where)


__all__ = ["Outage", "OutageRecovery", "StoredRun", "quiet_device_logs", "read_store",
           "run_outage", "tinyward_runner", "uplink_device", "verdict"]
