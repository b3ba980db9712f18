"""`tinyward bench fleetload`: a realistic fleet against several nodes behind HAProxy.

Up to 10,000 simulated devices (real keys, real enrolment, real certificates:
:class:`~tinyward.lab.simdevice.SimulatedDevice`) run in this process on one asyncio loop,
apart from the server nodes (each `tinyward fleet serve` in its own process group) and
HAProxy (:mod:`tinyward.bench.fleetload_cluster`). Each device:

- holds one mutual-TLS 1.3 connection through the balancer, as a real device does;
- posts one signed, padded report (signed when it is due, with the current time) every
  ``interval`` seconds from a random start in the first interval (constant rate, jittered
  phase), and sends a report again, byte for byte, until it is acknowledged;
- notices at once when its connection is closed (it waits on a read between reports) and
  reconnects with the device link's full-jitter exponential backoff.

Phases: (1) every device connects (at most ``connect_concurrency`` handshakes at a time)
and starts reporting: the server memory per connected device and the server CPU per
handshake (that phase's CPU less its reports at the steady cost per report) come from
here; (2) ``duration`` seconds of reporting: stored reports/s, p50/p99
acknowledgement latency, server CPU per report; (3) the storm: ``kill -9`` of one node (its
devices move to the others through the balancer) or of all (everybody reconnects at once
when they come back), the killed nodes restarted ``restart_after`` seconds later, and the
time until every device whose connection broke has a report acknowledged again; (4) the
devices stop making reports and get the last ones acknowledged (bounded), then the store
is read back: every device's stored sequence numbers must be exactly 1…N with no
duplicate, N at least its highest acknowledged one (nothing acknowledged lost) and at most
its highest sent one.

CPU is read from ``/proc/PID/stat`` (utime + stime) of the node processes, memory from
``/proc/PID/statm``. Every loop is bounded in count and time; everything is on loopback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import resource
import sqlite3
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tinyward._backoff import Backoff
from tinyward.bench.fleetload_cluster import Cluster, NodeOptions, cpu_seconds, rss_bytes
from tinyward.errors import TinywardError
from tinyward.fleet.pki import Fleet
from tinyward.fleet.runner import event_loop_factory, shrink_tls_read_buffer
from tinyward.lab.simdevice import SimulatedDevice

PASSPHRASE = b"tinyward-bench-passphrase"
STORMS = ("one", "all", "none")


class LoadError(TinywardError):
    """The load run could not be set up or read back."""


@dataclass(frozen=True)
class LoadConfig:
    """One run. ``storm``: ``one`` (kill -9 node1), ``all`` (every node), ``none``."""

    devices: int
    interval: float = 10.0
    duration: float = 300.0
    nodes: int = 2
    workers: int = 1
    storm: str = "one"
    restart_after: float = 5.0
    after_storm: float = 60.0   # load kept up after the kill (the fleet must be back in it)
    drain: float = 30.0         # bound on getting the last reports acknowledged
    connect_concurrency: int = 64
    request_timeout: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 15.0
    seed: int = 1
    #: Sign each device's reports for the steady phase before the clock starts (signing is
    #: the device's CPU, not the server's nor the generator's); later ones are signed when due.
    presign: bool = True
    #: New connections per second the balancers let through to the nodes, all balancers
    #: together (HAProxy's ``rate-limit sessions``): about what the nodes can handshake on
    #: this machine while the load generator handshakes too (~3 + ~2 ms of CPU each).
    new_per_second: int = 300
    #: The nodes' ``--commit-window`` in ms: 20 lets a node at 500 single-report requests/s
    #: share each commit between ~10 of them (5: ~2.5), 15 % less CPU per report
    #: (docs/scaling.md), for at most 20 ms more per acknowledgement.
    commit_window_ms: float = 20.0


@dataclass
class LoadResult:
    """What one run measured (``devices`` devices)."""

    devices: int
    nodes: int
    interval: float
    duration: float
    storm: str
    connect_seconds: float = 0.0
    handshake_server_cpu_ms: float = 0.0       # server CPU per device connection
    memory_per_device_kb: float = 0.0          # server RSS delta / connected devices
    steady_reports: int = 0                    # acknowledged in the steady phase
    reports_per_second: float = 0.0
    report_server_cpu_us: float = 0.0          # server CPU per stored report (steady)
    report_balancer_cpu_us: float = 0.0        # HAProxy's CPU per report (steady)
    report_loadgen_cpu_us: float = 0.0         # this process's CPU per report (steady)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    storm_devices: int = 0                     # devices whose connection the storm broke
    reconnects: int = 0                        # connections made after the kill
    recovered: bool = False
    recovery_seconds: float = 0.0              # kill -> every broken device acked again
    reconnected_seconds: float = 0.0           # kill -> every broken device connected again
    idle_server_cpu_per_s: float = 0.0         # the nodes' CPU with no device (health checks)
    report_server_cpu_net_us: float = 0.0      # per report, the idle CPU taken out
    storm_p99_ms: float = 0.0                  # ack latency after the kill
    sessions_before: dict[str, int] = field(default_factory=dict)  # HAProxy, per node
    sessions_while_down: dict[str, int] = field(default_factory=dict)  # storm "one"
    sessions_after: dict[str, int] = field(default_factory=dict)
    balancers: int = 1                         # HAProxy processes (fd limit: see run)
    enrol_ms: float = 0.0                      # per device, keys to client TLS context
    presign_seconds: float = 0.0               # CPU spent signing reports before the run
    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    duplicates: int = 0
    gaps: int = 0
    lost_acknowledged: int = 0                 # acked but not stored: must be 0
    stored_not_acknowledged: int = 0           # stored, its ack lost in the kill (allowed)
    unacknowledged_at_end: int = 0             # sent, never acked (drain bound reached)
    refused: dict[str, int] = field(default_factory=dict)  # HTTP refusals by code
    drops: dict[str, int] = field(default_factory=dict)  # connections lost, by how
    marked_down: dict[str, int] = field(default_factory=dict)  # HAProxy's chkdown per node

    @property
    def exactly_once(self) -> bool:
        return (self.duplicates == 0 and self.gaps == 0 and self.lost_acknowledged == 0
                and self.stored <= self.sent)


@dataclass
class _Device:
    sim: SimulatedDevice
    context: ssl.SSLContext
    sent: int = 0
    acked: int = 0
    connects: int = 0
    broken_after_storm: bool = False
    back_at: float | None = None  # first ack on a connection made after the storm broke one
    reconnected_at: float | None = None  # first connection made after the storm broke one
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    new_connection: bool = False
    balancer: int = 0  # which HAProxy (of the cluster's ports) it connects through
    presigned: collections.deque[bytes] = field(default_factory=collections.deque)

    def report(self, seq: int) -> bytes:
        """Report ``seq``: signed before the run if it was (reports ``sent + 1`` onwards,
        in order), else now with the current time."""
        if self.presigned:
            return self.presigned.popleft()
        return self.sim.report(seq=seq, timestamp=int(time.time()))


def presign(devices: list[_Device], count: int) -> None:
    """Sign each device's next ``count`` reports now, dated now (the server accepts
    reports up to 30 days old: a device's queue may hold them that long), so that the
    timed phases measure the server and the connections rather than the simulated devices'
    ECDSA signing (≈ 170 µs a report here, device-side work)."""
    now = int(time.time())
    for device in devices:
        device.presigned = collections.deque(
            device.sim.report(seq=device.sent + 1 + i, timestamp=now) for i in range(count))


def enrol(fleet: Fleet, count: int, interval: float, folder: Path
          ) -> tuple[list[SimulatedDevice], list[ssl.SSLContext]]:
    """Enrol ``count`` simulated devices (declared schedule ``interval``) and make their
    client TLS contexts. The device CA key is opened once (scrypt) for all of them."""
    token = fleet.device_ca_token(PASSPHRASE)
    sims = [SimulatedDevice.enrolled(fleet, token, interval) for _ in range(count)]
    return sims, [sim.client_context(folder) for sim in sims]


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (not above the hard
    limit, which an unprivileged process cannot raise); children inherit it. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class _Run:
    """The load generator's state for one run (one event loop)."""

    def __init__(self, config: LoadConfig, devices: list[_Device], cluster: Cluster,
                 say: Callable[[str], None]) -> None:
        self.config, self.devices, self.cluster, self.say = config, devices, cluster, say
        self.rng = random.Random(config.seed)  # jitter, not a secret
        self.latencies: list[float] = []
        self.storm_latencies: list[float] = []
        self.storm_at: float | None = None
        self.stop_reports_at = float("inf")
        self.deadline = float("inf")
        self.refused: dict[str, int] = {}
        self.drops: dict[str, int] = {}  # connections lost, by how (diagnosing churn)
        self.acks_in_window = 0
        self.counting = False
        self.new_connections_after_storm = 0

    async def connect(self, device: _Device) -> None:
        port = self.cluster.ports[device.balancer]
        device.reader, device.writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=device.context, server_hostname="127.0.0.1",
            ssl_handshake_timeout=self.config.request_timeout), self.config.request_timeout)
        device.connects += 1
        device.new_connection = True
        if self.storm_at is not None:
            self.new_connections_after_storm += 1
            if device.broken_after_storm and device.reconnected_at is None:
                device.reconnected_at = asyncio.get_running_loop().time()

    def drop(self, device: _Device, why: str = "") -> None:
        if why:
            self.drops[why] = self.drops.get(why, 0) + 1
        if device.writer is not None:
            device.writer.transport.abort()
        device.reader = device.writer = None
        if self.storm_at is not None and device.back_at is None:
            device.broken_after_storm = True

    async def post(self, device: _Device, body: bytes) -> tuple[int, dict[str, Any]]:
        if device.reader is None or device.writer is None:
            raise ConnectionError("not connected")
        head = (b"POST /v1/reports HTTP/1.1\r\nHost: fleet\r\n"
                b'Content-Type: application/cose; cose-type="cose-sign1"\r\n'
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        device.writer.write(head + body)
        async with asyncio.timeout(self.config.request_timeout):
            status_and_headers = await device.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in status_and_headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await device.reader.readexactly(length)
        status = int(status_and_headers.split(b" ", 2)[1])
        if b"connection: close" in status_and_headers.lower():
            self.drop(device, "server: Connection: close")
        return status, json.loads(answer) if answer else {}

    async def device_loop(self, device: _Device, first_due: float) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max,
                          random.Random(self.rng.random()))
        due, pending = first_due, None
        while loop.time() < self.deadline:
            now = loop.time()
            if pending is None:
                if now >= self.stop_reports_at:
                    return
                if now < due:
                    await self._idle(device, min(due, self.stop_reports_at) - now)
                    continue
                device.sent += 1
                pending = device.report(device.sent)
                due += self.config.interval
            if device.writer is None:
                try:
                    await self.connect(device)
                except (OSError, ssl.SSLError, TimeoutError,
                        asyncio.IncompleteReadError) as error:
                    self.drops[f"connect: {type(error).__name__}"] = self.drops.get(
                        f"connect: {type(error).__name__}", 0) + 1
                    await asyncio.sleep(backoff.next_delay())
                    continue
            sent_at = loop.time()
            try:
                status, answer = await self.post(device, pending)
            except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError,
                    ValueError, IndexError) as error:
                self.drop(device, f"request: {type(error).__name__}")
                await asyncio.sleep(backoff.next_delay())
                continue
            stored = answer.get("stored_seq") if isinstance(answer, dict) else None
            if isinstance(stored, int) and stored >= device.sent and status in (200, 409):
                backoff.reset()
                self._acked(device, loop.time() - sent_at)
                pending = None
                continue
            code = str(answer.get("error", status)) if isinstance(answer, dict) else str(status)
            self.refused[code] = self.refused.get(code, 0) + 1
            await asyncio.sleep(backoff.next_delay())  # 429, 503 …: the same report again

    def _acked(self, device: _Device, latency: float) -> None:
        device.acked = device.sent
        if self.storm_at is None:
            self.latencies.append(latency)
        else:
            self.storm_latencies.append(latency)
        if self.counting:
            self.acks_in_window += 1
        if device.broken_after_storm and device.new_connection and device.back_at is None:
            device.back_at = asyncio.get_running_loop().time()
        device.new_connection = False

    async def _idle(self, device: _Device, seconds: float) -> None:
        """Wait for the next report, noticing a closed connection at once (a read)."""
        if device.reader is None:
            await asyncio.sleep(seconds)
            return
        try:
            data = await asyncio.wait_for(device.reader.read(1), seconds)
        except TimeoutError:
            return
        except (OSError, ssl.SSLError) as error:
            self.drop(device, f"idle: {type(error).__name__}")
            return
        # closed (the node died or timed it out, or the balancer shut the session), or
        # bytes nobody asked for (a broken stream)
        self.drop(device, "idle: closed" if not data else "idle: unasked bytes")


async def _drive(run: _Run, result: LoadResult, cluster: Cluster, pids: Callable[[], list[int]]
                 ) -> None:
    config, loop = run.config, asyncio.get_running_loop()
    balancer = [b.pid for b in cluster.balancers]
    # Phase 1: every device connects (at most connect_concurrency handshakes at a time)
    # and starts reporting from a random point in its first interval, as a fleet that
    # powers up does. (Held idle instead, the first devices would meet the nodes' idle
    # timeout, 15 s, long before 10,000 handshakes are done.)
    idle_from, idle_cpu = loop.time(), cpu_seconds(pids())
    await asyncio.sleep(3.0)  # the nodes with no device: health checks, timers
    result.idle_server_cpu_per_s = (cpu_seconds(pids()) - idle_cpu) / (loop.time() - idle_from)
    cpu0, rss0 = cpu_seconds(pids()), rss_bytes(pids())
    gate = asyncio.Semaphore(config.connect_concurrency)
    tasks: list[asyncio.Task[None]] = []

    async def connect_and_run(device: _Device) -> None:
        backoff = Backoff(config.backoff_initial, config.backoff_max)
        for _ in range(20):
            async with gate:
                try:
                    await run.connect(device)
                    break
                except (OSError, ssl.SSLError, TimeoutError):
                    pass
            await asyncio.sleep(backoff.next_delay())
        tasks.append(asyncio.create_task(run.device_loop(
            device, loop.time() + run.rng.uniform(0, config.interval))))

    start = loop.time()
    await asyncio.gather(*(connect_and_run(d) for d in run.devices))
    result.connect_seconds = loop.time() - start
    connected = sum(1 for d in run.devices if d.writer is not None)
    cpu1, rss1 = cpu_seconds(pids()), rss_bytes(pids())
    acked_while_connecting = sum(d.acked for d in run.devices)
    result.memory_per_device_kb = (rss1 - rss0) / max(1, connected) / 1024
    run.say(f"{connected}/{len(run.devices)} devices connected in {result.connect_seconds:.1f} s;"
            f" reporting every {config.interval:g} s for {config.duration:g} s …")
    result.sessions_before = {k: v[1] for k, v in cluster.stats().items()}
    # Phase 2: steady reporting, counted from one interval on (every device has started).
    run.stop_reports_at = loop.time() + config.interval + config.duration + (
        config.after_storm if config.storm != "none" else 0.0)
    run.deadline = run.stop_reports_at + config.drain
    await asyncio.sleep(config.interval)
    window_start = loop.time()
    run.counting, cpu2, lb2, gen2 = True, cpu_seconds(pids()), cpu_seconds(balancer), \
        time.process_time()
    await asyncio.sleep(config.duration)
    run.counting = False
    window = loop.time() - window_start
    cpu3, lb3, gen3 = cpu_seconds(pids()), cpu_seconds(balancer), time.process_time()
    acked = max(1, run.acks_in_window)
    result.steady_reports = run.acks_in_window
    result.reports_per_second = run.acks_in_window / window
    result.report_server_cpu_us = (cpu3 - cpu2) / acked * 1e6
    result.report_server_cpu_net_us = max(
        0.0, cpu3 - cpu2 - result.idle_server_cpu_per_s * window) / acked * 1e6
    result.report_balancer_cpu_us = (lb3 - lb2) / acked * 1e6
    result.report_loadgen_cpu_us = (gen3 - gen2) / acked * 1e6
    # The connecting phase's CPU less its reports (at the steady phase's cost per report).
    result.handshake_server_cpu_ms = max(0.0, (cpu1 - cpu0) - acked_while_connecting
                                         * result.report_server_cpu_us / 1e6) \
        / max(1, connected) * 1e3
    if config.storm != "none":
        await _storm(run, result, cluster)
        # after_storm is a bound: once the fleet is back, two more intervals of load
        # (reports on the new connections) and then the end.
        run.stop_reports_at = min(run.stop_reports_at, loop.time() + 2 * config.interval)
        run.deadline = run.stop_reports_at + config.drain
    async with asyncio.timeout(max(1.0, run.deadline - loop.time()) + 60):
        await asyncio.gather(*tasks)
    for device in run.devices:
        run.drop(device)


