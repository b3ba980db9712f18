"""on-device-detection (live): the device notices a scan of itself and its alarm reaches
the fleet inside its reports (A-DETECT-1).

The target names the device's address (loopback, inside ``--netns``, or named), the
device (a tinyward device folder: its ``device_id``) and the fleet's report store it
reports to (``--fleet-store FLEET_DIR/reports.db`` or a store URL; read only, as
``tinyward fleet reports`` reads it). The probe:

1. **quiet**: watches the device's stored reports from the first new one for at least
   :data:`QUIET_SECONDS` (longer than a watcher's warm-up, ``link/watch.py``
   ``DEFAULT_NET_WARMUP``, whose alarms are dropped by design: a device that has just
   started would otherwise drop the scan's) and :data:`QUIET_REPORTS` reports, none with a
   ``net.`` incident (otherwise the scan's could not be told apart): a report with one
   starts the stretch again (earlier probes' traffic may still be alarming), within the
   budget;
2. **scan**: a bounded TCP connect sweep of :data:`SCAN_PORTS` ports of the address
   (``bench.watch_traffic.port_sweep``, as ``tests/link/test_watch_netns.py`` runs it);
3. **after**: reads up to :data:`AFTER_REPORTS` reports made after the sweep.

Pass: a report after the sweep carries ``net.anomaly`` or ``net.novel`` (the kinds of
``link.watch.INCIDENT_KINDS``). Fail: :data:`AFTER_REPORTS` reports after the sweep and
none carries one (a device that does not watch itself). Not-tested: no address, store or
device; no report in the quiet phase (the device is not running); ``net.`` incidents
already in the quiet reports; fewer reports after the sweep than needed to decide.

For tinyward the device runs ``tinyward device run DIR --watch IFACE --net-model M`` in its
namespace (docs/on-device-detection.md); the sweep must reach the device's interface,
so the assessment runs where a scanner would (``ip netns exec NS tinyward assess run …``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "on-device-detection"
QUIET_SECONDS = 17.0  # more than DEFAULT_NET_WARMUP (15 s): checked in the tests
QUIET_REPORTS = 2
AFTER_REPORTS = 3
SCAN_PORTS = 200
POLL_SECONDS = 0.5
#: the most the quiet and after phases wait for reports (a 10 s interval needs ~30 s each)
WAIT_SECONDS = 60.0
DETECTION_PREFIX = "net."


@dataclass(frozen=True)
class Observed:
    """The stored reports, as (seq, incident kinds with a count > 0)."""

    quiet: list[tuple[int, tuple[str, ...]]]
    after: list[tuple[int, tuple[str, ...]]]
    answered: int = 0  # ports of the sweep that answered (open or reset)
    scanned: int = 0
    note: str = ""
    noisy: int = 0  # reports with net incidents that kept the quiet stretch from forming


def _net(kinds: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(k for k in kinds if k.startswith(DETECTION_PREFIX))


def verdict(observed: Observed, context: Context, where: str = "") -> list[Evidence]:
    """From the reports before and after the sweep (pure)."""
    if observed.noisy and observed.scanned == 0:
        return for_all(context, NAME, "not-tested", "live",
                       f"{observed.noisy} report(s) carried net incidents before any scan, "
                       f"and no quiet stretch followed in the budget ({observed.note}): the "
                       "scan's could not be told apart (earlier probes' traffic? give "
                       "--seconds-per-probe more)", where)
    if not observed.quiet:
        return for_all(context, NAME, "not-tested", "live",
                       "no report from the device before the scan: "
                       f"{observed.note or 'is it running?'}", where)
    noisy = [seq for seq, kinds in observed.quiet if _net(kinds)]
    if noisy:
        return for_all(context, NAME, "not-tested", "live",
                       f"the device already reported net incidents without a scan (reports "
                       f"{', '.join(map(str, noisy[:5]))}): the scan's could not be told apart",
                       where)
    if observed.scanned == 0:
        return for_all(context, NAME, "not-tested", "live",
                       f"no scan was sent: {observed.note}", where)
    seen = [(seq, _net(kinds)) for seq, kinds in observed.after if _net(kinds)]
    scan = (f"a {observed.scanned}-port connect sweep ({observed.answered} answered) after "
            f"{len(observed.quiet)} quiet reports")
    if seen:
        seq, kinds = seen[0]
        return for_all(context, NAME, "pass", "live",
                       f"{scan}: report {seq}, made after it and stored by the fleet, carries "
                       f"{', '.join(kinds)}", where)
    if len(observed.after) >= AFTER_REPORTS:
        return for_all(context, NAME, "fail", "live",
                       f"{scan}: none of the {len(observed.after)} reports made after it "
                       f"carries a detection incident (net.anomaly, net.novel): the device "
                       f"did not notice, or does not tell its fleet", where)
    return for_all(context, NAME, "not-tested", "live",
                   f"{scan}: only {len(observed.after)} report(s) after it, none with a "
                   f"detection incident ({observed.note or 'the budget ran out'})", where)


def store_url(text: str) -> str:
    """A store URL for ``--fleet-store``: a URL as given, a file path as ``sqlite:///``."""
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).resolve()}"


