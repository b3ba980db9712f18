"""`tinyward device run`: run a provisioned device against its fleet server.

Exports the click command :data:`run` (added to the ``device`` group in ``cli/device.py``)
and ``tinyward bench shaping``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import click

from tinyward.app.results import ResultSource
from tinyward.cli._show import result_text
from tinyward.errors import Misuse, TinywardError
from tinyward.link.client import LinkConfig, ServerURL
from tinyward.link.queue import QueueConfig
from tinyward.link.runner import DeviceRunner, RunnerConfig, RunStats, SimulatedSensor
from tinyward.link.shaper import ShaperConfig, bandwidth_bytes_per_hour

DEFAULT_SERVER = "https://127.0.0.1:8443"


def _server_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    # A typo in the URL is the person's mistake (exit 2), not an API misuse (exit 3).
    try:
        ServerURL.parse(value)
    except Misuse as error:
        raise click.BadParameter(str(error)) from None
    return value


@click.command("run")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--server", default=DEFAULT_SERVER, show_default=True, callback=_server_url,
              help="The fleet server, https://host:port (its key must match the pin).")
@click.option("--air-gapped", is_flag=True,
              help="Use no network at all (enforced by a kernel filter on the whole process "
                   "tree); results go to the local readout instead of a server.")
@click.option("--interval", type=click.FloatRange(0.01, 86400), default=None,
              help="Seconds between reports, one per interval always; must match the "
                   "schedule the fleet recorded for the device (`fleet devices`), whose "
                   "rate limit follows it [default: 10; air-gapped: 1].")
@click.option("--size", type=click.IntRange(256, 16384), default=1024, show_default=True,
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
@click.option("-v", "--verbose", is_flag=True,
              help="One line per report made, delivered and acknowledged [default: a status "
                   "line on a terminal, nothing in a pipe].")
@click.option("--slots", "slots_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Folder of the signed updates' A/B slots; the sandbox's user must be able "
                   "to enter it to run an updated app [default: DIRECTORY.slots, beside the "
                   "device folder].")
@click.option("--attest-nonce", default=None,
              help="Once started, sign an attestation token answering this nonce (hex, 32, 48 "
                   "or 64 bytes): it claims the mode and the protections in force in this run.")
@click.option("--attest-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write that token (with --attest-nonce).")
@click.option("--watch", "watch_iface", default=None, metavar="IFACE",
              help="Watch this interface of the device's network namespace with the network "
                   "detector (--net-model): the trusted core holds a capture socket "
                   "(needs CAP_NET_RAW); alarms become incident counts in the next report. "
                   "See docs/on-device-detection.md.")
@click.option("--net-model", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="With --watch: a packet model from `tinyward detect train "
                                 "BENIGN.pcap` (int8 kinds score as the C export does).")
@click.option("--sensor-model", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="With --app: score the application's input frames for "
                                 "tampering with this model (`detect train --sensors`).")
@click.option("--unsafe-debug-port", type=click.IntRange(1, 65535), default=None, hidden=True,
              help="UNSAFE, the assessment lab's control only: listen on this port.")
@click.option("--unsafe-no-pin", is_flag=True, hidden=True,
              help="UNSAFE, the assessment lab's control only: skip the server key pin.")
def run(directory: Path, server: str, air_gapped: bool, interval: float | None, size: int,
        duration: float | None, drain: float, queue_capacity: int, app_manifest: Path | None,
        frames_csv: Path | None, fault_window: float | None, event_rate: float,
        seed: int | None, status_file: Path | None, backoff_max: float, verbose: bool,
        attest_nonce: str | None, attest_out: Path | None, slots_dir: Path | None,
        watch_iface: str | None, net_model: Path | None, sensor_model: Path | None,
        unsafe_debug_port: int | None = None, unsafe_no_pin: bool = False) -> None:
    """Run the device in DIRECTORY: constant-rate signed reports over pinned mutual TLS.

    The device opens no listening socket. SIGTERM or Ctrl-C stops it cleanly; queued
    reports stay in protected storage and are sent on the next run. With --air-gapped it
    uses no network at all and shows its results on the local readout.
    """
    from tinyward.trust.device import Device

    if (watch_iface is None) != (net_model is None):
        raise click.UsageError("--watch and --net-model go together")
    if sensor_model is not None and app_manifest is None:
        raise click.UsageError("--sensor-model scores the application's input frames: "
                               "it needs --app")
    if air_gapped and (watch_iface is not None or sensor_model is not None):
        raise click.UsageError("--watch and --sensor-model report incidents to the fleet: "
                               "not with --air-gapped")
    if air_gapped:
        # First of all, before anything is opened or started (the sandbox inherits it all):
        # inherited descriptors closed, an empty network namespace (as root), the filter.
        from tinyward.trust.airgap import isolate

        # May re-execute this process: handlers come after it.
        airgap = isolate(application=app_manifest is not None)
        stop = _stop_on_signals()
        for line in airgap.describe():
            click.echo(f"air gap: {line}", err=True)
        attest = _attest_request(attest_nonce, attest_out)
        lock = _take_instance(directory)
        source = (SimulatedSensor(event_rate, seed) if app_manifest is None
                  else _app_source(app_manifest, frames_csv, seed, directory, fault_window))
        _started(lock, directory, source, airgap.protections(), attest, app_manifest)
        try:
            run_air_gapped_command(directory, 1.0 if interval is None else interval, duration,
                                   source, stop)
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()
        return
    interval = 10.0 if interval is None else interval
    stop = _stop_on_signals()

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    device = Device.open(directory)
    device.check_may_connect()  # provisioned air-gapped: refused before anything starts
    attest = _attest_request(attest_nonce, attest_out)
    lock = _take_instance(directory)
    config = RunnerConfig(
        shaper=ShaperConfig(interval=interval, size=size),
        queue=QueueConfig(capacity=queue_capacity),
        link=LinkConfig(backoff_initial=min(0.5, backoff_max), backoff_max=backoff_max,
                        unsafe_unpinned=unsafe_no_pin),
        drain=drain, unsafe_debug_port=unsafe_debug_port,
    )
    if unsafe_debug_port is not None or unsafe_no_pin:
        click.echo("warning: UNSAFE lab control on (a listening debug port or no server pin): "
                   "never on a device", err=True)
    # Signed updates (None unless the bundle carries an update root): the agent's power-cut
    # recovery runs now, before anything is started from its slots.
    running: dict[str, Any] = {}
    # Models are read (and refused) before anything starts; the capture socket is opened
    # before the application, which never gets it.
    from tinyward.link.watch_device import DeviceWatch

    watch = DeviceWatch.start(watch_iface, net_model, sensor_model)
    click.get_current_context().call_on_close(watch.close)
    for line in watch.describe():
        click.echo(f"watch: {line}", err=True)
    update = _device_updates(device, interval, running, slots_dir)
    if update is not None:
        app_manifest = _installed_app(update, app_manifest)
    source = (SimulatedSensor(event_rate, seed) if app_manifest is None
              else _app_source(app_manifest, frames_csv, seed, directory, fault_window,
                               watch.tap))
    _started(lock, directory, source, [], attest, app_manifest, update)
    watched = WatchedSource(source, watch.totals)
    if update is not None:
        running["restart"] = lambda component: _after_acceptance(
            component, update, watched, lock, directory, attest, frames_csv, seed, fault_window,
            app_manifest, watch.tap)
    runner = DeviceRunner(device, server, config, watched, status_file=status_file,
                          fetch=update.channel if update else None,
                          update_status=update.status if update else None,
                          watch_status=watch.status if watch.active else None)
    running["runner"] = runner
    click.echo(f"device {device.device_id[:16]}… reporting to {server} every {interval:g} s, "
               f"{size} bytes per report (~{bandwidth_bytes_per_hour(config.shaper):,.0f} B/h "
               "plus HTTP)", err=True)
    progress = RunProgress(runner.stats, lambda: runner.queue.acked, verbose=verbose,
                           live=sys.stderr.isatty(), latest=lambda: watched.latest)
    progress.start()
    try:
        stats = runner.run(stop, duration)
    finally:
        progress.stop()
        if update is not None:
            update.close()
        close = getattr(source, "close", None)
        if callable(close):
            close()
        watch.close()
    for line in watch.summary():
        click.echo(f"watch: {line}", err=True)
    click.echo(
        f"stopped: {stats.generated} reports made, acknowledged up to #{runner.queue.acked}, "
        f"{len(runner.queue)} still queued (kept for the next run), "
        f"{runner.queue.dropped} dropped (counted), {stats.failures} failed attempts"
        + (f"; last error: {stats.last_error}" if stats.last_error else ""), err=True)
    failure = run_failure(stats)
    if failure is not None:
        raise NothingDelivered(failure)


def _stop_on_signals() -> threading.Event:
    """SIGTERM and Ctrl-C set the returned event from here on, before the slow start-up
    (sandbox checks, the application's start): a signal during start-up ends the run
    cleanly as soon as it can begin, instead of killing the process half-started. The
    handlers stay for the life of this command process."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    return stop


class NothingDelivered(TinywardError):
    """`device run` ended without the server taking its reports (unreachable or refused)."""


def run_failure(stats: RunStats) -> str | None:
    """Why a connected run failed, or ``None``: exit 0 means reports reached the server."""
    if stats.generated and not stats.delivered:
        why = f": {stats.last_error}" if stats.last_error else ""
        return f"no report was delivered ({stats.generated} made, kept in the queue){why}"
    if stats.refusals.get("ServerRefused") and stats.last_error:
        return f"the server stopped taking reports: {stats.last_error}"
    return None


class WatchedSource:
    """Passes a results source through unchanged, keeping the newest result to show.

    :meth:`replace` swaps the source (the app restarted after an accepted update) between
    two reports; incident totals carry over, so the report's deltas stay right."""

    def __init__(self, source: Any,
                 watch: Callable[[], Mapping[str, int]] | None = None) -> None:
        """``watch``: the core's own detectors' running incident totals (added to the
        source's; see link/watch_device.py)."""
        self._source = source
        self._watch = watch
        self._lock = threading.Lock()
        self._retired: dict[str, int] = {}  # incident totals of replaced sources
        self.latest: Mapping[str, Any] | None = None
        self.taken = 0

    def take(self, now: float) -> list[Mapping[str, Any]]:
        with self._lock:
            results: list[Mapping[str, Any]] = self._source.take(now)
        if results:
            self.latest, self.taken = results[-1], self.taken + len(results)
        return results

    def incidents(self) -> dict[str, int]:
        with self._lock:
            counter = getattr(self._source, "incidents", None)
            totals = dict(self._retired)
            for kind, n in (dict(counter()) if callable(counter) else {}).items():
                totals[kind] = totals.get(kind, 0) + n
        for kind, n in (dict(self._watch()) if self._watch is not None else {}).items():
            totals[kind] = totals.get(kind, 0) + n
        return totals

    def replace(self, source: Any) -> Any:
        """Use ``source`` from the next report on; returns the old one (to close)."""
        with self._lock:
            old, self._source = self._source, source
            counter = getattr(old, "incidents", None)
            for kind, n in (dict(counter()) if callable(counter) else {}).items():
                self._retired[kind] = self._retired.get(kind, 0) + n
        return old

    def __getattr__(self, name: str) -> Any:  # next_time, healthy, close, protections …
        return getattr(self._source, name)


class RunProgress:
    """What a person sees while the device runs: a status line on a terminal, or (verbose)
    one line per report made and per acknowledgement. Reads the runner's counters from a
    thread about four times a second; never blocks the runner."""

    def __init__(self, stats: RunStats, acked: Callable[[], int], verbose: bool, live: bool,
                 echo: Callable[[str], None] | None = None, period: float = 0.25,
                 latest: Callable[[], Mapping[str, Any] | None] = lambda: None) -> None:
        self._stats, self._acked, self._latest = stats, acked, latest
        self._shown_result: Mapping[str, Any] | None = None
        self._verbose, self._live = verbose, live and not verbose
        self._echo = echo or (lambda text: click.echo(text, err=True))
        self._period = period
        # made, acknowledged up to, last error: what was shown last
        self._seen: tuple[int, int, str | None] = (stats.generated, acked(), None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="run-progress")

    def start(self) -> None:
        if self._verbose or self._live:
            self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(timeout=2)
        self.poll()
        if self._live:
            click.echo("", err=True)  # end the status line

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            self.poll()

    def poll(self) -> None:
        """Show what changed since the last call."""
        s = self._stats
        now = (s.generated, self._acked(), s.last_error)
        made, acked, error = self._seen
        result = self._latest()
        new_result = result is not None and result is not self._shown_result
        if now == self._seen and not new_result:
            return
        self._seen, self._shown_result = now, result
        if self._live:
            text = status_line(s, now[1])
            if result is not None:
                text += f" | {result_text(result)}"
            click.echo(f"\r{text[:79]:<79}", nl=False, err=True)
            return
        if new_result and result is not None:
            self._echo(f"result: {result_text(result)}")
        if now[0] > made and s.last_seq is not None:
            first = s.last_seq - (now[0] - made) + 1
            numbers = f"#{s.last_seq}" if first == s.last_seq else f"#{first}..#{s.last_seq}"
            self._echo(f"report {numbers} made and queued")
        if now[1] > acked:
            numbers = f"#{now[1]}" if now[1] == acked + 1 else f"#{acked + 1}..#{now[1]}"
            self._echo(f"report {numbers} delivered and acknowledged by the server")
        if s.last_error and s.last_error != error:
            self._echo(f"not delivered: {s.last_error}")


def status_line(s: RunStats, acked: int) -> str:
    """One line: the newest report, what the server acknowledged, the trouble."""
    newest = f"#{s.last_seq}" if s.last_seq is not None else "none yet"
    line = f"newest report {newest}, acknowledged up to #{acked}, {s.generated} made this run"
    if s.last_error:
        line += f" | {s.last_error}"
    return line


def _attest_request(nonce: str | None, out: Path | None) -> tuple[bytes, Path] | None:
    if (nonce is None) != (out is None):
        raise click.UsageError("--attest-nonce and --attest-out go together")
    if nonce is None or out is None:
        return None
    from tinyward.cli._nonce import hex_nonce

    return hex_nonce(nonce, "--attest-nonce"), out


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
             attest: tuple[bytes, Path] | None, app_manifest: Path | None,
             updates: Any = None) -> None:
    """Record what is in force in this run; sign the attestation token if one was asked
    (with the update slots' measurements, when the device takes signed updates: the
    token shows what runs, the new version after an acceptance)."""
    from tinyward._fsutil import atomic_write
    from tinyward.trust.airgap import enforced_mode
    from tinyward.trust.device import Device

    sandbox = [p.name for p in getattr(source, "protections", []) if p.active]
    protections = tuple(sorted(set(sandbox + airgap)))
    lock.record(mode=enforced_mode(), protections=protections)
    if attest is None:
        return
    nonce, out = attest
    components = updates.agent.software_components() if updates is not None else []
    from_slot = any(getattr(c, "measurement_type", None) == "App" for c in components)
    measured = ([("App", [app_manifest.parent])] if app_manifest is not None and not from_slot
                else [])
    token = Device.open(directory).attestation_token(nonce, measured=measured,
                                                     protections=protections,
                                                     components=components)
    atomic_write(out, token, mode=0o644)
    click.echo(f"attestation token ({len(token)} bytes; mode {enforced_mode()}, "
               f"{len(protections)} protections) written to {out}", err=True)


