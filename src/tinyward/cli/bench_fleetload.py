"""`tinyward bench fleetload`: simulated devices against several nodes behind HAProxy."""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command("fleetload")
@click.option("--devices", "counts", default="100,1000,10000", show_default=True,
              help="Device counts to run, comma-separated (each on a fresh cluster).")
@click.option("--interval", default=10.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds between a device's reports (its declared schedule).")
@click.option("--duration", default=300.0, show_default=True, type=click.FloatRange(1, 7200),
              help="Seconds of steady reporting measured (after one interval of ramp-up).")
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, 2),
              help="fleet serve nodes behind HAProxy (deploy/haproxy/haproxy.cfg names 2).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Worker processes per node.")
@click.option("--storm", default="one", show_default=True,
              type=click.Choice(["one", "all", "none"]),
              help="kill -9 node1 (one), every node (all) or none, then restart them.")
@click.option("--restart-after", default=5.0, show_default=True,
              type=click.FloatRange(0, 600), help="Seconds before killed nodes restart.")
@click.option("--after-storm", default=120.0, show_default=True,
              type=click.FloatRange(1, 3600),
              help="Seconds of load after the kill (the fleet must be back within them).")
@click.option("--balancer-rate", default=300, show_default=True, type=click.IntRange(1, 100_000),
              help="New connections per second the balancers let through to the nodes "
                   "(HAProxy rate-limit sessions; the rest queue): the nodes' handshake "
                   "capacity.")
@click.option("--commit-window", default=20.0, show_default=True,
              type=click.FloatRange(0, 1000),
              help="The nodes' --commit-window (ms): how long a report waits to share its "
                   "commit with other connections' reports.")
@click.option("--db", "db_url", default=None,
              help="Database URL (an empty one; one device count) [default: a new SQLite file].")
@click.option("--out", default=Path("fleetload"), show_default=True, type=click.Path(
              dir_okay=False, path_type=Path), help="Writes OUT.json and OUT.png.")
def fleetload(counts: str, interval: float, duration: float, nodes: int, workers: int,
              storm: str, restart_after: float, after_storm: float, balancer_rate: int,
              commit_window: float, db_url: str | None, out: Path) -> None:
    """Simulated devices holding mutual-TLS connections through HAProxy to several fleet
    nodes, reporting on a constant schedule, then kill -9 of a node (or all) under load.

    Prints per device count: stored reports/s, p50/p99 ack latency, server CPU per report
    and per handshake, server memory per connected device, time until the fleet is back,
    and whether every report was stored exactly once. Raises this process's open-file
    limit (each device is a socket here; the nodes inherit it).
    """
    from tinyward.bench.fleetload import LoadConfig, LoadError, run_series

    try:
        wanted = sorted({int(part) for part in counts.split(",") if part.strip()})
    except ValueError:
        raise click.UsageError("--devices takes counts like 100,1000,10000") from None
    if not wanted or wanted[0] < 1 or wanted[-1] > 10_000:
        raise click.UsageError("--devices: counts from 1 to 10000")
    config = LoadConfig(devices=wanted[-1], interval=interval, duration=duration, nodes=nodes,
                        workers=workers, storm=storm, restart_after=restart_after,
                        after_storm=after_storm, new_per_second=balancer_rate,
                        commit_window_ms=commit_window)
    try:
        results, enrol = run_series(wanted, config, out,
                                    say=lambda text: click.echo(text, err=True), db_url=db_url)
    except LoadError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"enrolment: {enrol * 1e3:.1f} ms per device (keys, CSRs, certificates, TLS "
               f"context); {nodes} nodes x {workers} workers behind HAProxy; a report every "
               f"{interval:g} s; storm: kill -9 {storm}; balancers let {balancer_rate} new "
               f"connections/s through; nodes' commit window {commit_window:g} ms; load "
               f"{os.getloadavg()[0]:.1f} on "
               f"{os.cpu_count()} cores")
    for r in results:
        click.echo(
            f"{r.devices:>6} devices: {r.reports_per_second:,.0f} stored reports/s; ack p50 "
            f"{r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms; server CPU "
            f"{r.report_server_cpu_net_us:.0f} us/report ({r.report_server_cpu_us:.0f} with the "
            f"nodes' idle {r.idle_server_cpu_per_s * 1e3:.0f} ms/s; HAProxy "
            f"{r.report_balancer_cpu_us:.0f}, load generator "
            f"{r.report_loadgen_cpu_us:.0f}), {r.handshake_server_cpu_ms:.2f} ms/handshake; "
            f"server memory {r.memory_per_device_kb:.1f} KB/device; connected in "
            f"{r.connect_seconds:.1f} s")
        if r.storm != "none":
            back = (f"all reconnected in {r.reconnected_seconds:.1f} s, all acknowledged "
                    f"again in {r.recovery_seconds:.1f} s" if r.recovered
                    else "NOT all back within the bound")
            click.echo(f"        storm: {r.storm_devices} devices cut, {r.reconnects} "
                       f"reconnections, {back} (ack p99 after the kill {r.storm_p99_ms:.0f} "
                       f"ms); HAProxy sessions before {r.sessions_before}, after "
                       f"{r.sessions_after}")
        verdict = "exactly once" if r.exactly_once else "NOT exactly once"
        click.echo(f"        store: {r.stored} stored, {r.acknowledged} acknowledged, "
                   f"{r.sent} sent: {verdict} (duplicates {r.duplicates}, gaps {r.gaps}, "
                   f"acknowledged but lost {r.lost_acknowledged}, stored with the ack lost "
                   f"{r.stored_not_acknowledged}, unacknowledged at the end "
                   f"{r.unacknowledged_at_end}); refusals {r.refused or 'none'}; connections lost "
                   f"{r.drops or 'none'}; nodes marked down by HAProxy "
                   f"{r.marked_down or 'never'}")
    click.echo(f"figures: {out.with_suffix('.json')}, plot: {out.with_suffix('.png')}")
    if not all(r.exactly_once for r in results):
        raise click.ClickException("a run did not store every report exactly once")


BENCH_COMMANDS: list[click.Command] = [fleetload]