def shown_store(text: str) -> str:
    """The store for the report, without a password a URL may carry (never shown)."""
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def device_id_of(device_dir: Path) -> str | None:
    try:
        doc = json.loads((device_dir / "device.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = doc.get("device_id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None


class _Reports:
    """The device's stored reports newer than a sequence number, read from the store."""

    def __init__(self, url: str, device_id: str) -> None:
        from tinyward.fleet.store import open_store

        self._store: Any = open_store(url)
        self._device = device_id

    def last_seq(self) -> int:
        rows = self._store.reports(self._device, limit=1)
        return int(rows[0].seq) if rows else 0

    def since(self, seq: int, limit: int = 100) -> list[tuple[int, tuple[str, ...]]]:
        rows = self._store.reports(self._device, limit=limit)
        return sorted((int(r.seq), tuple(sorted(k for k, n in r.incidents.items() if n)))
                      for r in rows if int(r.seq) > seq)

    def close(self) -> None:
        self._store.close()


@dataclass
class _Streak:
    """Reports after ``seq`` without a net incident, seen since ``since`` (monotonic)."""

    seq: int
    since: float | None = None
    noisy: int = 0
    clock: Callable[[], float] = time.monotonic

    def quiet_for(self, reports: Any, seconds: float) -> bool:
        """``reports``: a :class:`_Reports` (anything with ``since(seq)``)."""
        for seq, kinds in reports.since(self.seq):
            if _net(kinds):
                self.seq, self.since, self.noisy = seq, None, self.noisy + 1
        new = reports.since(self.seq)
        if new and self.since is None:
            self.since = self.clock()  # the device runs, quietly, from here
        return (self.since is not None and self.clock() - self.since >= seconds
                and len(new) >= QUIET_REPORTS)


def _wait(until: Callable[[], bool], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        time.sleep(POLL_SECONDS)


class OnDeviceDetection:
    name = NAME
    kind = "live"

    def __init__(self, *, quiet_seconds: float = QUIET_SECONDS) -> None:
        self._quiet_seconds = quiet_seconds

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        if target.address is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no address of the device to scan")
        if target.fleet_store is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no --fleet-store to read the device's reports from")
        device_id = device_id_of(target.device_dir) if target.device_dir else None
        if device_id is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no tinyward device folder (device.json) naming the device whose "
                           "reports to read")
        try:
            reports = _Reports(store_url(target.fleet_store), device_id)
        except Exception as error:  # noqa: BLE001 - the store's own errors, or sqlite3's
            # The type only: a driver's message may quote the URL with its password.
            return for_all(context, NAME, "not-tested", "live",
                           f"the fleet's report store {shown_store(target.fleet_store)} could "
                           f"not be read ({type(error).__name__})")
        where = (f"{target.address}; reports of {device_id[:16]}… in "
                 f"{shown_store(target.fleet_store)}")
        try:
            return verdict(self._observe(target.address, reports, budget), context, where)
        finally:
            reports.close()

    def _observe(self, address: str, reports: _Reports, budget: Budget) -> Observed:
        from tinyward.bench.watch_traffic import port_sweep

        # The quiet stretch starts again after any report with a net incident: traffic
        # of earlier probes (a full port scan, floods) may still be alarming.
        streak = _Streak(reports.last_seq())
        began = time.monotonic()

        def quiet_enough() -> bool:
            return streak.quiet_for(reports, self._quiet_seconds)

        _wait(quiet_enough, min(budget.left(), self._quiet_seconds + WAIT_SECONDS))
        settled = quiet_enough()
        quiet = reports.since(streak.seq)
        if not settled:
            return Observed(quiet, [], noisy=streak.noisy,
                            note=f"{len(quiet)} quiet report(s) in "
                                 f"{time.monotonic() - began:.0f} s")
        ports = min(SCAN_PORTS, budget.attempts)
        if ports <= 0 or budget.left() <= 0:
            return Observed(quiet, [], note="the budget ran out before the scan")
        budget.attempts -= ports
        mark = reports.last_seq()  # a report stored since the quiet read came before it
        answered = port_sweep(address, ports, timeout=min(5.0, max(0.5, budget.left())))
        _wait(lambda: len(reports.since(mark)) >= AFTER_REPORTS
              or any(_net(k) for _, k in reports.since(mark)),
              min(budget.left(), WAIT_SECONDS))
        after = reports.since(mark)
        return Observed(quiet, after, answered, ports,
                        note=f"{len(after)} report(s) within the wait")


__all__ = ["AFTER_REPORTS", "QUIET_SECONDS", "SCAN_PORTS", "Observed", "OnDeviceDetection",
           "store_url", "verdict"]
