"""`tinyward fleet serve`, `tinyward fleet admin-token` and `tinyward bench ingest`.

Kept apart from ``cli/fleet.py`` (the PKI commands) so the two can change independently;
``cli/fleet.py`` adds :data:`serve` and :data:`admin_token` to its ``fleet`` group.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click


@click.command("serve")
@click.argument("fleet_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed at start).")
@click.option("--db", "db_url", default=None,
              help="Database URL: sqlite:///PATH or postgresql://user@host:port/db "
                   "[default: sqlite:///FLEET_DIR/reports.db].")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes; one accepts and deals connections to all (use one per core).")
@click.option("--admin-host", default="127.0.0.1", show_default=True,
              help="Address of the admin listener (admin token endpoints).")
@click.option("--admin-port", default=8444, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port of the admin listener (0: any free port, printed at start).")
@click.option("--report-interval", default=None, type=click.FloatRange(0.01, 86400),
              help="Report schedule in seconds of devices enrolled before schedules were "
                   "recorded; every other device's rate follows its own declared schedule "
                   "[default: the fleet's default interval, `fleet show`].")
@click.option("--rate", default=None, type=click.FloatRange(min=0.001),
              help="One rate for every device, reports per second (token bucket, per "
                   "worker) [default: twice each device's declared schedule].")
@click.option("--burst", default=None, type=click.FloatRange(min=1),
              help="Token bucket size, in reports [default: 306, a full link queue (256) "
                   "plus one batch (50) sent again].")
@click.option("--max-connections", default=1024, show_default=True, type=click.IntRange(1),
              help="Concurrent device connections per worker (raise it with the fd limit "
                   "for large fleets: docs/scaling.md).")
@click.option("--max-handshakes", default=256, show_default=True, type=click.IntRange(1),
              help="TLS handshakes in progress per worker; at the cap the oldest makes room.")
@click.option("--max-connections-per-ip", default=256, show_default=True,
              type=click.IntRange(1), help="Concurrent connections per client address.")
@click.option("--max-handshakes-per-ip", default=16, show_default=True, type=click.IntRange(1),
              help="TLS handshakes in progress per client address (per worker; nobody is "
                   "authenticated yet).")
@click.option("--update-refresh", default=600.0, show_default=True,
              type=click.FloatRange(0.1, 43200),
              help="Seconds between re-signings of the update repository's snapshot and "
                   "timestamp (online keys), also done at start; a fleet without an update "
                   "repository is left alone.")
@click.option("--alert", "alerts", multiple=True, metavar="SINK",
              help="Send incidents to SINK (repeatable): webhook:https://HOST/PATH, "
                   "syslog, syslog:HOST:PORT, syslog:/PATH or command:/ABS/PATH (JSON on "
                   "stdin). Deduplicated per device and kind (docs/fleet-server.md).")
@click.option("--quiet-check", default=5.0, show_default=True,
              type=click.FloatRange(0.1, 3600),
              help="Seconds between the quiet-device detector's ticks (each looks at up "
                   "to 500 devices).")
@click.option("--commit-window", default=5.0, show_default=True,
              type=click.FloatRange(0, 1000),
              help="Milliseconds a report waits for reports of other connections to share "
                   "its commit (group commit; adds at most this to an acknowledgement). A "
                   "large fleet on a schedule: 20 (docs/scaling.md).")
@click.option("--unsafe-client-cert-optional", is_flag=True, hidden=True,
              help="UNSAFE, the assessment lab's control only: let clients without a "
                   "certificate finish the device listener's handshake.")
def serve(fleet_dir: Path, host: str, port: int, db_url: str | None, workers: int,
          admin_host: str, admin_port: int, report_interval: float | None, rate: float | None,
          burst: float | None, max_connections: int, max_handshakes: int,
          max_connections_per_ip: int, max_handshakes_per_ip: int,
          update_refresh: float, alerts: tuple[str, ...], quiet_check: float,
          commit_window: float, unsafe_client_cert_optional: bool = False) -> None:
    """Run the fleet server for FLEET_DIR (TLS 1.3, device client certificates).

    Devices connect to --host/--port, which requires their client certificate in the TLS
    handshake; administrators to --admin-host/--admin-port (loopback by default).

    The server holds only its own TLS key, opened with TINYWARD_SERVER_PASSPHRASE (or a
    prompt) if it is sealed, and the fleet's public certificates; it refuses to start with
    a CA or update passphrase in its environment. Stops cleanly on SIGTERM or Ctrl-C.
    """
    from tinyward.cli.fleet_secrets import SERVER, read_secret, refuse_foreign_secrets
    from tinyward.fleet.pki import Fleet
    from tinyward.fleet.runner import serve_forever
    from tinyward.fleet.server import ServerConfig

    refuse_foreign_secrets()
    opened = Fleet.open(fleet_dir)
    sealed = opened.server_key_path.suffix == ".key"
    passphrase = read_secret(SERVER) if sealed else None

    files = _raise_fd_limit()
    if max_connections + max_handshakes + 64 > files:
        click.echo(f"warning: --max-connections {max_connections} and --max-handshakes "
                   f"{max_handshakes} need more open files than this process may have "
                   f"({files}); raise the hard limit (ulimit -Hn, LimitNOFILE=)", err=True)
    fallback = opened.report_interval if report_interval is None else report_interval
    config = ServerConfig(report_interval=fallback, rate_per_second=rate, burst=burst,
                          max_connections=max_connections, max_handshakes=max_handshakes,
                          max_connections_per_ip=max_connections_per_ip,
                          max_handshakes_per_ip=max_handshakes_per_ip,
                          commit_window=commit_window / 1000,
                          unsafe_client_cert_optional=unsafe_client_cert_optional)
    if unsafe_client_cert_optional:
        click.echo("warning: UNSAFE lab control on (the device listener lets clients "
                   "without a certificate finish the handshake): never on a fleet", err=True)
    url = db_url or f"sqlite:///{(fleet_dir / 'reports.db').absolute()}"

    def announce(bound: int, admin_bound: int | None) -> None:
        click.echo(f"tinyward fleet server listening on https://{host}:{bound} "
                   f"(admin: https://{admin_host}:{admin_bound}, workers: {workers}, db: {url})",
                   nl=True)

    _operator_log()
    serve_forever(fleet_dir, passphrase, url, host, port, config, workers, announce,
                  admin_host=admin_host, admin_port=admin_port, update_refresh=update_refresh,
                  alerts=alerts, quiet_tick=quiet_check)


def _operator_log() -> None:
    """The server's own log lines (connections, refusals, incidents, alert failures) to
    stderr, one line each, unless the embedding program configured logging itself."""
    import logging

    root = logging.getLogger("tinyward")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s [%(process)d] %(name)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def _raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard one (each device holds a connection,
    i.e. a file descriptor; the soft limit is often 1,024); returns the limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # keep the soft limit; the caller warns if it is too small
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


@click.command("admin-token")
@click.argument("fleet_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def admin_token(fleet_dir: Path) -> None:
    """Make a new admin bearer token for FLEET_DIR and print it once.

    Only its SHA-256 is kept (FLEET_DIR/admin-token.sha256); a new token replaces the old
    one. Use it as 'Authorization: Bearer TOKEN' on /v1/devices, /v1/fleet.
    """
    from tinyward.fleet.guards import create_admin_token
    from tinyward.fleet.pki import Fleet

    Fleet.open(fleet_dir)  # refuses a folder that is not a fleet
    click.echo(create_admin_token(fleet_dir))


if TYPE_CHECKING:
    from tinyward.bench.ingest import IngestResult

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []


@click.command("ingest")
@click.option("--devices", default=200, show_default=True, type=click.IntRange(1, 5000))
@click.option("--reports", default=20000, show_default=True, type=click.IntRange(1, 10**6))
@click.option("--batch", default=50, show_default=True, type=click.IntRange(1, 50),
              help="Reports per request (1: one report per POST /v1/reports).")
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="Server processes [default: the number of cores].")
@click.option("--db", "db_urls", multiple=True, metavar="postgresql://…",
              help="Also run on this PostgreSQL database (repeatable), after SQLite, in the "
                   "same run; it gains the bench's devices and their reports.")
def bench_ingest(devices: int, reports: int, batch: int, workers: int | None,
                 db_urls: tuple[str, ...]) -> None:
    """Reports/s the real fleet server stores, against the machine's crypto limit.

    Real mTLS 1.3, real signed reports (signed before timing), SQLite with
    synchronous=FULL (and PostgreSQL with synchronous_commit=on for each --db);
    prints p50/p99 ack latency and the ECDSA P-256 verification limit
    (verifications/s per core x cores) measured in the same run.
    """
    from tinyward.bench.ingest import run_ingest
    from tinyward.fleet.store_pg import parse_url

    if reports < devices:
        raise click.UsageError("give at least one report per device (--reports >= --devices)")
    for url in db_urls:
        parse_url(url)  # a bad URL is refused before the first run, not after it
    summary: list[tuple[str, float, float]] = []
    for url in (None, *db_urls):
        store = "SQLite" if url is None else "PostgreSQL"
        click.echo(f"--- store: {store} ---")
        result = run_ingest(devices, reports, batch, workers or os.cpu_count() or 1,
                            progress=lambda text: click.echo(text, err=True), db_url=url)
        _print_ingest(result)
        summary.append((store, result.reports_per_second,
                        result.reports_per_second / result.crypto_limit))
    if len(summary) > 1:
        click.echo("stores side by side: " + "; ".join(
            f"{store} {rate:,.0f} reports/s ({share:.0%} of the crypto limit)"
            for store, rate, share in summary))


def _print_ingest(result: IngestResult) -> None:
    share = result.reports_per_second / result.crypto_limit
    server = result.server_cpu_seconds / result.stored * 1e6
    client = result.client_cpu_seconds / result.stored * 1e6
    verify = 1e6 / result.verify_per_core
    capacity = result.cores * 1e6 / (server + client)
    click.echo(f"devices {result.devices}, reports {result.reports}, batch {result.batch}, "
               f"server workers {result.workers}; Python {platform.python_version()} at "
               f"{sys.executable} ({_interpreter_linkage()})")
    click.echo(f"connecting (before the clock): {result.devices} mutual-TLS 1.3 handshakes and "
               f"device lookups in {result.connect_seconds:.2f} s; CPU per device: server "
               f"{result.connect_server_cpu_seconds / result.devices * 1e3:.2f} ms + load "
               f"generator {result.connect_client_cpu_seconds / result.devices * 1e3:.2f} ms")
    click.echo(f"stored (committed, counted in the database): {result.stored} in "
               f"{result.seconds:.2f} s = {result.reports_per_second:,.0f} reports/s")
    click.echo(f"ack latency per request: p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms")
    click.echo(f"crypto limit: {result.verify_per_core:,.0f} ECDSA P-256 verifications per "
               f"CPU-second x {result.cores} cores = {result.crypto_limit:,.0f}/s "
               "(measured before and after the run)")
    click.echo(f"ingest / crypto limit: {share:.0%} (goal: at least 60%)")
    with_connect = result.reports_per_second_with_connect
    click.echo(f"  (the whole run, the {result.devices} connections included: "
               f"{with_connect:,.0f} reports/s = {with_connect / result.crypto_limit:.0%})")
    wall_limit = result.verify_per_core_wall * result.cores
    click.echo(f"  (the same limit by the wall clock in this run, machine shared: "
               f"{result.verify_per_core_wall:,.0f}/s per core x {result.cores} = "
               f"{wall_limit:,.0f}/s; ingest / that: "
               f"{result.reports_per_second / wall_limit:.0%})")
    click.echo(f"CPU per stored report: server {server:.0f} us + load generator {client:.0f} us "
               f"(one verification: {verify:.0f} us; the server's beyond it: "
               f"{server - verify:.0f} us)")
    if result.database_cpu_seconds is not None:
        database = result.database_cpu_seconds / result.stored * 1e6
        click.echo(f"  + PostgreSQL's own processes {database:.0f} us per stored report "
                   "(not in the server's figure)")
    if len(result.worker_cpu_seconds) > 1:
        click.echo("server CPU by process (an uneven split leaves a core idle at the end): "
                   + " / ".join(f"{cpu:.2f} s" for cpu in result.worker_cpu_seconds))
    click.echo(f"CPU-bound capacity if every core were ours: {capacity:,.0f} reports/s = "
               f"{capacity / result.crypto_limit:.0%} of the crypto limit "
               f"(load {os.getloadavg()[0]:.1f} on {result.cores} cores during the run)")


def _interpreter_linkage() -> str:
    """Whether this interpreter calls libpython as a shared library (slower: see Makefile)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "linkage unknown"
    return "libpython shared" if "libpython" in maps else "libpython linked in"