async def _storm(run: _Run, result: LoadResult, cluster: Cluster) -> None:
    """kill -9 under load. ``one``: node1 dies, its devices move through the balancer to
    the others, and node1 is restarted once they are all back (or the bound has passed);
    ``all``: every node dies and is restarted ``restart_after`` seconds later."""
    config, loop = run.config, asyncio.get_running_loop()
    victims = cluster.nodes[:1] if config.storm == "one" else list(cluster.nodes)
    run.say(f"kill -9 {', '.join(n.name for n in victims)} under load …")
    run.storm_at = loop.time()
    for node in victims:
        cluster.kill_node(node)
    end = run.storm_at + config.after_storm

    def back() -> bool:
        broken = [d for d in run.devices if d.broken_after_storm]
        return bool(broken) and all(d.back_at is not None for d in broken)

    if config.storm == "one":
        while loop.time() < end and not back():
            await asyncio.sleep(0.1)
        result.sessions_while_down = {k: v[1] for k, v in cluster.stats().items()}
    else:
        await asyncio.sleep(config.restart_after)
    for node in victims:
        await asyncio.to_thread(cluster.start_node, node)
    run.say(f"restarted {', '.join(n.name for n in victims)}; waiting for the fleet …")
    while loop.time() < end and not back():
        await asyncio.sleep(0.1)
    broken = [d for d in run.devices if d.broken_after_storm]
    result.storm_devices = len(broken)
    result.recovered = back()
    if result.recovered:
        result.recovery_seconds = max(d.back_at or 0.0 for d in broken) - run.storm_at
        result.reconnected_seconds = max(d.reconnected_at or d.back_at or 0.0
                                         for d in broken) - run.storm_at
    result.sessions_after = {k: v[1] for k, v in cluster.stats().items()}
    result.reconnects = run.new_connections_after_storm


