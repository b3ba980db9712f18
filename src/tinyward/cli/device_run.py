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
from typing import Any

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
@click.option("--air-gapped", is_flag=True,
              help="Use no network at all (enforced by a kernel filter on the whole process "
                   "tree); results go to the local readout instead of a server.")
@click.option("--interval", type=click.FloatRange(0.01, 86400), default=None,
              help="Seconds between reports, one per interval always [default: 10; "
                   "air-gapped: 1].")
@click.option("--size", type=int, default=1024, show_default=True,
              help="Exact size of every report in bytes (must match the fleet's).")
@click.option("--duration", type=float, default=None,
              help="Stop making reports after this many seconds (default: until SIGTERM).")
@click.option("--drain", type=float, default=0.0, show_default=True,
              help="After --duration, keep delivering queued reports for up to this long.")
@click.option("--queue-capacity", type=int, default=256, show_default=True,
              help="Reports kept while the server is unreachable (then the oldest is dropped,"
                   " counted).")
@click.option("--app", "app_manifest", type=click.Path(dir_okay=False, exists=True,
              path_type=Path), default=None,
              help="Run this sandboxed application (its sensor.toml) as the source of results "
                   "instead of the simulated sensor.")
@click.option("--frames", "frames_csv", type=click.Path(dir_okay=False, exists=True,
              path_type=Path), default=None,
              help="With --app: feed the application the frames of this CSV file "
                   "[default: simulated frames].")
@click.option("--fault-window", type=click.FloatRange(0.1, 86400), default=None,
              help="With --app: at most one application fault per window of this many "
                   "seconds, told when the window is over [default: 60; see `app inspect`].")
@click.option("--event-rate", type=float, default=0.2, show_default=True,
              help="Simulated sensor: events per second.")
@click.option("--seed", type=int, default=None, help="Simulated sensor: random seed.")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the run's status as JSON here about once a second.")
@click.option("--backoff-max", type=float, default=60.0, show_default=True,
              help="Longest wait between retries when the server is unreachable.")
def run(directory: Path, server: str, air_gapped: bool, interval: float | None, size: int,
        duration: float | None, drain: float, queue_capacity: int, app_manifest: Path | None,
        frames_csv: Path | None, fault_window: float | None, event_rate: float,
        seed: int | None, status_file: Path | None, backoff_max: float) -> None:
    """Run the device in DIRECTORY: constant-rate signed reports over pinned mutual TLS.

    The device opens no listening socket. SIGTERM or Ctrl-C stops it cleanly; queued
    reports stay in protected storage and are sent on the next run. With --air-gapped it
    uses no network at all and shows its results on the local readout.
    """
    from tinyward.trust.device import Device

    if air_gapped:
        from tinyward.cli.device import run_air_gapped_command

        # The filter goes on before the application starts, so its sandbox inherits it.
        from tinyward.trust.airgap import forbid_network

        forbid_network()
        source = (SimulatedSensor(event_rate, seed) if app_manifest is None
                  else _app_source(app_manifest, frames_csv, seed, fault_window))
        try:
            run_air_gapped_command(directory, 1.0 if interval is None else interval, duration,
                                   source)
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()
        return
    interval = 10.0 if interval is None else interval

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    device = Device.open(directory)
    config = RunnerConfig(
        shaper=ShaperConfig(interval=interval, size=size),
        queue=QueueConfig(capacity=queue_capacity),
        link=LinkConfig(backoff_initial=min(0.5, backoff_max), backoff_max=backoff_max),
        drain=drain,
    )
    source = (SimulatedSensor(event_rate, seed) if app_manifest is None
              else _app_source(app_manifest, frames_csv, seed, fault_window))
    runner = DeviceRunner(device, server, config, source, status_file=status_file)
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
        close = getattr(source, "close", None)
        if callable(close):
            close()
    click.echo(
        f"stopped: {stats.generated} reports made, acknowledged up to #{runner.queue.acked}, "
        f"{len(runner.queue)} still queued (kept for the next run), "
        f"{runner.queue.dropped} dropped (counted), {stats.failures} failed attempts"
        + (f"; last error: {stats.last_error}" if stats.last_error else ""), err=True)


