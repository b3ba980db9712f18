"""`tinyward detect …` and `tinyward bench detect`: train, score and evaluate detectors.

A thin layer over :mod:`tinyward.detect`: train, score and export go through
:mod:`tinyward.detect.pipeline` (one model file: detector and feature state); eval runs
the protocol of :mod:`tinyward.detect.evaluate`; the bench sets the detectors next to the
published baselines (``baselines``) and times the C export (:mod:`tinyward.bench.detect_c`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tinyward.cli._paths import new_folder, output_file
from tinyward.cli.detect_export import c_out_folder, export
from tinyward.detect import evaluate as ev
from tinyward.detect import pipeline
from tinyward.detect.errors import DetectError
from tinyward.detect.models import KINDS, make_detector
from tinyward.detect.sensorfeatures import FAMILIES, SensorChannelWarning, parse_families

DEFAULT_MQTT = Path("../shared/data/mqttset")
DEFAULT_SKAB = Path("../shared/data/skab/anomaly-free/anomaly-free.csv")
console = Console(stderr=True)


@contextmanager
def _progress() -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # in a pipe a transient bar leaves an empty line
    ) as progress:
        yield progress


def _steps(progress: Progress) -> pipeline.Progress:
    """The pipeline's progress callback, drawn as rich progress bars."""

    def step(description: str, total: int | None) -> Callable[[int], None]:
        task = progress.add_task(description, total=total)
        return partial(progress.advance, task)

    return step


def _fmt(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


@click.group()
def detect() -> None:
    """Learn normal traffic or sensor signals from benign data; flag the rest.

    Packets: pcap/pcapng captures (Ethernet, Linux SLL/SLL2 or raw IP; the link layer
    is removed). Sensors: delimited CSVs with the SKAB columns. Typical use:

    \b
      tinyward detect train --packets benign.pcap --out model.json
      tinyward detect score model.json suspicious.pcap
      tinyward detect eval --packets ../shared/data/mqttset --out results/
    """


# --------------------------------------------------------------------------- train
@detect.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--packets/--sensors",
    "packets",
    default=True,
    help="Inputs are captures (default) or sensor CSVs.",
)
@click.option(
    "--kind",
    type=click.Choice(sorted(KINDS)),
    default="mahalanobis-int8",
    show_default=True,
    help="Detector to fit.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    callback=output_file,  # checked before the features and the fit, not after
    help="Model file to write (the detector and the trained feature state, one file).",
)
@click.option(
    "--strip-tcp-options",
    is_flag=True,
    help="See every TCP segment without its option bytes (packets only).",
)
@click.option(
    "--target-fpr",
    default=0.001,
    show_default=True,
    help="False-positive rate the alarm threshold aims at on held-out benign data.",
)
@click.option("--delimiter", default=None,
              help="CSV delimiter (sensors; default: sniffed from the header).")
@click.option("--channels", default=None,
              help="Sensors: comma-separated columns to model (default: every numeric one).")
@click.option("--label-column", default="anomaly", show_default=True,
              help="Sensors: rows where this column is non-zero are left out of training.")
@click.option("--time-column", default=None, help="Sensors: column copied into score rows.")
@click.option("--window", default=30, show_default=True, help="Sensors: samples per window.")
@click.option("--step", default=10, show_default=True, help="Sensors: samples between windows.")
@click.option("--features", "families", default="default", show_default=True,
              help="Sensors: feature families, comma-separated, or 'all' (known: "
              + ", ".join(FAMILIES) + ").")
@click.option("--raw-rows", is_flag=True,
              help="Sensors: no windows; each standardised row is one vector.")
@click.option("--smooth", default=None,
              help="Sensors: 'ewma:A' (threshold re-chosen on smoothed benign scores) or "
              "'kofn:K/N' (alarm when K of the last N are above the threshold).")
def train(
    inputs: tuple[Path, ...],
    packets: bool,
    kind: str,
    out: Path,
    strip_tcp_options: bool,
    target_fpr: float,
    delimiter: str | None,
    channels: str | None,
    label_column: str,
    time_column: str | None,
    window: int,
    step: int,
    families: str,
    raw_rows: bool,
    smooth: str | None,
) -> None:
    """Fit a detector on BENIGN inputs only (captures: one stream, in order; sensor CSVs:
    each its own stream)."""
    options = None
    if not packets:
        if smooth is not None:
            pipeline.Smoother.parse(smooth)  # refuse a bad specification before reading
        options = pipeline.SensorOptions(
            channels=None if channels is None else tuple(
                c.strip() for c in channels.split(",") if c.strip()),
            delimiter=delimiter, label_column=label_column, time_column=time_column,
            window=window, step=step, families=parse_families(families), raw_rows=raw_rows,
            smooth=smooth,
        )
    with _progress() as progress, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SensorChannelWarning)
        model = pipeline.train(inputs, kind=kind, packets=packets,
                               strip_tcp_options=strip_tcp_options, target_fpr=target_fpr,
                               delimiter=delimiter, sensor=options, progress=_steps(progress))
    for warning in caught:
        if issubclass(warning.category, SensorChannelWarning):
            click.echo(f"warning: {warning.message}", err=True)
    pipeline.save_model(model, out)
    detector = model.detector
    click.echo(
        f"{kind}: fitted on {model.n_vectors} benign vectors of {model.n_features} features; "
        f"threshold {detector.threshold:.6g}; {detector.model_bytes()} model bytes; "
        f"wrote {out} (detector and feature state)"
    )


# --------------------------------------------------------------------------- score
@detect.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=output_file,
    help="Write 'index,score,alarm' per packet or window to this CSV (sensors add 'row' and "
    "'line': the window's last row, and 'time' when the model has a time column).",
)
def score(model: Path, input_path: Path, out: Path | None) -> None:
    """Score INPUT (capture or CSV) with MODEL, continuing from its trained state.

    A truncated or corrupted INPUT is scored up to the problem (and --out written), then
    the command fails with the file and position.
    """
    loaded = pipeline.load_model(model)
    with _progress() as progress:
        scored = pipeline.score_file(loaded, input_path, progress=_steps(progress))
    threshold = loaded.detector.threshold
    scores, alarms = scored.scores, scored.alarms
    if scored.problem is not None and not len(scores):
        raise scored.problem  # nothing was read: the error alone, not "0 packets (0.00 %)" first
    kept = " (read so far)" if scored.problem is not None else ""
    click.echo(
        f"{input_path}: {len(scores)} {scored.unit}{kept}, {int(alarms.sum())} above the threshold "
        f"{threshold:.6g} ({100 * alarms.mean() if len(scores) else 0:.2f} %)"
    )
    if out is not None:
        pipeline.write_scores_csv(scored, out)
    if scored.problem is not None:
        raise scored.problem


@detect.command("export-features")
@click.argument("model", type=click.Path(path_type=Path))
@c_out_folder
@click.option("--prefix", default="tw_nf", show_default=True, help="C name prefix.")
def export_features(model: Path, out_dir: Path, prefix: str) -> None:
    """Export MODEL's packet feature state machine as C99 (one header, one source).

    Firmware feeds it one parsed IP packet at a time and passes the 24 features to the
    detector exported by `tinyward detect export`. Define TW_NF_FLOAT (with your prefix)
    for single precision on an FPU; the default double is bit-exact with Python.
    """
    loaded = pipeline.load_model(model)
    if not isinstance(loaded.features, pipeline.PacketFeatures):
        raise DetectError(f"{model}: a sensor model; only packet features export")
    files = pipeline.export_features_c(loaded, out_dir, prefix)
    click.echo(
        f"wrote {files.header} and {files.source}: {loaded.features.extractor.state_bytes()} B "
        "of state (float32) in the caller's struct"
    )
    if loaded.features.strip_tcp_options:
        click.echo(
            "note: the model was trained with TCP options removed: pass each packet's IP "
            "total length minus its TCP option bytes as `size`"
        )


