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
@click.option("--event-rate", type=float, default=0.2, show_default=True,
              help="Simulated sensor: events per second.")
@click.option("--seed", type=int, default=None, help="Simulated sensor: random seed.")
@click.option("--status-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the run's status as JSON here about once a second.")
@click.option("--backoff-max", type=float, default=60.0, show_default=True,
              help="Longest wait between retries when the server is unreachable.")
@click.option("--attest-nonce", default=None,
              help="Once started, sign an attestation token answering this nonce (hex, 32, 48 "
                   "or 64 bytes): it claims the mode and the protections in force in this run.")
@click.option("--attest-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write that token (with --attest-nonce).")
def run(directory: Path, server: str, air_gapped: bool, interval: float | None, size: int,
        duration: float | None, drain: float, queue_capacity: int, app_manifest: Path | None,
        frames_csv: Path | None, event_rate: float, seed: int | None,
        status_file: Path | None, backoff_max: float, attest_nonce: str | None,
        attest_out: Path | None) -> None:
    """Run the device in DIRECTORY: constant-rate signed reports over pinned mutual TLS.

    The device opens no listening socket. SIGTERM or Ctrl-C stops it cleanly; queued
    reports stay in protected storage and are sent on the next run. With --air-gapped it
    uses no network at all and shows its results on the local readout.
    """
    from tinyward.trust.device import Device

    if air_gapped:
        from tinyward.cli.device import run_air_gapped_command

        # First of all, before anything is opened or started (the sandbox inherits it all):
        # inherited descriptors closed, an empty network namespace (as root), the filter.
        from tinyward.trust.airgap import isolate

        airgap = isolate()
        for line in airgap.describe():
            click.echo(f"air gap: {line}", err=True)
        attest = _attest_request(attest_nonce, attest_out)
        lock = _take_instance(directory)
        source = (SimulatedSensor(event_rate, seed) if app_manifest is None
                  else _app_source(app_manifest, frames_csv, seed, directory))
        _started(lock, directory, source, airgap.protections(), attest, app_manifest)
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
    device.check_may_connect()  # provisioned air-gapped: refused before anything starts
    attest = _attest_request(attest_nonce, attest_out)
    lock = _take_instance(directory)
    config = RunnerConfig(
        shaper=ShaperConfig(interval=interval, size=size),
        queue=QueueConfig(capacity=queue_capacity),
        link=LinkConfig(backoff_initial=min(0.5, backoff_max), backoff_max=backoff_max),
        drain=drain,
    )
    source = (SimulatedSensor(event_rate, seed) if app_manifest is None
              else _app_source(app_manifest, frames_csv, seed, directory))
    _started(lock, directory, source, [], attest, app_manifest)
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


def _attest_request(nonce: str | None, out: Path | None) -> tuple[bytes, Path] | None:
    if (nonce is None) != (out is None):
        raise click.UsageError("--attest-nonce and --attest-out go together")
    if nonce is None or out is None:
        return None
    from tinyward.cli.device import _hex_nonce

    return _hex_nonce(nonce), out


def _take_instance(directory: Path) -> Any:
    """One running instance per device folder, in every mode (DeviceBusy otherwise);
    held until the command ends, recording the mode this process actually enforces."""
    from tinyward.trust.airgap import enforced_mode
    from tinyward.trust.device import Device
    from tinyward.trust.instance import InstanceLock

    Device.open(directory)  # NotADevice before any lock file is made in a stranger's folder
    lock = InstanceLock(directory, enforced_mode(), lend=True)
    lock.__enter__()
    click.get_current_context().call_on_close(lambda: lock.__exit__(None, None, None))
    return lock


def _started(lock: Any, directory: Path, source: Any, airgap: list[str],
             attest: tuple[bytes, Path] | None, app_manifest: Path | None) -> None:
    """Record what is in force in this run; sign the attestation token if one was asked."""
    from tinyward._fsutil import atomic_write
    from tinyward.trust.airgap import enforced_mode
    from tinyward.trust.device import Device

    sandbox = [p.name for p in getattr(source, "protections", []) if p.active]
    protections = tuple(sorted(set(sandbox + airgap)))
    lock.record(mode=enforced_mode(), protections=protections)
    if attest is None:
        return
    nonce, out = attest
    measured = [("App", [app_manifest.parent])] if app_manifest is not None else []
    token = Device.open(directory).attestation_token(nonce, measured=measured,
                                                     protections=protections)
    atomic_write(out, token, mode=0o644)
    click.echo(f"attestation token ({len(token)} bytes; mode {enforced_mode()}, "
               f"{len(protections)} protections) written to {out}", err=True)


def _app_source(manifest_path: Path, frames_csv: Path | None, seed: int | None,
                device_dir: Path) -> Any:
    """The sandboxed application as the results source (tinyward.app).

    The device folder (root key, keystore, storage) is always a secret path, and the
    device refuses to start unless the sandbox proves, on this host, that the application
    cannot read it (SandboxError: one `error:` line, exit status non-zero). The
    protections in force are printed before any application code runs.
    """
    from tinyward.app.frames import csv_frames, simulated_frames
    from tinyward.app.manifest import load_manifest
    from tinyward.app.sandbox import SandboxConfig, check_before_start
    from tinyward.app.source import AppResultSource

    manifest = load_manifest(manifest_path)
    config = SandboxConfig(secret_paths=(Path(device_dir),))
    protections = check_before_start(manifest, config)
    click.echo(f"application {manifest.name}: protections in force", err=True)
    for p in protections:
        click.echo(f"  [{'on ' if p.active else 'off'}] {p.name}: {p.reason}", err=True)
    frames = (iter(csv_frames(frames_csv, manifest)) if frames_csv is not None
              else simulated_frames(manifest, seed or 0))
    source = AppResultSource.start(manifest, frames, config)
    source.protections = protections  # for the attestation claims of this run
    return source


@click.command("shaping")
@click.option("--duration", type=click.FloatRange(10, 3600), default=60.0, show_default=True,
              help="Seconds of traffic to record.")
@click.option("--interval", type=click.FloatRange(0.05, 10), default=0.1, show_default=True,
              help="Report interval during the benchmark (short, for many intervals).")
@click.option("--size", type=int, default=1024, show_default=True, help="Report size in bytes.")
@click.option("--seed", type=int, default=7, show_default=True)
def bench_shaping(duration: float, interval: float, size: int, seed: int) -> None:
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
    r = shaping_bench.run(duration=duration, interval=interval, size=size, seed=seed)
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
    verdict = "PASS" if r.auc_shaped <= 0.55 else "FAIL"
    console.print(f"shaping on: AUC {r.auc_shaped:.3f} <= 0.55: {verdict}")
    if r.auc_shaped > 0.55:
        raise SystemExit(1)


COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []
