"""`tinyward device run`: run a provisioned device against its fleet server.

Exports the click command :data:`run` (added to the ``device`` group in ``cli/device.py``)
and ``tinyward bench shaping``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from tinyward.link.client import LinkConfig
from tinyward.link.queue import QueueConfig
from tinyward.link.runner import DeviceRunner, RunnerConfig, SimulatedSensor
from tinyward.link.shaper import ShaperConfig, bandwidth_bytes_per_hour

DEFAULT_SERVER = "https://127.0.0.1:8443"


@click.command("run")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--server", default=DEFAULT_SERVER, show_default=True,
              help="The fleet server, https://host:port (its key must match the pin).")
@click.option("--interval", type=float, default=10.0, show_default=True,
              help="Seconds between reports (one report per interval, always).")
@click.option("--size", type=int, default=1024, show_default=True,
              help="Exact size of every report in bytes (must match the fleet's).")
@click.option("--duration", type=float, default=None,
              help="Stop making reports after this many seconds (default: until SIGTERM).")
@click.option("--drain", type=float, default=0.0, show_default=True,
              help="After --duration, keep delivering queued reports for up to this long.")
@click.option("--queue-capacity", type=int, default=256, show_default=True,
              help="Reports kept while the server is unreachable (then the oldest is dropped,"
                   " counted).")
@click.option("--event-rate", type=float, default=0.2, show_default=True,
              help="Simulated sensor: events per second.")
@click.option("--seed", type=int, default=None, help="Simulated sensor: random seed.")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the run's status as JSON here about once a second.")
@click.option("--backoff-max", type=float, default=60.0, show_default=True,
              help="Longest wait between retries when the server is unreachable.")
def run(directory: Path, server: str, interval: float, size: int, duration: float | None,
        drain: float, queue_capacity: int, event_rate: float, seed: int | None,
        status_file: Path | None, backoff_max: float) -> None:
    """Run the device in DIRECTORY: constant-rate signed reports over pinned mutual TLS.

    The device opens no listening socket. SIGTERM or Ctrl-C stops it cleanly; queued
    reports stay in protected storage and are sent on the next run.
    """
    from tinyward.trust.device import Device

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    device = Device.open(directory)
    config = RunnerConfig(
        shaper=ShaperConfig(interval=interval, size=size),
        queue=QueueConfig(capacity=queue_capacity),
        link=LinkConfig(backoff_initial=min(0.5, backoff_max), backoff_max=backoff_max),
        drain=drain,
    )
    runner = DeviceRunner(device, server, config, SimulatedSensor(event_rate, seed),
                          status_file=status_file)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"device {device.device_id[:16]}… reporting to {server} every {interval:g} s, "
               f"{size} bytes per report (~{bandwidth_bytes_per_hour(config.shaper):,.0f} B/h "
               "plus HTTP)", err=True)
    try:
        stats = runner.run(stop, duration)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    click.echo(
        f"stopped: {stats.generated} reports made, acknowledged up to #{runner.queue.acked}, "
        f"{len(runner.queue)} still queued (kept for the next run), "
        f"{runner.queue.dropped} dropped (counted), {stats.failures} failed attempts"
        + (f"; last error: {stats.last_error}" if stats.last_error else ""), err=True)


COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []


@click.command("shaping")
def bench_shaping() -> None:
    """(stub)"""
