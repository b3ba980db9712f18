"""``tinyward bench update``: update delivery inside the constant-rate link (issue 14)."""

from __future__ import annotations

import click

from tinyward.link import chunks


@click.command("update")
@click.option("--duration", type=click.FloatRange(10, 3600), default=45.0, show_default=True,
              help="Seconds of traffic to record (the control runs a quarter of it).")
@click.option("--interval", type=click.FloatRange(0.05, 10), default=0.1, show_default=True,
              help="Report interval during the benchmark (short, for many intervals).")
@click.option("--target-kb", type=click.IntRange(1, 2048), default=16, show_default=True,
              help="Size of the targets downloaded while the observer watches, KiB (small: "
                   "many downloads in the run).")
@click.option("--timed-kb", type=click.IntRange(0, 2048), default=100, show_default=True,
              help="Then one download of this size, timed (0: none).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--control/--no-control", default=True, show_default=True,
              help="Also run with the frames' padding off, to show what it hides.")
def bench_update(duration: float, interval: float, target_kb: int, timed_kb: int, seed: int,
                 control: bool) -> None:
    """Can an eavesdropper on the TLS records tell when a device downloads an update?

    Prints the classifier's ROC AUC over report intervals with and without a download
    (must be <= 0.55), the chance level, the record sizes seen, and the delivery time of
    100 KB and 1 MB targets (measured at the bench interval, and the formula).
    """
    from rich.console import Console
    from rich.table import Table

    from tinyward.bench import update as update_bench

    console = Console()
    console.print(f"recording {duration:g} s of a device's TLS records on loopback while it "
                  f"downloads {target_kb} KiB targets at random times (interval {interval:g} s, "
                  f"{chunks.DEFAULT_CHUNK_SIZE} B chunks)…")
    r = update_bench.run(duration=duration, interval=interval, target_size=target_kb * 1024,
                         seed=seed, control=control, timed_size=timed_kb * 1024)
    p = r.padded
    table = Table(title=f"traffic analysis: {p.intervals} intervals, {p.with_update} with a "
                        "chunk request; random forest, 5-fold CV x3")
    table.add_column("")
    table.add_column("padded frames (the device)", justify="right")
    table.add_column("unpadded (control, unsafe)", justify="right")
    u = r.unpadded
    table.add_row("ROC AUC (0.5 = learns nothing)", f"{p.auc:.3f}",
                  f"{u.auc:.3f}" if u else "-")
    table.add_row("chance: labels shuffled", " ".join(f"{a:.3f}" for a in p.auc_null),
                  " ".join(f"{a:.3f}" for a in u.auc_null) if u else "-")
    for name, attr in (("upstream record sizes, idle", "up_sizes_idle"),
                       ("upstream record sizes, downloading", "up_sizes_update"),
                       ("downstream record sizes, idle", "down_sizes_idle"),
                       ("downstream record sizes, downloading", "down_sizes_update")):
        table.add_row(name, _sizes(getattr(p, attr)), _sizes(getattr(u, attr)) if u else "-")
    table.add_row("TLS bytes per report, both ways", f"{p.bytes_per_report:,.0f}",
                  f"{u.bytes_per_report:,.0f}" if u else "-")
    console.print(table)
    formula = "(ceil(length / chunk) + 6 metadata chunks) x interval"
    if p.downloads:
        mean = sum(p.downloads) / len(p.downloads)
        console.print(f"measured: {len(p.downloads)} downloads of {target_kb} KiB took "
                      f"{mean:.1f} s on average at {interval:g} s (formula {formula}: "
                      f"{r.formula_seconds(r.target_size):.1f} s)")
    for took in r.timed:
        console.print(f"measured: one download of {timed_kb} KiB took {took:.1f} s at "
                      f"{interval:g} s (formula: {r.formula_seconds(r.timed_size):.1f} s)")
    for label, length in (("100 KB", 100_000), ("1 MB", 1_000_000)):
        console.print(f"delivery of {label}: {r.formula_seconds(length):,.1f} s at {interval:g} s; "
                      f"{_human(r.formula_seconds(length, 10.0))} at the default 10 s interval, "
                      f"{_human(r.formula_seconds(length, 60.0))} at 60 s")
    extra = chunks.delivery_bytes_per_hour(10.0, r.chunk_size, json_answer=20)
    console.print(f"cost: {p.bytes_per_report:,.0f} B per report at the TLS layer, updating or "
                  f"not (measured) -> {p.bytes_per_report * 360:,.0f} B/h at the default 10 s "
                  f"interval; the chunks add about {extra:,.0f} B/h of it (a "
                  f"{chunks.frame_size(r.chunk_size)} B frame down instead of a ~20 B JSON "
                  "body, a 96 B header up)")
    ok = p.auc <= 0.55
    console.print(f"padded: AUC {p.auc:.3f} <= 0.55: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


def _sizes(sizes: tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in sizes) if len(sizes) <= 6 else \
        f"{len(sizes)} sizes, {sizes[0]}..{sizes[-1]}"


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


COMMANDS: list[click.Command] = []
BENCH_COMMANDS: list[click.Command] = [bench_update]