def _app_source(manifest_path: Path, frames_csv: Path | None, seed: int | None,
                device_dir: Path, fault_window: float | None = None,
                tap: Callable[[Any, tuple[str, ...]], Any] | None = None) -> Any:
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
    from tinyward.app.supervisor import SupervisorConfig
    from tinyward.cli._access import check_app_readable

    manifest = load_manifest(manifest_path)
    config = SandboxConfig(secret_paths=(Path(device_dir),))
    # Said now, not found out later: a sandbox that cannot read the app never starts it.
    check_app_readable(manifest.folder, config.user, manifest.models)
    protections = check_before_start(manifest, config)
    click.echo(f"application {manifest.name}: protections in force", err=True)
    for p in protections:
        click.echo(f"  [{'on ' if p.active else 'off'}] {p.name}: {p.reason}", err=True)
    frames = (iter(csv_frames(frames_csv, manifest)) if frames_csv is not None
              else simulated_frames(manifest, seed or 0))
    if tap is not None:  # the core scores each frame before the application gets it
        frames = tap(frames, tuple(manifest.input.channels))
    supervision = SupervisorConfig() if fault_window is None else SupervisorConfig(
        fault_window_s=fault_window)
    source = AppResultSource.start(manifest, frames, supervision, sandbox_config=config)
    source.protections = protections  # for the attestation claims of this run
    return source


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