def _app_source(manifest_path: Path, frames_csv: Path | None, seed: int | None,
                fault_window: float | None = None) -> Any:
    """The sandboxed application as the results source (tinyward.app)."""
    from tinyward.app.frames import csv_frames, simulated_frames
    from tinyward.app.manifest import load_manifest
    from tinyward.app.source import AppResultSource
    from tinyward.app.supervisor import SupervisorConfig

    manifest = load_manifest(manifest_path)
    frames = (iter(csv_frames(frames_csv, manifest)) if frames_csv is not None
              else simulated_frames(manifest, seed or 0))
    config = SupervisorConfig() if fault_window is None else SupervisorConfig(
        fault_window_s=fault_window)
    return AppResultSource.start(manifest, frames, config)


@click.command("shaping")
@click.option("--duration", type=click.FloatRange(10, 3600), default=60.0, show_default=True,
              help="Seconds of traffic to record.")
@click.option("--interval", type=click.FloatRange(0.05, 10), default=0.1, show_default=True,
              help="Report interval during the benchmark (short, for many intervals).")
@click.option("--size", type=int, default=1024, show_default=True, help="Report size in bytes.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--hostile/--no-hostile", default=True, show_default=True,
              help="Also run a sandboxed app that signals secret bits through its latency.")
def bench_shaping(duration: float, interval: float, size: int, seed: int, hostile: bool) -> None:
    """Can an eavesdropper on the TLS records tell intervals with events from quiet ones?

    Prints the classifier's ROC AUC with shaping on (must be <= 0.55) and off (same run,
    same events), and the bandwidth cost in bytes per hour.
    """
    from rich.console import Console
    from rich.table import Table

    from tinyward.bench import shaping as shaping_bench

    console = Console()
    console.print(f"recording {duration:g} s of two devices' TLS records on loopback "
                  f"(interval {interval:g} s, random events)…")
    r = shaping_bench.run(duration=duration, interval=interval, size=size, seed=seed,
                          hostile=hostile)
    table = Table(title=f"traffic analysis: {r.intervals} intervals, {r.with_events} with "
                        f"events ({r.events} events), random forest, 5-fold CV x3")
    for column in ("", "shaping on", "shaping off (baseline)"):
        table.add_column(column, justify="right")
    table.add_row("ROC AUC (0.5 = learns nothing)", f"{r.auc_shaped:.3f}", f"{r.auc_unshaped:.3f}")
    table.add_row("chance: shaped, labels shuffled",
                  " ".join(f"{a:.3f}" for a in r.auc_null), "")
    table.add_row("reports sent", str(r.reports_shaped), str(r.reports_unshaped))
    table.add_row(f"bytes/hour at {r.interval:g} s (measured, TLS)",
                  f"{r.shaped_bytes_per_hour:,.0f}", f"{r.unshaped_bytes_per_hour:,.0f}")
    console.print(table)
    console.print(f"shaped upstream record sizes seen: {sorted(set(r.upstream_record_sizes))} "
                  f"(the report, {r.size} B, and the HTTP request head, "
                  f"{r.request_head_bytes} B, each in a record with 22 B of TLS 1.3 overhead; "
                  "the others are the handshake's)")
    console.print(f"cost per shaped report, both directions, TLS layer: {r.bytes_per_report:,.0f} B"
                  f" -> {r.bytes_per_hour_at(10.0):,.0f} B/h at the default 10 s interval, "
                  f"{r.bytes_per_hour_at(60.0):,.0f} B/h at 60 s")
    ok = r.auc_shaped <= 0.55
    verdict = "PASS" if ok else "FAIL"
    console.print(f"shaping on: AUC {r.auc_shaped:.3f} <= 0.55: {verdict}")
    if r.hostile:
        _print_hostile(console, r)
        defended = next(h for h in r.hostile if h.mode == "own thread")
        ok = ok and defended.auc <= 0.55
    if not ok:
        raise SystemExit(1)


def _print_hostile(console: Any, r: Any) -> None:
    from rich.table import Table

    table = Table(title="hostile app signalling secret bits through its latency and CPU use "
                        "(shaping on)")
    for column in ("app fed", "ROC AUC", "secret bits recovered", "reports", "frames",
                   "incidents"):
        table.add_column(column, justify="right")
    for h in r.hostile:
        table.add_row(h.mode, f"{h.auc:.3f}", f"{h.bits_right} of {h.bits} (chance {h.bits / 2:g})",
                      str(h.reports), str(h.frames_fed), ", ".join(f"{k} {n}" for k, n in h.incidents.items()) or "none")
    console.print(table)
    defended = next(h for h in r.hostile if h.mode == "own thread")
    verdict = "PASS" if defended.auc <= 0.55 else "FAIL"
    console.print(f"hostile app on its own frame clock: AUC {defended.auc:.3f} <= 0.55: {verdict}")


COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []
