"""`tinyward bench watch`: on-device detection's cost per packet and what the uplink shows."""

from __future__ import annotations

import click


@click.command("watch")
@click.option("--duration", type=click.FloatRange(10, 3600), default=60.0, show_default=True,
              help="Seconds of reports recorded per phase (the design, then the alert "
                   "baseline).")
@click.option("--interval", type=click.FloatRange(0.05, 10), default=0.1, show_default=True,
              help="Report interval during the benchmark (short, for many intervals).")
@click.option("--seed", type=int, default=7, show_default=True)
def bench_watch(duration: float, interval: float, seed: int) -> None:
    """CPU and memory per packet of the core's network detector, beside parsing alone;
    and whether an eavesdropper on the uplink can tell intervals with incidents from
    quiet ones (ROC AUC, goal <= 0.55). About 2 x DURATION + 60 s."""
    from rich.console import Console
    from rich.table import Table

    from tinyward.bench import watch as bench

    console = Console()
    console.print("measuring the cost per packet (same frames for every row)…")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="tinyward-watch-") as tmp:
        c = bench.cost(Path(tmp), seed)
    table = Table(title=f"CPU per packet, one core, this process ({c.rows[0].packets} "
                        "packets: telemetry and port sweeps)")
    table.add_column("path")
    table.add_column("µs CPU / packet", justify="right")
    table.add_column("x baseline", justify="right")
    for row in c.rows:
        table.add_row(row.name, f"{row.us_per_packet:.1f}",
                      f"{row.us_per_packet / c.rows[0].us_per_packet:.1f}")
    console.print(table)
    console.print(f"detector: {c.arithmetic}; {c.alarms} packet alarms in the stream")
    console.print(f"memory on a device: {c.state_bytes:,} B of state (C float build: packet "
                  f"features, novelty set, class table), {c.model_bytes:,} B of model "
                  "constants (flash); the same whatever the traffic")
    console.print(f"memory in Python: {c.transient_bytes_per_packet:,.0f} B allocated and "
                  f"freed per packet (tracemalloc peak of a 64-packet batch), "
                  f"{max(0.0, c.retained_bytes_per_packet):,.1f} B kept per packet after "
                  "20,000 (bounded state)")
    console.print(f"recording {duration:g} s of the device's TLS records twice (interval "
                  f"{interval:g} s)…")
    with tempfile.TemporaryDirectory(prefix="tinyward-watch-") as tmp:
        e = bench.eavesdrop(Path(tmp), duration, interval, seed=seed)
    table = Table(title=f"eavesdropper on the uplink: {e.intervals} intervals, "
                        f"{e.with_incidents} with incidents ({e.incidents} raised); "
                        "random forest, 5-fold CV x3")
    for column in ("", "incidents in the next report", "alert sent at once (baseline)"):
        table.add_column(column, justify="right")
    table.add_row("ROC AUC (0.5 = learns nothing)", f"{e.auc:.3f}", f"{e.auc_alert:.3f}")
    table.add_row("chance: labels shuffled", " ".join(f"{a:.3f}" for a in e.auc_null), "")
    table.add_row("reports sent", str(e.reports), str(e.reports_alert))
    console.print(table)
    console.print(f"upstream record sizes seen (design): {list(e.upstream_sizes)}")
    ok = e.auc <= bench.GOAL_AUC
    console.print(f"incidents in the constant-size report: AUC {e.auc:.3f} <= "
                  f"{bench.GOAL_AUC}: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


BENCH_COMMANDS: list[click.Command] = [bench_watch]
COMMANDS: list[click.Command] = []
