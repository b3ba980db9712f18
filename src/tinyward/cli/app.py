"""`tinyward app inspect|run` and `tinyward bench sandbox` (see cli/main.py for registration)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tinyward.app.budget import ALPHABET
from tinyward.app.contract import channel_bound, leakage_bound
from tinyward.app.errors import ManifestError, SandboxError
from tinyward.app.frames import csv_frames, simulated_frames
from tinyward.app.manifest import Manifest, load_manifest
from tinyward.app.sandbox import Protection, Sandbox, SandboxConfig
from tinyward.app.source import AppLimits
from tinyward.app.supervisor import Supervisor, SupervisorConfig
from tinyward.cli._access import check_app_readable

COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = []


@click.group("app")
def app_group() -> None:
    """Inspect and run sandboxed sensor applications (sensor.toml)."""


def _safe(value: object) -> str:
    """App-chosen text (a result, an incident detail, an enum value) for a rich console:
    non-printables escaped, markup escaped (``[/bold]`` would raise, ``[red]`` style)."""
    text = str(value)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return escape(text)


def _values(field: object) -> str:
    spec = field  # FieldSpec
    kind = spec.type  # type: ignore[attr-defined]
    if kind == "enum":
        return ", ".join(_safe(v) for v in spec.values)  # type: ignore[attr-defined]
    if kind == "bool":
        return "true, false"
    if kind == "int":
        return f"{spec.min} .. {spec.max}"  # type: ignore[attr-defined]
    return f"{spec.min} .. {spec.max} step {spec.step}"  # type: ignore[attr-defined]


def _protections_table(protections: list[Protection]) -> Table:
    table = Table(title="Sandbox protections on this host")
    table.add_column("layer")
    table.add_column("active")
    table.add_column("detail")
    for p in protections:
        table.add_row(p.name, "[green]yes[/]" if p.active else "[red]NO[/]", p.reason)
    return table


@app_group.command("inspect")
@click.argument("manifest_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-probe", is_flag=True, help="Do not start the sandbox to list its protections.")
@click.option("--interval", type=click.FloatRange(0.01, 86400), default=10.0, show_default=True,
              help="The device's report interval (device run --interval), for the bound.")
@click.option("--fault-window", type=click.FloatRange(0.1, 86400),
              default=SupervisorConfig().fault_window_s, show_default=True,
              help="The core's fault window (one published fault per window), for the bound.")
def inspect_cmd(manifest_path: Path, no_probe: bool, interval: float, fault_window: float) -> None:
    """Show an app's contract, the sandbox's protections and the leakage bound.

    No application code runs: the protections are probed with the sandbox alone.
    """
    manifest = load_manifest(manifest_path)
    console = Console()
    console.print(
        f"[bold]{manifest.name}[/] {manifest.version}  entry {manifest.entry}  "
        f"models: {', '.join(p.name for p in manifest.models) or 'none'}"
    )
    i = manifest.input
    console.print(
        f"input: {', '.join(_safe(c) for c in i.channels)} at {i.sample_rate_hz:g} Hz, "
        f"{i.dtype}, frames of "
        f"{i.frame_shape[0]}x{i.frame_shape[1]} ({i.frames_per_minute:g} frames per minute)"
    )
    bound = leakage_bound(manifest.contract)
    table = Table(title="Output contract")
    for column in ("field", "type", "values", "distinct values", "bits"):
        table.add_column(column)
    for spec, (_, count, bits) in zip(manifest.contract.fields, bound.per_field, strict=True):
        table.add_row(spec.name, spec.type, _values(spec), str(count), f"{bits:.2f}")
    console.print(table)
    if not no_probe:
        console.print(_protections_table(Sandbox(manifest).probe()))
    leak = Table(title="Leakage bound (most the app can emit through its contract)")
    leak.add_column("per result")
    leak.add_column(f"per minute (at {bound.results_per_minute}/min)")
    leak.add_column("per day")
    leak.add_row(
        f"{bound.bits_per_result:.2f} bits",
        f"{bound.bits_per_minute:,.1f} bits",
        f"{bound.bits_per_day:,.0f} bits ({bound.bits_per_day / 8 / 1024:,.1f} KiB)",
    )
    console.print(leak)
    if not math.isfinite(bound.bits_per_day):  # cannot happen for a valid manifest
        raise ManifestError(str(manifest_path), None, "the leakage bound is not finite")
    if manifest.input.frames_per_minute < bound.results_per_minute:
        console.print(
            f"note: at most one result per frame, so at {manifest.input.frames_per_minute:g} "
            f"frames per minute the app can emit at most "
            f"{bound.bits_per_result * manifest.input.frames_per_minute:,.1f} bits per minute."
        )
    frames = min(manifest.input.frames_per_minute, 60.0 * AppLimits().max_frames_per_second)
    channels = channel_bound(manifest.contract, report_interval=interval,
                             fault_window=fault_window, frames_per_minute=frames,
                             fault_classes=len(ALPHABET))
    every = Table(title=f"Every channel the app controls (reports every {interval:g} s, "
                        f"one fault published per {fault_window:g} s)")
    every.add_column("channel")
    every.add_column("bits per minute", justify="right")
    every.add_row(f"result values ({channels.results_per_minute}/min)", f"{channels.values:,.1f}")
    every.add_row(f"which of {channels.reports_per_minute} reports/min carry them",
                  f"{channels.placement:,.1f}")
    every.add_row(f"faults ({', '.join(ALPHABET)} or none, "
                  f"{channels.fault_windows_per_minute:g}/min)", f"{channels.faults:,.1f}")
    every.add_row("report times and sizes, its latency, CPU use", "0 (shaped; own thread)")
    console.print(every)
    console.print(f"leakage bound, all channels: {channels.total:,.1f} bits per minute")


def _csv_frames(path: Path, manifest: Manifest) -> list[np.ndarray]:
    return csv_frames(path, manifest)


def _simulated_frames(count: int, manifest: Manifest, seed: int) -> list[np.ndarray]:
    return list(itertools.islice(simulated_frames(manifest, seed), count))


@app_group.command("run")
@click.argument("manifest_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--frames", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with one column per input channel (header row = channel names).")
@click.option("--simulate", type=int, help="Feed this many random frames (fixed seed).")
@click.option("--seed", type=int, default=1, show_default=True)
def run_cmd(manifest_path: Path, csv_path: Path | None, simulate: int | None, seed: int) -> None:
    """Run an app in the sandbox; print accepted results and incidents.

    The rate limit is checked in sensor time: each frame advances the clock by one
    frame period (samples / sample rate), so a log can be replayed faster than real time.
    """
    if (csv_path is None) == (simulate is None):
        raise click.UsageError("give exactly one of --frames CSV or --simulate N")
    manifest = load_manifest(manifest_path)
    check_app_readable(manifest.folder, SandboxConfig().user, manifest.models)
    frames = _csv_frames(csv_path, manifest) if csv_path else _simulated_frames(
        simulate or 0, manifest, seed)
    period = manifest.input.frame_shape[0] / manifest.input.sample_rate_hz
    now = [0.0]
    console = Console()
    # No CPU budget here: a log is replayed as fast as the app goes, so wall-clock time
    # says nothing about the device. No fault window either: nothing leaves this machine
    # but what the developer reads, so a crashed app is restarted after its backoff.
    with Supervisor(manifest, config=SupervisorConfig(cpu_share=None, fault_window_s=0.0),
                    clock=lambda: now[0]) as sup:
        if not sup.start():
            kind, detail = sup.last_incident or ("start_failed", "")
            raise SandboxError(f"the app did not start ({kind}): {detail}")
        console.print(_protections_table(sup.protections))
        accepted = 0
        for index, frame in enumerate(frames):
            now[0] += period
            outcome = sup.process(frame)
            if outcome.result is not None:
                accepted += 1
                console.print(f"frame {index}: {_safe(outcome.result)}")
            elif outcome.incident:
                console.print(f"[red]frame {index}: incident {outcome.incident}[/]: "
                              f"{_safe(outcome.detail)}")
            elif not outcome.processed:
                console.print(f"[yellow]frame {index}: not processed ({_safe(outcome.detail)})[/]")
        console.print(
            f"{len(frames)} frames, {accepted} results accepted, "
            f"{sup.frames_dropped} frames not processed, incidents: {sup.incidents() or 'none'}, "
            f"healthy: {sup.healthy}"
        )


@click.command("sandbox")
@click.option("--frames", type=click.IntRange(100, 100_000), default=5000, show_default=True)
def bench_sandbox(frames: int) -> None:
    """Frames per second and p50/p99 per frame: in-process call vs. through the sandbox."""
    from tinyward.bench import sandbox as bench

    direct, sandboxed = bench.run(frames)
    floor = bench.pipe_floor(frames, 60)  # 60 bytes ~ one frame message
    table = Table(title=f"Sandbox round trip, {frames} frames of 20x1 int16 (same run)")
    for column in ("path", "frames/s", "p50 µs", "p99 µs"):
        table.add_column(column)
    for t in (direct, floor, sandboxed):
        table.add_row(t.label, f"{t.frames_per_second:,.0f}", f"{t.p50_us:.1f}", f"{t.p99_us:.1f}")
    console = Console()
    console.print(table)
    added = sandboxed.p50_us - direct.p50_us
    met = "met" if added < 100 else "NOT met"
    console.print(f"added latency at p50: {added:.1f} µs (goal < 100 µs: {met})")


app_group.add_command(inspect_cmd)
app_group.add_command(run_cmd)
COMMANDS.append(app_group)
BENCH_COMMANDS.append(bench_sandbox)