def _device_updates(device: Any, interval: float, running: dict[str, Any],
                    slots_dir: Path | None = None) -> Any:
    """The device's signed updates (client and A/B agent joined, issue 14), or None when
    its bundle carries no update root (docs/updates.md). ``running`` gets the runner
    (for the health check's link check) and the restart hook once they exist."""
    try:
        from tinyward.update.runtime import DeviceUpdates
    except ModuleNotFoundError:  # python-tuf (the device extra) is not installed
        return None
    from tinyward.update.health import TrialConfig

    wait = 2 * interval + 2.0

    def link_ok() -> bool:
        # The trial's "the link reaches the fleet": an acknowledgement newer than this
        # check, within two report intervals (the runner goes on reporting meanwhile).
        runner = running.get("runner")
        if runner is None:
            return False
        seen = runner.stats.delivered
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if runner.stats.delivered > seen:
                return True
            time.sleep(min(0.05, interval / 4))
        return False

    def accepted(component: str) -> None:
        restart = running.get("restart")
        if restart is not None:
            restart(component)

    return DeviceUpdates.for_device(device, link=link_ok, on_accepted=accepted,
                                    trial=TrialConfig(deadline_s=max(30.0, wait + 20.0)),
                                    slots_dir=slots_dir)


def _installed_app(updates: Any, app_manifest: Path | None) -> Path | None:
    """The app to run: the accepted app of the update slots when one is installed (it
    replaces ``--app``, the factory version, and the simulated sensor), else ``--app``."""
    content = updates.agent.active_content("app")
    if content is None:
        return app_manifest
    manifest = Path(content) / "sensor.toml"
    click.echo(f"application from the update slot {content} (version "
               f"{updates.installed('app')})" + (f", not {app_manifest}" if app_manifest
                                                  else ""), err=True)
    return manifest