# --------------------------------------------------------------------------- eval
def _print_result(title: str, result: dict[str, Any]) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("attack", "n", "ROC AUC", "TPR@1%", "TPR@0.1%", "at threshold"):
        table.add_column(column, justify="right")
    rows = [*list(result["per_attack"].items()), ("overall", result["overall"])]
    for name, m in rows:
        table.add_row(
            name,
            str(m["n"]),
            _fmt(m["roc_auc"]),
            _fmt(m["tpr_at_0.01"]),
            _fmt(m["tpr_at_0.001"]),
            _fmt(m.get("detected_at_threshold")),
        )
    Console(width=200).print(table)
    click.echo(
        f"  benign test: {result['benign_n']} vectors, false alarms/hour "
        f"{result.get('false_alarms_per_hour', float('nan')):.2f}; "
        f"model {result['model_bytes']} B; "
        f"{result['ops_per_inference']} ops/inference; "
        f"{result['us_per_packet']:.1f} µs per vector "
        f"(features {result['feature_us_per_vector']:.1f} "
        f"+ score {result['score_us_per_vector']:.1f} one at a time, Python); feature state "
        f"{result['state_bytes']} B"
    )


@detect.command("eval")
@click.option(
    "--packets",
    "packet_dir",
    type=click.Path(path_type=Path),
    help="MQTTset folder (benign-5mb/, bruteforce/, …).",
)
@click.option(
    "--sensors",
    "sensor_csv",
    type=click.Path(path_type=Path),
    help="The SKAB folder (anomaly-free.csv plus every run's anomaly-free prefix) or one "
    "anomaly-free CSV; tampering is INJECTED into the test part.",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(sorted(KINDS)),
    help="Detector(s) to evaluate (repeatable; default: all).",
)
@click.option(
    "--out",
    "out_dir",
    default=Path("detect-eval"),
    show_default=True,
    type=click.Path(path_type=Path),
    callback=new_folder,
    help="Folder for eval.json and ROC PNGs.",
)
@click.option("--seed", default=0, show_default=True)
def eval_command(
    packet_dir: Path | None,
    sensor_csv: Path | None,
    kinds: tuple[str, ...],
    out_dir: Path,
    seed: int,
) -> None:
    """Run the evaluation protocol (see tinyward.detect.evaluate) and print the figures.

    Packets are evaluated twice: as captured and with TCP option bytes removed.
    """
    if packet_dir is None and sensor_csv is None:
        raise click.UsageError("give --packets DIR and/or --sensors CSV")
    kinds = kinds or tuple(sorted(KINDS))
    report: dict[str, Any] = {"protocol": ev.__doc__}
    curves: dict[str, dict[str, np.ndarray]] = {}
    if packet_dir is not None:
        for strip in (False, True):
            view = "tcp-options-removed" if strip else "as-captured"
            with _progress() as progress:
                progress.add_task(f"packet features ({view})", total=None)
                streams = ev.packet_streams(packet_dir, strip_tcp_options=strip)
            for kind in kinds:
                result = ev.evaluate_scores(make_detector(kind), streams, seed=seed)
                _print_result(f"packets, {view}: {kind}", result)
                report[f"packets/{view}/{kind}"] = result
                curves[f"{kind} {view}"] = result["_scores"]
        ev.plot_roc(
            {k: v for k, v in curves.items() if "removed" in k},
            out_dir / "roc-packets.png",
            "MQTTset, TCP options removed",
        )
    if sensor_csv is not None:
        streams_s = ev.sensor_streams(sensor_csv, seed=seed)
        click.echo(f"note: {streams_s.note}")
        sensor_curves = {}
        for kind in kinds:
            result = ev.evaluate_scores(make_detector(kind), streams_s, seed=seed)
            result["note"] = streams_s.note
            result["injections"] = streams_s.injections
            _print_result(f"sensors (tampering injected): {kind}", result)
            report[f"sensors/{kind}"] = result
            sensor_curves[kind] = result["_scores"]
        ev.plot_roc(
            sensor_curves, out_dir / "roc-sensors.png", "SKAB anomaly-free with INJECTED tampering"
        )
    ev.write_json(out_dir / "eval.json", report)
    click.echo(f"wrote {out_dir / 'eval.json'} and ROC plot(s) in {out_dir}")


# --------------------------------------------------------------------------- bench
@click.command("detect")
@click.option(
    "--data",
    "data_dir",
    default=DEFAULT_MQTT,
    show_default=True,
    type=click.Path(path_type=Path),
    help="MQTTset folder.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Smaller HalfSpaceTrees (10 trees of height 10) and only the "
    "TCP-options-removed view: about 30 s instead of ~5 min on a busy 2-core machine.",
)
@click.option(
    "--out",
    "out_path",
    default=Path("detect-bench.json"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="JSON file for every figure (per attack, per view, per detector).",
)
def bench_detect(data_dir: Path, quick: bool, out_path: Path) -> None:
    """tinyward's detectors next to KitNET, HalfSpaceTrees and IsolationForest.

    Same features (tinyward's 24 per-packet features), same splits, same machine.
    """
    from tinyward.bench.detect_c import c_feature_rate, c_scores
    from tinyward.detect.baselines import (
        HalfSpaceTreesBaseline,
        IsolationForestBaseline,
        KitNETBaseline,
    )
    from tinyward.detect.cost import AFTERIMAGE_OPS, KITNET_100_OPS, KITSUNE_PIPELINE_OPS

    def contenders() -> list[Any]:
        ours = [make_detector(kind) for kind in sorted(KINDS)]
        hst = HalfSpaceTreesBaseline(n_trees=10, height=10) if quick else HalfSpaceTreesBaseline()
        return [*ours, KitNETBaseline(), hst, IsolationForestBaseline()]

    report: dict[str, Any] = {}
    views = (True,) if quick else (False, True)
    for strip in views:
        view = "tcp-options-removed" if strip else "as-captured"
        with _progress() as progress:
            progress.add_task(f"packet features ({view})", total=None)
            streams = ev.packet_streams(data_dir, strip_tcp_options=strip)
            n = len(streams.train)
            feature_pps = 1e6 / streams.feature_us_per_packet
        table = Table(
            title=f"MQTTset, {view}: TPR @ 0.1% FPR per attack (ROC AUC overall)",
            title_justify="left",
        )
        for column in (
            "detector",
            *ev.ATTACKS,
            "overall",
            "TPR@1%",
            "AUC",
            "model B",
            "model ops",
            "pipeline ops",
            "state B",
            "pkts/s",
        ):
            table.add_column(column, justify="right")
        feature_ops = streams.extractor.ops_per_packet()
        c_features, note = c_feature_rate(data_dir, strip)
        if note:
            click.echo(f"  ({note})")

        def add_row(
            name: str,
            result: dict[str, Any],
            rate: float,
            table: Table = table,
            feature_ops: int = feature_ops,
        ) -> None:
            pa = result["per_attack"]
            table.add_row(
                name,
                *(_fmt(pa[a]["tpr_at_0.001"]) for a in ev.ATTACKS),
                _fmt(result["overall"]["tpr_at_0.001"]),
                _fmt(result["overall"]["tpr_at_0.01"]),
                _fmt(result["overall"]["roc_auc"]),
                str(result["model_bytes"]),
                str(result["ops_per_inference"]),
                str(result["ops_per_inference"] + feature_ops),
                str(result["state_bytes"]),
                f"{rate:,.0f}",
            )

        for detector in contenders():
            with _progress() as progress:
                progress.add_task(f"{detector.name} ({view})", total=None)
                result = ev.evaluate_scores(detector, streams)
            report[f"{view}/{detector.name}"] = result
            add_row(detector.name, result, 1e6 / result["us_per_packet"])
            if detector.name.endswith("-int8"):
                c_result, note = c_scores(detector, streams, result, c_features)
                if note:
                    click.echo(f"  {note}")
                if c_result is not None:
                    report[f"{view}/{detector.name} (C)"] = c_result
                    add_row(f"{detector.name} (C)", c_result, c_result["c_packets_per_s"])
        table.add_row(
            "Kitsune as published",
            *(["(cost only)"] + [""] * (len(ev.ATTACKS) + 2)),
            "",
            str(KITNET_100_OPS),
            str(KITSUNE_PIPELINE_OPS),
            "unbounded",
            "",
        )
        Console(width=200).print(table)
        click.echo(
            f"  pipeline ops = features + model; features: {feature_ops} ops/packet, "
            f"{feature_pps:,.0f} "
            f"packets/s in Python, {streams.state_bytes} B of bounded state; trained on "
            f"{n} benign packets. pkts/s: features + one-vector-at-a-time scoring in "
            "Python; for (C) rows, C features (netfeatures_c, double, gcc -O2: "
            f"{c_features or 0:,.0f} packets/s) + exported C scoring, timed apart, one core."
        )
    report["kitsune_100_features_kitnet_ops"] = KITNET_100_OPS
    report["kitsune_afterimage_ops"] = AFTERIMAGE_OPS
    report["kitsune_pipeline_ops"] = KITSUNE_PIPELINE_OPS
    click.echo(
        f"Kitsune as published: AfterImage ≥ {AFTERIMAGE_OPS} ops/packet (5 decay factors, "
        f"lower bound) + KitNET on its 100 features {KITNET_100_OPS} = "
        f"{KITSUNE_PIPELINE_OPS} pipeline ops/packet (tinyward.detect.cost). Model ops "
        "count one per multiply-add, activation, normalisation or error term; feature "
        "ops one per add, multiply, divide, sqrt, exp/pow, log or compare."
    )
    ev.write_json(out_path, report)
    click.echo(f"wrote {out_path}")


@detect.command("skab")
@click.option("--data", "skab_dir", default=DEFAULT_SKAB.parents[1], show_default=True,
              type=click.Path(path_type=Path), help="The SKAB folder.")
def skab_command(skab_dir: Path) -> None:
    """SKAB's outlier protocol with the per-run row monitor of tinyward.detect.skab,
    its setting chosen on anomaly-free pseudo-runs only (no SKAB test labels), printed
    next to the published leaderboard."""
    from tinyward.detect import skab

    chosen, _ = skab.select(skab_dir)
    overall, folders = skab.evaluate(skab_dir, chosen)
    click.echo(f"chosen without test labels: {chosen}")
    click.echo(f"{'detector':<40} {'F1':>5} {'FAR %':>7} {'MAR %':>7}")
    click.echo(f"{'tinyward row monitor (this run)':<40} {overall.f1:5.3f} {overall.far:7.2f} "
               f"{overall.mar:7.2f}")
    for name, f1, far, mar in skab.LEADERBOARD:
        far_text = "—" if far is None else f"{far:.2f}"
        mar_text = "—" if mar is None else f"{mar:.2f}"
        click.echo(f"{name + ' (published)':<40} {f1:5.2f} {far_text:>7} {mar_text:>7}")
    for folder, result in folders.items():
        click.echo(f"  {folder}: F1 {result.f1:.3f}, FAR {result.far:.2f} %, "
                   f"MAR {result.mar:.2f} %")
    click.echo(f"  TP {overall.tp}, FP {overall.fp}, FN {overall.fn}, TN {overall.tn}; for 8 "
               f"channels at most {monitor_bytes(8)} B of float32 state, "
               f"{skab_ops(8)} ops per row")


def monitor_bytes(channels: int) -> int:
    return 4 * (2 * channels + channels * channels + 2)


def skab_ops(channels: int) -> int:
    return 2 * channels + channels * channels + channels + 4


detect.add_command(export)


COMMANDS: list[click.Command] = [detect]
BENCH_COMMANDS: list[click.Command] = [bench_detect]