def check_store(db_url: str, devices: list[_Device], result: LoadResult) -> None:
    """Read every stored report back (one query) and count duplicates, gaps and lost
    acknowledgements against what each device sent and had acknowledged."""
    parts = urlsplit(db_url)
    query = ("SELECT device_id, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) "
             "FROM reports GROUP BY device_id")
    if parts.scheme == "sqlite":
        with contextlib.closing(sqlite3.connect(parts.path.removeprefix("/"))) as db:
            rows = db.execute(query).fetchall()
    elif parts.scheme in ("postgresql", "postgres"):
        import psycopg  # type: ignore[import-not-found,unused-ignore]  # h-pg's backend

        with psycopg.connect(db_url) as db:
            rows = db.execute(query).fetchall()
    else:
        raise LoadError(f"cannot read back {db_url!r}: sqlite:/// or postgresql:// only")
    found = {row[0]: tuple(int(x) for x in row[1:]) for row in rows}
    result.sent = sum(d.sent for d in devices)
    result.acknowledged = sum(d.acked for d in devices)
    result.unacknowledged_at_end = result.sent - result.acknowledged
    for device in devices:
        count, distinct, _low, high = found.pop(device.sim.device_id, (0, 0, 1, 0))
        result.stored += count
        result.duplicates += count - distinct
        result.gaps += high - distinct  # numbers missing in 1…high
        result.lost_acknowledged += max(0, device.acked - high)
        result.stored_not_acknowledged += max(0, high - device.acked)
    if found:  # reports of devices this run never ran: not ours to judge, but say so
        raise LoadError(f"the store holds reports of {len(found)} devices not in this run")


def run_fleetload(config: LoadConfig, sims: list[SimulatedDevice],
                  contexts: list[ssl.SSLContext], fleet_dir: Path, folder: Path,
                  db_url: str | None = None, say: Callable[[str], None] = lambda _t: None
                  ) -> LoadResult:
    """Run one load against a fresh cluster (``config.nodes`` nodes and HAProxy) over
    ``db_url`` (default: a new SQLite file in ``folder``; it must start empty)."""
    if config.storm not in STORMS:
        raise LoadError(f"storm must be one of {', '.join(STORMS)}")
    if config.devices > len(sims):
        raise LoadError(f"{config.devices} devices asked, {len(sims)} enrolled")
    folder.mkdir(parents=True, exist_ok=True)
    url = db_url or f"sqlite:///{folder / 'reports.db'}"
    per_node = config.devices + 1000  # one node may have to take every device
    # HAProxy holds two descriptors per device; one that cannot have that many gets
    # company (each balancer in front of every node; devices split between them).
    files = raise_fd_limit(2 * config.devices + 4096)
    per_balancer = max(1, (files - 1000) // 2)
    balancers = -(-(config.devices + 500) // per_balancer)
    cluster = Cluster(fleet_dir, url, folder, config.nodes,
                      NodeOptions(workers=config.workers, max_connections=per_node,
                                  max_handshakes=1024,
                                  extra=("--commit-window", f"{config.commit_window_ms:g}")),
                      balancers=balancers,
                      balancer_maxconn=min(per_balancer, config.devices // balancers + 500),
                      new_per_second=max(1, config.new_per_second // balancers))
    result = LoadResult(config.devices, config.nodes, config.interval, config.duration,
                        config.storm, balancers=balancers)
    devices = [_Device(sim, ctx, balancer=i % balancers) for i, (sim, ctx) in
               enumerate(zip(sims[:config.devices], contexts[:config.devices], strict=True))]
    shrink_tls_read_buffer()  # 10,000 client connections here too (see fleet/runner.py)
    if config.presign:
        # the steady phase and two intervals more (ramp-up, storm); the rest signed when due
        started = time.process_time()
        presign(devices, int((config.duration + 3 * config.interval) // config.interval) + 1)
        result.presign_seconds = time.process_time() - started
        say(f"signed {sum(len(d.presigned) for d in devices)} reports ahead in "
            f"{result.presign_seconds:.1f} s of CPU")
    with cluster:
        run = _Run(config, devices, cluster, say)

        def pids() -> list[int]:
            return [pid for node in cluster.nodes for pid in cluster.pids_of(node)]

        # The generator on the servers' loop (uvloop when installed): its TLS in Cython
        # costs a fraction of asyncio's, which ran the generator out of CPU first.
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_drive(run, result, cluster, pids))
        late = [d.sent - d.acked for d in devices if d.sent > d.acked]
        if late:
            say(f"{len(late)} devices ended with {sum(late)} reports unacknowledged")
        result.marked_down = cluster.marked_down()
    result.refused = dict(run.refused)
    result.drops = dict(run.drops)
    all_latencies = sorted(run.latencies)
    if all_latencies:
        result.p50_ms = statistics.median(all_latencies) * 1e3
        result.p99_ms = all_latencies[min(len(all_latencies) - 1,
                                          int(len(all_latencies) * 0.99))] * 1e3
    storm = sorted(run.storm_latencies)
    if storm:
        result.storm_p99_ms = storm[min(len(storm) - 1, int(len(storm) * 0.99))] * 1e3
    check_store(url, devices, result)
    return result


def run_series(counts: list[int], config: LoadConfig, out: Path | None = None,
               say: Callable[[str], None] = lambda _t: None, db_url: str | None = None
               ) -> tuple[list[LoadResult], float]:
    """Enrol max(counts) devices once (fleet on tmpfs when there is one: enrolment writes
    files), then run each count on a fresh cluster and database. Returns the results and
    the enrolment seconds per device."""
    if db_url is not None and len(counts) > 1:
        raise LoadError("with --db give one device count: each run needs an empty database")
    shm = Path("/dev/shm")  # noqa: S108 - tmpfs for mkdtemp (private 0700), fast enrolment
    with tempfile.TemporaryDirectory(prefix="tinyward-fleetload-",
                                     dir=shm if shm.is_dir() else None) as keys, \
            tempfile.TemporaryDirectory(prefix="tinyward-fleetload-db-") as data:
        fleet = Fleet.init(Path(keys) / "fleet", PASSPHRASE)
        say(f"enrolling {max(counts)} simulated devices …")
        started = time.perf_counter()
        sims, contexts = enrol(fleet, max(counts), config.interval, Path(keys) / "tls")
        enrol_seconds = (time.perf_counter() - started) / max(counts)
        say(f"enrolled in {enrol_seconds * max(counts):.1f} s "
            f"({enrol_seconds * 1e3:.1f} ms per device, client TLS context included)")
        results = []
        for count in counts:
            say(f"--- {count} devices, {config.nodes} nodes, storm: {config.storm}")
            run_config = LoadConfig(**{**asdict(config), "devices": count})
            result = run_fleetload(run_config, sims, contexts, fleet.directory,
                                   Path(data) / f"run-{count}", db_url, say)
            result.enrol_ms = enrol_seconds * 1e3
            results.append(result)
            if out is not None:
                write_outputs(results, enrol_seconds, out)
    return results, enrol_seconds


def write_outputs(results: list[LoadResult], enrol_seconds: float, out: Path) -> None:
    """``out``.json (every figure) and ``out``.png (the figures against the device count)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"enrol_seconds_per_device": enrol_seconds,
         "runs": [{**asdict(r), "exactly_once": r.exactly_once} for r in results]},
        indent=1) + "\n")
    plot(results, out.with_suffix(".png"))


def plot(results: list[LoadResult], path: Path) -> None:
    """Six panels against the number of devices (log scale)."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib.pyplot as plt

    xs = [r.devices for r in results]
    panels = [
        ("stored reports/s", [r.reports_per_second for r in results]),
        ("ack latency ms (p50, p99)", None),
        ("server CPU per report, µs (idle taken out)",
         [r.report_server_cpu_net_us for r in results]),
        ("server CPU per handshake, ms", [r.handshake_server_cpu_ms for r in results]),
        ("server memory per device, KB", [r.memory_per_device_kb for r in results]),
        ("after kill -9: s until all reconnected / acked", None),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    for axis, (title, ys) in zip(axes.flat, panels, strict=True):
        if ys is None and title.startswith("ack"):
            axis.plot(xs, [r.p50_ms for r in results], "o-", label="p50")
            axis.plot(xs, [r.p99_ms for r in results], "s-", label="p99")
            axis.legend()
        elif ys is None:
            # A run whose fleet was not back within the bound has no such time: no point
            # (a 0 would read as instant).
            nan = float("nan")
            axis.plot(xs, [r.reconnected_seconds if r.recovered else nan for r in results],
                      "o-", label="reconnected")
            axis.plot(xs, [r.recovery_seconds if r.recovered else nan for r in results],
                      "s-", label="acked again")
            axis.legend()
        else:
            axis.plot(xs, ys, "o-")
        axis.set_xscale("log")
        axis.set_ylim(bottom=0)
        axis.set_title(title)
        axis.set_xlabel("devices")
        axis.grid(True, alpha=0.3)
    first = results[0]
    figure.suptitle(f"tinyward fleet: {first.nodes} nodes behind HAProxy, a report every "
                    f"{first.interval:g} s, storm: kill -9 {first.storm}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
