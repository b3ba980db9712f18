"""`tinyward bench ingest`: how many reports per second the fleet server stores.

Everything is real: a fleet made for the run, devices enrolled with real CSRs, real
signed and padded reports (signed *before* the clock starts), the real server started as
a subprocess (``tinyward fleet serve``, N worker processes) speaking mutual TLS 1.3, and
SQLite committing with ``synchronous=FULL`` (or, with ``db_url``, PostgreSQL with
``synchronous_commit = on``). Each simulated device holds one TLS
connection and sends its reports in order, waiting for each acknowledgement as a device
does (batches of ``--batch`` reports per request; ``--batch 1`` uses ``POST /v1/reports``).

Two phases, each measured on its own: first every device opens its mutual-TLS
connection (the handshakes: real devices connect once and then report for hours), then
the clock runs while all of them send. The ingest figure is the second phase; the bench
also prints the whole run, connecting included, so that nothing is hidden. What the
server does once per connection (the handshake, then checking the device's certificate,
loading its report key and reading its last stored sequence number: see
``FleetServer.meet_connection``) falls in the first phase, as it does for a real device
that connects once and then reports for hours. Every per-report check stays in the timed
phase.

The baseline printed next to the result is the single-machine cryptographic limit
measured in the same run (before and after it, averaged): ECDSA P-256 verifications per
second on one core × the number of cores. The server cannot beat it, since it verifies
every report's signature; the load generator shares the same cores, so the figure is
honest rather than flattering.
After the run the database is read back and every report must be there exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cbor2
import psutil
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tinyward.fleet.pki import Fleet
from tinyward.fleet.store import open_store
from tinyward.lab.fleetproc import server_environment
from tinyward.lab.simdevice import SimulatedDevice

PASSPHRASE = "tinyward-bench-passphrase"


@dataclass(frozen=True)
class IngestResult:
    """What one run measured."""

    devices: int
    reports: int
    batch: int
    workers: int
    seconds: float
    stored: int
    p50_ms: float
    p99_ms: float
    verify_per_core: float
    cores: int
    verify_per_core_wall: float = 0.0
    server_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    #: CPU seconds each server process used during the run (how evenly work was spread).
    worker_cpu_seconds: tuple[float, ...] = ()
    #: The connection phase before the clock: wall seconds, server and load-generator CPU.
    connect_seconds: float = 0.0
    connect_server_cpu_seconds: float = 0.0
    connect_client_cpu_seconds: float = 0.0
    #: CPU seconds of the database server's own processes in the timed phase (PostgreSQL
    #: on this machine; None: SQLite, whose work is in the server's processes, or a
    #: PostgreSQL server elsewhere).
    database_cpu_seconds: float | None = None

    @property
    def reports_per_second_with_connect(self) -> float:
        """The whole run, the connecting phase (handshakes, device lookups) included."""
        return self.stored / (self.seconds + self.connect_seconds)

    @property
    def reports_per_second(self) -> float:
        return self.stored / self.seconds

    @property
    def crypto_limit(self) -> float:
        return self.verify_per_core * self.cores


class _Phases(NamedTuple):
    """What the load generator measured in its two phases."""

    connect_seconds: float
    connect_client_cpu: float
    server_before: dict[int, float]  # CPU by server process before connecting
    server_between: dict[int, float]  # … after connecting, before sending
    seconds: float
    client_cpu: float


def verifications_per_second(seconds: float = 1.0) -> tuple[float, float]:
    """ECDSA P-256 verifications of 1 KiB messages on one core: (per CPU-second, per second).

    The first counts against this process's CPU time: on a machine shared with other work
    the wall-clock rate (the second) understates what a core can do, and would flatter a
    ratio computed against it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    public, message = key.public_key(), bytes(1024)
    # One algorithm object for every call, as the server keeps one: building it costs
    # ≈ 4 µs, and counting that would lower the limit and flatter the ratio by ≈ 7 %.
    algorithm = ec.ECDSA(hashes.SHA256())
    signature = key.sign(message, algorithm)
    verify = public.verify
    count, start, wall = 0, time.process_time(), time.perf_counter()
    while (elapsed := time.process_time() - start) < seconds:
        for _ in range(200):
            verify(signature, message, algorithm)
        count += 200
    return count / elapsed, count / (time.perf_counter() - wall)


async def _connect(port: int, context: ssl.SSLContext
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A device's mutual-TLS connection to the server (the handshake completes here)."""
    return await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                         server_hostname="127.0.0.1")


