"""`tinyward fleet serve`, `tinyward fleet admin-token` and `tinyward bench ingest`.

Kept apart from ``cli/fleet.py`` (the PKI commands) so the two can change independently;
``cli/fleet.py`` adds :data:`serve` and :data:`admin_token` to its ``fleet`` group.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from tinyward.errors import Misuse

PASSPHRASE_ENV = "TINYWARD_FLEET_PASSPHRASE"


def _passphrase() -> bytes:
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        value = click.prompt("Fleet passphrase", hide_input=True)
    if not value:
        raise Misuse(f"set {PASSPHRASE_ENV} to the fleet passphrase (it opens the server key)")
    return value.encode("utf-8")


@click.command("serve")
@click.argument("fleet_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port, printed at start).")
@click.option("--db", "db_url", default=None,
              help="Database URL [default: sqlite:///FLEET_DIR/reports.db].")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes sharing the port (SO_REUSEPORT).")
@click.option("--rate", default=50.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Reports per second per device (token bucket, per worker).")
@click.option("--burst", default=500.0, show_default=True, type=click.FloatRange(min=1),
              help="Token bucket size, in reports.")
@click.option("--max-connections-per-ip", default=256, show_default=True,
              type=click.IntRange(1), help="Concurrent connections per client address.")
def serve(fleet_dir: Path, host: str, port: int, db_url: str | None, workers: int,
          rate: float, burst: float, max_connections_per_ip: int) -> None:
    """Run the fleet server for FLEET_DIR (TLS 1.3, device client certificates).

    The fleet passphrase comes from the TINYWARD_FLEET_PASSPHRASE environment variable.
    Stops cleanly on SIGTERM or Ctrl-C.
    """
    from tinyward.fleet.runner import serve_forever
    from tinyward.fleet.server import ServerConfig

    config = ServerConfig(rate_per_second=rate, burst=burst,
                          max_connections_per_ip=max_connections_per_ip)
    url = db_url or f"sqlite:///{(fleet_dir / 'reports.db').absolute()}"

    def announce(bound: int) -> None:
        click.echo(f"tinyward fleet server listening on https://{host}:{bound} "
                   f"(workers: {workers}, db: {url})", nl=True)

    serve_forever(fleet_dir, _passphrase(), url, host, port, config, workers, announce)


@click.command("admin-token")
@click.argument("fleet_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def admin_token(fleet_dir: Path) -> None:
    """Make a new admin bearer token for FLEET_DIR and print it once.

    Only its SHA-256 is kept (FLEET_DIR/admin-token.sha256); a new token replaces the old
    one. Use it as 'Authorization: Bearer TOKEN' on /v1/devices, /v1/fleet.
    """
    from tinyward.fleet.pki import Fleet
    from tinyward.fleet.server import create_admin_token

    Fleet.open(fleet_dir)  # refuses a folder that is not a fleet
    click.echo(create_admin_token(fleet_dir))


COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []
