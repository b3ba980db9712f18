"""`tinyward detect …` and `tinyward bench detect`: train, score and evaluate detectors.

A thin layer over :mod:`tinyward.detect`: features (``pcap``/``netfeatures`` for
captures, ``sensorfeatures`` for CSVs), models (``models``), the evaluation protocol
(``evaluate``) and the published baselines (``baselines``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
from tinyward.cli.detect_export import export
from tinyward.detect import evaluate as ev
from tinyward.detect.errors import CsvError, DetectError, DetectMisuse, PcapError
from tinyward.detect.models import KINDS, load_detector, make_detector
from tinyward.detect.netfeatures import (
    N_FEATURES,
    NetFeatureExtractor,
    extractor_from_doc,
    extractor_to_doc,
)
from tinyward.detect.pcap import read_packets
from tinyward.detect.sensorfeatures import (
    SKAB_CHANNELS,
    SensorFeatureExtractor,
    read_sensor_csv,
    sensor_extractor_from_doc,
    sensor_extractor_to_doc,
)

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


def _features_path(model: Path) -> Path:
    return model.with_name(model.name + ".features.json")


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
    help="Model file to write; the feature state goes next to it (MODEL.features.json).",
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
@click.option("--delimiter", default=";", show_default=True, help="CSV delimiter (sensors).")
def train(
    inputs: tuple[Path, ...],
    packets: bool,
    kind: str,
    out: Path,
    strip_tcp_options: bool,
    target_fpr: float,
    delimiter: str,
) -> None:
    """Fit a detector on BENIGN inputs only (files are one stream, in order)."""
    detector = make_detector(kind)
    with _progress() as progress:
        if packets:
            extractor = NetFeatureExtractor()
            rows = []
            for path in inputs:
                task = progress.add_task(f"features of {path.name}", total=None)
                pkts = read_packets(path, strip_tcp_options=strip_tcp_options)
                progress.update(task, total=len(pkts))
                rows.append(extractor.transform(pkts, progress=partial(progress.advance, task)))
            X = np.vstack(rows)
            features: dict[str, Any] = {
                "type": "packets",
                "strip_tcp_options": strip_tcp_options,
                "state": extractor_to_doc(extractor),
            }
        else:
            values = np.vstack(
                [read_sensor_csv(p, SKAB_CHANNELS, delimiter=delimiter).values for p in inputs]
            )
            sensor = SensorFeatureExtractor(SKAB_CHANNELS)
            progress.add_task("sensor window features", total=None)
            X = sensor.fit(values)
            features = {
                "type": "sensors",
                "delimiter": delimiter,
                "state": sensor_extractor_to_doc(sensor),
            }
        progress.add_task(f"fitting {kind} on {len(X)} benign vectors", total=None)
        detector.fit(X, target_fpr=target_fpr)
    detector.save(out)
    ev.write_json(_features_path(out), features)
    click.echo(
        f"{kind}: fitted on {len(X)} benign vectors of {X.shape[1]} features; "
        f"threshold {detector.threshold:.6g}; {detector.model_bytes()} model bytes; "
        f"wrote {out} and {_features_path(out)}"
    )


# --------------------------------------------------------------------------- score
def _load(model: Path) -> tuple[Any, dict[str, Any]]:
    detector = load_detector(model)
    path = _features_path(model)
    try:
        features = json.loads(path.read_text())
        if features.get("type") not in ("packets", "sensors"):
            raise DetectMisuse("unknown feature type")
    except OSError as error:
        raise DetectError(f"{path}: cannot read the feature state: {error.strerror}") from None
    except (ValueError, DetectMisuse, AttributeError) as error:
        raise DetectError(f"{path}: not a tinyward feature state: {error}") from None
    return detector, features


@detect.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    callback=output_file,
    help="Write 'index,score,alarm' per packet or window to this CSV.",
)
def score(model: Path, input_path: Path, out: Path | None) -> None:
    """Score INPUT (capture or CSV) with MODEL, continuing from its trained state.

    A truncated or corrupted INPUT is scored up to the problem (and --out written), then
    the command fails with the file and position.
    """
    detector, features = _load(model)
    problem: PcapError | CsvError | None = None
    try:
        if features["type"] == "packets":
            extractor = extractor_from_doc(features["state"])
            try:
                pkts = read_packets(
                    input_path, strip_tcp_options=bool(features["strip_tcp_options"])
                )
            except PcapError as error:
                problem, pkts = error, error.partial
            with _progress() as progress:
                task = progress.add_task(f"features of {input_path.name}", total=len(pkts))
                X = extractor.continue_with(pkts)[1] if pkts else np.zeros((0, N_FEATURES))
                progress.update(task, completed=len(pkts))
            unit = "packets"
        else:
            sensor = sensor_extractor_from_doc(features["state"])
            try:
                values = read_sensor_csv(
                    input_path, sensor.channels, delimiter=features.get("delimiter", ";")
                ).values
            except CsvError as error:
                problem = error
                values = np.asarray(error.partial, dtype=np.float64).reshape(
                    -1, len(sensor.channels)
                )
            X = sensor.transform(values) if len(values) else np.zeros((0, sensor.n_features))
            unit = "windows"
    except DetectMisuse as error:
        raise DetectError(f"{_features_path(model)}: {error}") from None
    scores = detector.score(X) if len(X) else np.zeros(0)
    alarms = scores > detector.threshold
    if problem is not None and not len(scores):
        raise problem  # nothing was read: the error alone, not "0 packets (0.00 %)" first
    kept = " (read so far)" if problem is not None else ""
    click.echo(
        f"{input_path}: {len(scores)} {unit}{kept}, {int(alarms.sum())} above the threshold "
        f"{detector.threshold:.6g} ({100 * alarms.mean() if len(scores) else 0:.2f} %)"
    )
    if out is not None:
        out.write_text(
            "index,score,alarm\n"
            + "".join(
                f"{i},{s:.9g},{int(a)}\n"
                for i, (s, a) in enumerate(zip(scores, alarms, strict=True))
            )
        )
    if problem is not None:
        raise problem


@detect.command("export-features")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    callback=new_folder,
    help="Folder for <prefix>.h and <prefix>.c (created if missing).",
)
@click.option("--prefix", default="tw_nf", show_default=True, help="C name prefix.")
def export_features(model: Path, out_dir: Path, prefix: str) -> None:
    """Export MODEL's packet feature state machine as C99 (one header, one source).

    Firmware feeds it one parsed IP packet at a time and passes the 24 features to the
    detector exported by `tinyward detect export`. Define TW_NF_FLOAT (with your prefix)
    for single precision on an FPU; the default double is bit-exact with Python.
    """
    from tinyward.detect.netfeatures_c import export_netfeatures_c

    _, features = _load(model)
    if features["type"] != "packets":
        raise DetectError(f"{_features_path(model)}: a sensor model; only packet features export")
    try:
        extractor = extractor_from_doc(features["state"])
    except DetectMisuse as error:
        raise DetectError(f"{_features_path(model)}: {error}") from None
    files = export_netfeatures_c(out_dir, extractor.config, prefix)
    click.echo(
        f"wrote {files.header} and {files.source}: {extractor.state_bytes()} B of state "
        "(float32) in the caller's struct"
    )
    if features.get("strip_tcp_options"):
        click.echo(
            "note: the model was trained with TCP options removed: pass each packet's IP "
            "total length minus its TCP option bytes as `size`"
        )


# --------------------------------------------------------------------------- eval
def _print_result(title: str, result: dict[str, Any]) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("attack", "n", "ROC AUC", "TPR@1%", "TPR@0.1%", "at threshold"):
        table.add_column(column, justify="right")
    rows = list(result["per_attack"].items()) + [("overall", result["overall"])]
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
        f"{result.get('false_alarms_per_hour', float('nan')):.2f}; model {result['model_bytes']} B; "
        f"{result['ops_per_inference']} ops/inference; "
        f"{result['us_per_packet']:.1f} µs per vector (features {result['feature_us_per_vector']:.1f} "
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
        c_features = _c_feature_rate(data_dir, strip)

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
                c_result = _c_scores(detector, streams, result, c_features)
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
            f"  pipeline ops = features + model; features: {feature_ops} ops/packet, {feature_pps:,.0f} "
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


detect.add_command(export)


def _c_feature_rate(data_dir: Path, strip: bool) -> float | None:
    """Packets per second of the C feature port (tinyward.detect.netfeatures_c) on the
    benign test capture, double precision, gcc -O2, one core; None without gcc."""
    import subprocess
    import tempfile

    from tinyward.detect.netfeatures_c import build_netfeatures_harness, pack_packets

    packets = read_packets(ev.packet_files(data_dir)["benign"][0], strip_tcp_options=strip)
    with tempfile.TemporaryDirectory(prefix="tinyward-nf-") as tmp:
        try:
            exe = build_netfeatures_harness(Path(tmp))
        except DetectMisuse as error:
            click.echo(f"  (C features not measured: {error})")
            return None
        done = subprocess.run(
            [str(exe), "bench", "10"],
            input=pack_packets(packets),
            capture_output=True,
            timeout=300,
            check=True,
        )
    return float(done.stdout.split()[0])


def _c_scores(
    detector: Any, streams: ev.PacketStreams, python: dict[str, Any], feature_rate: float | None
) -> dict[str, Any] | None:
    """Export ``detector`` as C, check the C scores equal the Python integer reference on
    every benign and attack vector, and time C scoring; None (with a note) without gcc."""
    from tinyward.bench.detect_c import bench_c

    vectors = np.vstack([streams.benign, *[x for x in streams.attacks.values() if len(x)]])
    try:
        measured = bench_c(detector, vectors, repeats=5)
    except (DetectMisuse, OSError) as error:
        click.echo(f"  (C export of {detector.name} not measured: {error})")
        return None
    if not measured.c_scores_match_reference:
        click.echo(f"  C scores of {detector.name} DIFFER from the Python reference")
        return None
    # Bit-exact scores give the same detection figures as the Python int8 rows.
    result = {k: v for k, v in python.items() if not k.startswith("_")}
    per_packet = 1.0 / measured.c_vectors_per_s
    if feature_rate:
        per_packet += 1.0 / feature_rate  # C features + C scoring, timed separately
    result.update(
        detector=f"{detector.name} (C)",
        c_vectors_per_s=measured.c_vectors_per_s,
        c_feature_packets_per_s=feature_rate,
        c_packets_per_s=1.0 / per_packet,
        c_scores_match_reference=True,
        us_per_packet=1e6 * per_packet,
        c_vectors_checked=len(vectors),
    )
    return result


COMMANDS: list[click.Command] = [detect]
BENCH_COMMANDS: list[click.Command] = [bench_detect]