async def _send(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                bodies: list[bytes], path: str, content_type: str,
                latencies: list[float]) -> None:
    reader, writer = connection
    try:
        for body in bodies:
            head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}"
                    f"\r\nContent-Length: {len(body)}\r\n\r\n").encode("ascii")
            sent = time.perf_counter()
            writer.write(head + body)
            status_and_headers = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length:\s*(\d+)", status_and_headers)
            answer = await reader.readexactly(int(match.group(1)) if match else 0)
            latencies.append(time.perf_counter() - sent)
            if not status_and_headers.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"server refused a bench report: {answer[:300]!r}")
    finally:
        writer.close()


def _start_server(fleet_dir: Path, db: str, workers: int, log: Path
                  ) -> tuple[subprocess.Popen[str], int]:
    env = server_environment(None)  # the server key is in clear (0600): no passphrase
    process = subprocess.Popen(
        [sys.executable, "-m", "tinyward", "fleet", "serve", str(fleet_dir), "--port", "0",
         "--admin-port", "0", "--db", db, "--workers", str(workers),
         "--rate", "1000000", "--burst", "1000000", "--max-connections-per-ip", "100000",
         # every simulated device connects from 127.0.0.1 at the same moment
         "--max-handshakes-per-ip", "5000"],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    line = process.stdout.readline() if process.stdout is not None else ""
    match = re.search(r"https://[^:]+:(\d+)", line)
    if not match:
        process.kill()
        process.wait(30)
        raise RuntimeError(f"the fleet server did not start: {line}{log.read_text()[-2000:]}")
    time.sleep(0.5)  # let the other workers bind before the load starts
    return process, int(match.group(1))


def run_ingest(devices: int, reports: int, batch: int = 50, workers: int = 2,
               progress: object = None, db_url: str | None = None) -> IngestResult:
    """Run the whole benchmark in a temporary folder and return its figures.

    ``db_url``: the server's database (default: a new SQLite file in that folder). A
    PostgreSQL database is shared with whatever else it holds: the bench's devices are
    new, and only their reports are counted.
    """
    say = progress if callable(progress) else (lambda _text: None)
    with tempfile.TemporaryDirectory(prefix="tinyward-bench-") as tmp:
        folder = Path(tmp)
        say(f"creating a fleet and enrolling {devices} devices …")
        fleet = Fleet.init(folder / "fleet", PASSPHRASE.encode())
        device_ca = fleet.device_ca_token(PASSPHRASE.encode())  # opened once (scrypt)
        sims = [SimulatedDevice.enrolled(fleet, device_ca) for _ in range(devices)]
        say(f"signing {reports} reports …")
        now = int(time.time())
        per_device = [reports // devices + (1 if i < reports % devices else 0)
                      for i in range(devices)]
        bodies: list[list[bytes]] = []
        for sim, count in zip(sims, per_device, strict=True):
            signed = [sim.report(timestamp=now, results=({"label": "quiet", "score": 0.1},))
                      for _ in range(count)]
            if batch == 1:
                bodies.append(signed)
            else:
                bodies.append([cbor2.dumps(signed[i:i + batch])
                               for i in range(0, len(signed), batch)])
        contexts = [sim.client_context(folder / "tls") for sim in sims]
        say("measuring the ECDSA P-256 verification limit …")
        before_rate, before_wall = verifications_per_second()
        db = db_url or f"sqlite:///{folder / 'bench.db'}"
        postmaster = _postmaster(db) if db_url else None
        database_between: list[float] = []
        process, port = _start_server(folder / "fleet", db, workers, folder / "bench.log")
        try:
            say(f"connecting {devices} devices over mutual TLS 1.3 …")
            latencies: list[float] = []
            path, content_type = (("/v1/reports", "application/cose") if batch == 1
                                  else ("/v1/reports/batch", "application/cbor"))

            async def drive() -> _Phases:
                # Phase 1, not timed as ingest: every device connects (mutual TLS 1.3).
                server_before = _cpu_by_process(process.pid)
                client_before = time.process_time()
                start = time.perf_counter()
                connections = await asyncio.gather(*(_connect(port, c) for c in contexts))
                # The server's side of the handshakes, then its device lookups.
                connect_seconds = await _server_settled(process.pid) - start
                connect_client = time.process_time() - client_before
                server_between = _cpu_by_process(process.pid)
                database_between.append(_database_cpu(postmaster))
                say(f"{devices} devices connected; sending {reports} reports …")
                # Phase 2, timed: every device sends its reports, each waiting for its acks.
                client_before = time.process_time()
                start = time.perf_counter()
                await asyncio.gather(*(
                    _send(connection, device_bodies, path, content_type, latencies)
                    for connection, device_bodies in zip(connections, bodies, strict=True)))
                seconds = time.perf_counter() - start
                return _Phases(connect_seconds, connect_client, server_before, server_between,
                               seconds, time.process_time() - client_before)

            phases = asyncio.run(drive())
            workers_after = _cpu_by_process(process.pid)
            database_cpu = (_database_cpu(postmaster) - database_between[0]
                            if postmaster is not None else None)
            per_worker = tuple(workers_after[pid] - phases.server_between.get(pid, 0.0)
                               for pid in sorted(workers_after))
            server_cpu = sum(per_worker)
            connect_server = sum(phases.server_between.values()) - sum(
                phases.server_before.values())
        finally:
            process.terminate()
            process.wait(30)
        # Measured again after the run, the server gone: a shared machine's speed drifts,
        # and the mean of both sides is the fairest limit for the run in between.
        say("measuring the ECDSA P-256 verification limit again …")
        after_rate, after_wall = verifications_per_second()
        verify_rate, verify_wall = (before_rate + after_rate) / 2, (before_wall + after_wall) / 2
        stored = _check_stored(db, [sim.device_id for sim in sims], per_device)
        cut = sorted(latencies)
        return IngestResult(
            devices=devices, reports=reports, batch=batch, workers=workers,
            seconds=phases.seconds,
            stored=stored, p50_ms=statistics.median(cut) * 1000,
            p99_ms=cut[min(len(cut) - 1, int(len(cut) * 0.99))] * 1000,
            verify_per_core=verify_rate, verify_per_core_wall=verify_wall,
            cores=os.cpu_count() or 1,
            server_cpu_seconds=server_cpu, client_cpu_seconds=phases.client_cpu,
            worker_cpu_seconds=per_worker, connect_seconds=phases.connect_seconds,
            connect_server_cpu_seconds=connect_server,
            connect_client_cpu_seconds=phases.connect_client_cpu,
            database_cpu_seconds=database_cpu)


def _check_stored(db_url: str, device_ids: list[str], expected: list[int]) -> int:
    """Read the database back: each device's reports 1..n, each exactly once (rows, last
    sequence number and counter agree). Returns the number of rows."""
    store = open_store(db_url)
    try:
        for device_id, count in zip(device_ids, expected, strict=True):
            rows, status = store.count_reports(device_id), store.device_status(device_id)  # type: ignore[attr-defined]
            if status is None or not rows == status.reports == status.last_seq == count:
                raise RuntimeError(f"device {device_id}: {rows} rows stored, status {status}, "
                                   f"expected reports 1 to {count} once each")
    finally:
        store.close()
    return sum(expected)


def _postmaster(db_url: str) -> int | None:
    """The PID of the PostgreSQL server behind ``db_url`` if it runs on this machine and
    the role may read its data directory's name (a superuser); None otherwise."""
    import psycopg

    from tinyward.fleet.store_pg import parse_url

    try:
        with psycopg.connect(parse_url(db_url)[0]) as connection:
            row = connection.execute("SELECT current_setting('data_directory')").fetchone()
        pid = int((Path(str(row[0])) / "postmaster.pid").read_text().split()[0]) if row else 0
        return pid if psutil.pid_exists(pid) else None
    except (psycopg.Error, OSError, ValueError, IndexError):
        return None


def _database_cpu(postmaster: int | None) -> float:
    """CPU seconds used so far by the PostgreSQL server's processes (0 if unknown).

    Backends that have exited since are missed; the server's pooled connections live
    through the run."""
    return sum(_cpu_by_process(postmaster).values()) if postmaster is not None else 0.0


async def _server_settled(pid: int, timeout: float = 10.0) -> float:
    """Wait until the server has finished its work for the new connections (its CPU time
    stops growing), so that none of it falls in the timed phase. Returns when it stopped
    (``time.perf_counter()``)."""
    deadline = time.monotonic() + timeout
    used, busy_until = sum(_cpu_by_process(pid).values()), time.perf_counter()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = sum(_cpu_by_process(pid).values())
        if now - used < 0.005:
            break
        used, busy_until = now, time.perf_counter()
    return busy_until


def _cpu_by_process(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by a process and each of its children."""
    parent = psutil.Process(pid)
    found = {}
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            found[process.pid] = times.user + times.system
    return found