BENCH_COMMANDS.append(bench_ingest)


@click.command("handshake")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Rounds per server, alternating OpenSSL and the fleet server.")
@click.option("--seconds", default=2, show_default=True, type=click.IntRange(1, 30),
              help="Length of each round.")
def bench_handshake(rounds: int, seconds: int) -> None:
    """Server CPU per mutual-TLS 1.3 handshake: the fleet server against OpenSSL alone.

    Both servers get the same certificates (ECDSA P-256), require a client certificate
    from the device CA and see the same client (openssl s_time -new: full handshakes,
    no resumption); rounds alternate and CPU is read from /proc.
    """
    from tinyward.bench.handshake import run_handshake

    result = run_handshake(rounds, float(seconds),
                           progress=lambda text: click.echo(text, err=True))
    click.echo(f"{result.openssl_version}; client: openssl s_time -new (full handshakes)")
    for name, lines in result.negotiated.items():
        click.echo(f"negotiated with {name}: {'; '.join(lines) or 'unknown'}")
    for done in result.rounds:
        click.echo(f"  {done.server:8s} {done.handshakes:5d} handshakes in {done.seconds:4.1f} s"
                   f" ({done.handshakes / done.seconds:,.0f}/s), server CPU "
                   f"{done.cpu_ms_per_handshake:.2f} ms each = {done.per_core:,.0f}/s per core")
    ossl, ours = result.median_cpu_ms("openssl"), result.median_cpu_ms("fleet")
    click.echo(f"server CPU per handshake (median): OpenSSL s_server {ossl:.2f} ms, fleet "
               f"server {ours:.2f} ms ({ours - ossl:+.2f} ms)")
    click.echo(f"fleet handshakes per core / OpenSSL's: {result.ratio:.0%} (goal: at least "
               f"50%; per round pair: {', '.join(f'{r:.0%}' for r in result.ratios)})")


BENCH_COMMANDS.append(bench_handshake)