def _after_acceptance(component: str, updates: Any, watched: WatchedSource, lock: Any,
                      directory: Path, attest: tuple[bytes, Path] | None,
                      frames_csv: Path | None, seed: int | None,
                      fault_window: float | None, app_manifest: Path | None,
                      tap: Callable[[Any, tuple[str, ...]], Any] | None = None) -> None:
    """After an accepted update (in the update's thread): an app is restarted from its new
    slot, between two reports; the attestation token, if one was asked, is signed again
    so that it shows the new measurement."""
    manifest = app_manifest
    source: Any = watched
    if component == "app":
        content = updates.agent.active_content("app")
        if content is None:
            return
        manifest = Path(content) / "sensor.toml"
        fresh = _app_source(manifest, frames_csv, seed, directory, fault_window, tap)
        old = watched.replace(fresh)
        close = getattr(old, "close", None)
        if callable(close):
            close()
        click.echo(f"update: application restarted from {content} "
                   f"(version {updates.installed('app')})", err=True)
        source = fresh
    _started(lock, directory, source, [], attest, manifest, updates)


def run_air_gapped_command(directory: Path, interval: float, duration: float | None,
                           source: ResultSource, stop: threading.Event | None = None) -> None:
    """`tinyward device run --air-gapped`: the loop of :mod:`tinyward.readout.airgapped`."""
    from rich.console import Console

    from tinyward.readout.airgapped import run_air_gapped
    from tinyward.trust.device import Device

    console = Console()

    dev = Device.open(directory)
    console.print(f"device {dev.device_id[:16]}… running air-gapped: network sockets are refused "
                  "by a seccomp filter on this process tree")
    final = run_air_gapped(dev, source, interval=interval, duration=duration, stop=stop)
    latest = result_text(final.results[-1]) if final.results else "none"
    console.print(f"stopped; latest result: {latest}", markup=False, highlight=False)


def _print_hostile(console: Any, r: Any) -> None:
    from rich.table import Table

    table = Table(title="hostile app signalling secret bits through its latency and CPU use "
                        "(shaping on)")
    for column in ("app fed", "ROC AUC", "secret bits recovered", "reports", "frames",
                   "incidents"):
        table.add_column(column, justify="right")
    for h in r.hostile:
        table.add_row(
            h.mode,
            f"{h.auc:.3f}",
            f"{h.bits_right} of {h.bits} (chance {h.bits / 2:g})",
            str(h.reports),
            str(h.frames_fed),
            ", ".join(f"{k} {n}" for k, n in h.incidents.items()) or "none",
        )
    console.print(table)
    defended = next(h for h in r.hostile if h.mode == "own thread")
    verdict = "PASS" if defended.auc <= 0.55 else "FAIL"
    console.print(f"hostile app on its own frame clock: AUC {defended.auc:.3f} <= 0.55: {verdict}")


COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []

