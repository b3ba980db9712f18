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
from tinyward.detect.sensorfusion import ChannelAlarmFused

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
    is removed). Sensors: any delimited CSV (channels, label and time columns chosen).
    Typical use:

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
    help="False-positive rate the alarm threshold is calibrated for: fitted on the earlier "
    "75 % of the benign vectors, threshold from the tail (peaks over threshold) of the last "
    "25 %. 0.1 % needs at least 10,000 calibration vectors, 1 % at least 1,000.",
)
@click.option(
    "--strict-threshold",
    is_flag=True,
    help="Refuse (instead of warning) when the benign data cannot support --target-fpr.",
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
@click.option(
    "--novelty",
    type=click.Choice(["pair", "service"]),
    default=None,
    help="Packets: also learn the peers (pair) or services (service) seen in training; "
    "a never-seen one alarms. 'pair' suits a device's own traffic; on a span port, new "
    "clients of known services alarm too.",
)
@click.option(
    "--per-class",
    is_flag=True,
    help="Packets: one threshold per protocol class (unicast TCP/UDP, broadcast, ICMP, "
    "other), so rare benign broadcasts do not set the bar for everything.",
)
def train(
    inputs: tuple[Path, ...],
    packets: bool,
    kind: str,
    out: Path,
    strip_tcp_options: bool,
    target_fpr: float,
    strict_threshold: bool,
    delimiter: str | None,
    channels: str | None,
    label_column: str,
    time_column: str | None,
    window: int,
    step: int,
    families: str,
    raw_rows: bool,
    smooth: str | None,
    novelty: str | None,
    per_class: bool,
) -> None:
    """Fit a detector on BENIGN inputs only (captures: one stream, in order; sensor CSVs:
    each its own stream).

    When the benign data is too short for --target-fpr, training warns (the warning is
    printed and recorded in the model file) or, with --strict-threshold, refuses.
    """
    if not packets and (novelty is not None or per_class):
        raise click.UsageError("--novelty and --per-class are for packet models")
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
        # calibration warnings are printed below from the model's calibration record
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", SensorChannelWarning)
        model = pipeline.train(inputs, kind=kind, packets=packets,
                               strip_tcp_options=strip_tcp_options, target_fpr=target_fpr,
                               delimiter=delimiter, sensor=options, progress=_steps(progress),
                               on_insufficient="refuse" if strict_threshold else "warn",
                               novelty=novelty, per_class=per_class)
    for warning in caught:
        if issubclass(warning.category, SensorChannelWarning):
            click.echo(f"warning: {warning.message}", err=True)
    pipeline.save_model(model, out)
    detector = model.detector
    cal = getattr(detector, "calibration", None)
    how = ""
    if cal is not None:
        how = f" for {100 * cal.target_fpr:g} % FPR ({cal.method}"
        if cal.interval is not None and cal.confidence is not None:
            how += (f", {round(100 * cal.confidence)} % interval "
                    f"{cal.interval[0]:.6g}-{cal.interval[1]:.6g}")
        how += f", {cal.n_calibration} calibration vectors)"
    click.echo(
        f"{kind}: fitted on {model.n_vectors} benign vectors of {model.n_features} features; "
        f"threshold {detector.threshold:.6g}{how}; {detector.model_bytes()} model bytes; "
        f"wrote {out} (detector and feature state)"
    )
    for note in cal.warnings if cal is not None else ():
        click.echo(f"warning: {note}", err=True)
    fusion = model.fusion
    if fusion is not None and fusion.novelty is not None:
        dropped = fusion.novelty.dropped
        n = len(fusion.novelty)
        click.echo(f"novelty set ({fusion.novelty.granularity}): {n} tuple"
                   f"{'' if n == 1 else 's'}, {fusion.novelty.nbytes()} B")
        if dropped.tuples:
            click.echo(f"warning: {dropped.tuples} rare tuples ({dropped.packets} training "
                       f"packets) did not fit the capacity of {fusion.novelty.capacity}; "
                       "they will alarm as novel", err=True)
        if fusion.statistical_fpr is not None and not fusion.warnings:
            click.echo(f"one FPR budget: novelty {100 * fusion.novelty_rate:.3g} % of the "
                       "later training stretch, statistics calibrated for "
                       f"{100 * fusion.statistical_fpr:.3g} %")
        for note in fusion.warnings:
            click.echo(f"warning: {note}", err=True)


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
    if loaded.fusion is not None:  # the alarms above are the fused rule's
        novel = "" if scored.novel is None else f"{int(scored.novel.sum())} novel, "
        click.echo(f"  alarm = novel OR score > its class's threshold: {novel}"
                   f"{int(alarms.sum())} alarms")
    if out is not None:
        pipeline.write_scores_csv(scored, out)
    if scored.problem is not None:
        raise scored.problem


def _export_sensor_features(features: pipeline.SensorFeatures, out_dir: Path, prefix: str) -> None:
    """`export-features` for a sensor model: one header, and its state bytes."""
    # imported here: keeps this module's import block as it was (merges stay easy)
    from tinyward.detect.sensorfeatures_c import (
        export_sensorfeatures_c,
        ops_per_window,
        state_bytes,
    )

    extractor = features.extractor
    files = export_sensorfeatures_c(extractor, out_dir, prefix)
    cfg = extractor.config
    click.echo(
        f"wrote {files.header}: {files.n_channels} channels in, {files.n_features} features "
        f"out every {cfg.step} rows (window {cfg.window}, replay history {cfg.history}), "
        "starting from the trained state"
    )
    click.echo(
        f"state: {files.state_bytes} B = {files.formula} "
        f"(8 channels: {state_bytes(8, cfg.window, cfg.history, v2=files.v2)} B, "
        f"36 channels: {state_bytes(36, cfg.window, cfg.history, v2=files.v2)} B)"
    )
    click.echo(
        "replay search: "
        f"{ops_per_window(files.n_channels, cfg.window, cfg.history, cfg.min_replay_lag)} "
        "abs-difference-adds per window"
    )


@detect.command("export-features")
@click.argument("model", type=click.Path(path_type=Path))
@c_out_folder
@click.option("--prefix", default="tw_nf", show_default=True, help="C name prefix.")
def export_features(model: Path, out_dir: Path, prefix: str) -> None:
    """Export MODEL's features as C99: packets (.h and .c) or sensor windows (one .h).

    The C starts from the model's trained feature state. Firmware feeds it one parsed IP
    packet at a time and passes the 24 features to the detector exported by `tinyward
    detect export`. The default double build is bit-exact with Python; define TW_NF_FLOAT
    (with your prefix) for float32 statistics on a single-precision FPU (times stay
    double; bit-exact with tinyward.detect.netfeatures_f32).
    """
    from tinyward.detect.netfeatures_c import c_state_bytes_for

    loaded = pipeline.load_model(model)
    if isinstance(loaded.features, pipeline.SensorFeatures):  # one header, tw_sf by default
        _export_sensor_features(loaded.features, out_dir, "tw_sf" if prefix == "tw_nf" else prefix)
        return
    if not isinstance(loaded.features, pipeline.PacketFeatures):
        raise DetectError(f"{model}: a sensor model; only packet features export")
    files = pipeline.export_features_c(loaded, out_dir, prefix)
    config = loaded.features.extractor.config
    click.echo(
        f"wrote {files.header} and {files.source}, starting from the trained state: "
        f"{c_state_bytes_for(config, 8)} B of state (double) or "
        f"{c_state_bytes_for(config, 4)} B (float build) in the caller's struct"
    )
    if loaded.fusion is not None and loaded.fusion.novelty is not None:
        from tinyward.detect.novelty_c import export_novelty_c

        nov = export_novelty_c(out_dir, loaded.fusion, f"{prefix}_nov")
        click.echo(f"wrote {nov.header} and {nov.source}: the novelty set "
                   f"({len(loaded.fusion.novelty)} hashes) and per-class thresholds; "
                   "they hold the model's novelty key: keep them as confidential as the model")
    if loaded.features.strip_tcp_options:
        click.echo(
            "note: the model was trained with TCP options removed: pass each packet's IP "
            "total length minus its TCP option bytes as `size`"
        )


@detect.command("export-threshold")
@click.argument("model", type=click.Path(path_type=Path))
@c_out_folder
@click.option("--prefix", default="tw_threshold", show_default=True, help="C name prefix.")
@click.option(
    "--drift-alpha",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="On-device drift rate: each normal score moves the level by this fraction "
    "(DSPOT-style; 0 keeps the threshold fixed). Alarms never move it.",
)
def export_threshold(model: Path, out_dir: Path, prefix: str, drift_alpha: float) -> None:
    """Export MODEL's calibrated threshold, with optional drift adaptation, as C99.

    One header and one source, 32 bytes of state, bit-exact with
    tinyward.detect.threshold_stream (build with -ffp-contract=off).
    """
    from tinyward.detect.threshold_c import export_threshold_c
    from tinyward.detect.threshold_stream import from_record

    loaded = pipeline.load_model(model)
    cal = getattr(loaded.detector, "calibration", None)
    if cal is None:
        raise DetectError(f"{model}: records no calibration (written before thresholds were "
                          "calibrated); train it again")
    files = export_threshold_c(from_record(cal, drift_alpha), out_dir, prefix)
    click.echo(f"wrote {files.header} and {files.source}: threshold {cal.threshold:.6g} for "
               f"{100 * cal.target_fpr:g} % FPR, drift alpha {drift_alpha:g}, 32 B of state")


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


def _print_thresholds(result: dict[str, Any]) -> None:
    """One line per requested rate: the detector's own threshold, realised on held-out
    benign data (see tinyward.detect.threshold)."""
    for rate, entry in result.get("thresholds", {}).items():
        cal = entry["calibration"]
        interval = cal.get("interval")
        how = cal["method"] + (
            f", {round(100 * cal['confidence'])} % interval {interval[0]:.6g}-{interval[1]:.6g}"
            if interval else "")
        realised = entry.get("realised")
        said = ""
        if realised is not None:
            verdict = "within 2x" if realised["within_2x"] else "NOT within 2x"
            said = (f": realised {100 * realised['rate']:.3g} % (95 % CI "
                    f"{100 * realised['low']:.3g}-{100 * realised['high']:.3g} %, "
                    f"{realised['alarms']}/{realised['n']}), {verdict}")
        click.echo(f"  own threshold for {100 * float(rate):g} % FPR: {cal['threshold']:.6g} "
                   f"({how}){said}; TPR {_fmt(entry['tpr'].get('overall'))}")
        for note in cal.get("warnings", []):
            click.echo(f"  warning: {note}")


def _labelled_eval(model_path: Path, capture: Path | None, labels_path: Path | None,
                   csv_path: Path | None, label_column: str, out_dir: Path) -> None:
    from tinyward.detect import labelled

    model = pipeline.load_model(model_path)
    if capture is not None:
        if labels_path is None:
            raise click.UsageError("--capture needs --labels FILE (one label per frame)")
        labels = labelled.read_labels(labels_path)
        scored = labelled.score_capture_by_frame(model, capture, labels, str(labels_path))
        rows_name, source = "frames.csv", capture
    elif csv_path is not None:
        scored = labelled.score_csv_by_window(model, csv_path, label_column)
        rows_name, source = "windows.csv", csv_path
    else:
        raise click.UsageError("give --capture (with --labels) or --csv")
    result = labelled.evaluate_labelled(scored)
    result["model"] = str(model_path)
    result["input"] = str(source)
    table = Table(title=f"{source}: {scored.unit} scored by {model_path.name}",
                  title_justify="left")
    for column in ("label", "n", "skipped", "ROC AUC", "TPR@1%", "TPR@0.1%", "at threshold"):
        table.add_column(column, justify="right")
    for name, m in [*result["per_attack"].items(), ("overall", result["overall"])]:
        table.add_row(name, str(m["n"]), str(m.get("skipped", "")), _fmt(m["roc_auc"]),
                      _fmt(m["tpr_at_0.01"]), _fmt(m["tpr_at_0.001"]),
                      _fmt(m.get("detected_at_threshold")))
    Console(width=200).print(table)
    click.echo(f"  {result['n']} {scored.unit}, {result['scored']} scored; "
               f"{scored.skipped_text()}; {result['benign_n']} benign scored")
    if scored.score_note:
        click.echo(f"  score: {scored.score_note}")
    at = result["at_threshold"]
    click.echo(f"  at the model's own alarm rule: precision {_fmt(at['precision'])}, recall "
               f"{_fmt(at['recall'])}, F1 {_fmt(at['f1'])} (TP {at['tp']}, FP {at['fp']}, "
               f"FN {at['fn']}"
               + ("; a skipped attack frame is a miss)" if scored.unit == "frames" else ")"))
    realised = result.get("realised")
    if realised is not None and realised.get("requested") is not None:
        verdict = "within 2x" if realised["within_2x"] else "NOT within 2x"
        click.echo(f"  own threshold {scored.threshold:.6g} (calibrated for "
                   f"{100 * realised['requested']:g} % FPR): realised "
                   f"{100 * realised['rate']:.3g} % on the benign {scored.unit} (95 % CI "
                   f"{100 * realised['low']:.3g}-{100 * realised['high']:.3g} %, "
                   f"{realised['alarms']}/{realised['n']}), {verdict}")
    elif realised is not None:
        click.echo(f"  own threshold {scored.threshold:.6g}: {realised['alarms']} of "
                   f"{realised['n']} benign {scored.unit} alarmed (the model file does not "
                   "say which rate it was calibrated for)")
    out_dir.mkdir(parents=True, exist_ok=True)
    cal = getattr(model.detector, "calibration", None)
    fused = getattr(model, "fusion", None)
    fusion_notes = fused.warnings if fused is not None else ()
    for note in (*(cal.warnings if cal is not None else ()), *fusion_notes):
        click.echo(f"  warning (recorded when the model was trained): {note}")
    labelled.write_rows_csv(scored, out_dir / rows_name)
    ev.write_json(out_dir / "eval.json", result)
    click.echo(f"wrote {out_dir / 'eval.json'} and {out_dir / rows_name}")


@detect.command("eval")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help="A model file from `detect train`: score --capture or --csv with it.",
)
@click.option(
    "--capture",
    type=click.Path(path_type=Path),
    help="A pcap/pcapng capture to score with --model; needs --labels.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(path_type=Path),
    help="Per-frame labels of --capture, frames numbered from 1 as Wireshark does: one "
    "label per line (line i = frame i), or a CSV with a header naming 'frame' and 'label'. "
    "0, benign or normal is benign; anything else an attack (reported per label).",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path),
    help="A sensor CSV with a label column to score with a sensor --model.",
)
@click.option(
    "--label-column",
    default="anomaly",
    show_default=True,
    help="The --csv label column (0 benign, anything else an attack).",
)
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
    model_path: Path | None,
    capture: Path | None,
    labels_path: Path | None,
    csv_path: Path | None,
    label_column: str,
    packet_dir: Path | None,
    sensor_csv: Path | None,
    kinds: tuple[str, ...],
    out_dir: Path,
    seed: int,
) -> None:
    """Evaluate detectors and print the figures, with every threshold's realised FPR.

    \b
    Labelled data, scored by a trained model (frames numbered from 1, as Wireshark):
      tinyward detect eval --model m.json --capture x.pcapng --labels labels.csv
      tinyward detect eval --model m.json --csv run.csv --label-column anomaly
    writes eval.json and frames.csv (frame,label,score,alarm,skipped) or windows.csv;
    frames the reader skips (non-IP, malformed, truncated) are counted and listed.

    \b
    The built-in protocols (see tinyward.detect.evaluate), fitting every --kind:
      --packets MQTTSET_DIR (as captured and with TCP option bytes removed)
      --sensors SKAB_DIR_OR_CSV (tampering injected)
    Each reports, per requested FPR (1 % and 0.1 %), the detector's own calibrated
    threshold and its realised FPR on held-out benign data with a 95 % Clopper-Pearson
    interval, and whether it is within 2x of the request.
    """
    if model_path is not None or capture is not None or csv_path is not None:
        if model_path is None or (capture is None) == (csv_path is None):
            raise click.UsageError("labelled data needs --model and one of --capture "
                                   "(with --labels) or --csv")
        if packet_dir is not None or sensor_csv is not None:
            raise click.UsageError("--model is for labelled data; --packets/--sensors fit "
                                   "their own detectors")
        _labelled_eval(model_path, capture, labels_path, csv_path, label_column, out_dir)
        return
    if packet_dir is None and sensor_csv is None:
        raise click.UsageError("give --packets DIR and/or --sensors CSV, or --model with "
                               "--capture/--labels or --csv")
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
                _print_thresholds(result)
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
            _print_thresholds(result)
            report[f"sensors/{kind}"] = result
            sensor_curves[kind] = result["_scores"]
        # each detector OR-ed with the per-channel lagz alarm (tinyward.detect.sensorfusion)
        fused_streams = ev.with_lagz(streams_s)
        for kind in kinds:
            fused = ChannelAlarmFused(make_detector(kind))
            result = ev.evaluate_scores(fused, fused_streams, seed=seed)
            result["note"] = streams_s.note
            _print_result(f"sensors (tampering injected): {fused.name} (OR: alarm when "
                          "either does)", result)
            report[f"sensors/{fused.name}"] = result
            sensor_curves[fused.name] = result["_scores"]
        ev.plot_roc(
            sensor_curves, out_dir / "roc-sensors.png", "SKAB anomaly-free with INJECTED tampering"
        )
    ev.write_json(out_dir / "eval.json", report)
    click.echo(f"wrote {out_dir / 'eval.json'} and ROC plot(s) in {out_dir}")


# --------------------------------------------------------------------------- bench
#: Bench columns of the detector's own calibrated thresholds (tinyward.detect.threshold):
#: the realised FPR on the benign test with its 95 % Clopper-Pearson interval ("*": not
#: within 2x of the request; "!": the calibration warned that it cannot support the rate)
#: and the TPR at that threshold, for 0.1 % and 1 %.
_OWN_COLUMNS = ("own 0.1%: FPR [95% CI]", "TPR", "own 1%: FPR [95% CI]", "TPR")


def _own_cells(result: dict[str, Any]) -> list[str]:
    cells = []
    for rate in ("0.001", "0.01"):
        entry = result.get("thresholds", {}).get(rate)
        realised = entry.get("realised") if entry else None
        if realised is None:
            cells += ["", ""]
            continue
        flag = "" if realised["within_2x"] else "*"
        # "!": the calibration data cannot support this rate (the fit warned), so the
        # realised rate is no promise; said in the cell, not only on stderr.
        if (entry.get("calibration") or {}).get("warnings"):
            flag += "!"
        cells.append(f"{100 * realised['rate']:.2f}%{flag} [{100 * realised['low']:.2f}-"
                     f"{100 * realised['high']:.2f}]")
        cells.append(_fmt(entry["tpr"]["overall"]))
    return cells


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
    help="Only the TCP-options-removed view (both views by default: ~2.5 min on a busy "
    "2-core machine).",
)
@click.option(
    "--full-hst",
    is_flag=True,
    help="river's default HalfSpaceTrees (25 trees of height 15) instead of 10 of height "
    "10 (much weaker: use this for a fair HalfSpaceTrees figure): about 10 min in all.",
)
@click.option(
    "--out",
    "out_path",
    default=Path("detect-bench.json"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="JSON file for every figure (per attack, per view, per detector).",
)
@click.option("--train", "train_capture", type=click.Path(path_type=Path),
              help="Any labelled data instead of MQTTset: a benign capture to fit every "
              "detector on (needs --capture and --labels).")
@click.option("--capture", type=click.Path(path_type=Path),
              help="A capture with per-frame labels, scored as one stream continuing from "
              "--train's state.")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path),
              help="Labels of --capture's frames (the `detect eval --labels` format).")
def bench_detect(data_dir: Path, quick: bool, full_hst: bool, out_path: Path,
                 train_capture: Path | None = None, capture: Path | None = None,
                 labels_path: Path | None = None) -> None:
    """tinyward's detectors next to KitNET, HalfSpaceTrees and IsolationForest.

    Same features (tinyward's 24 per-packet features), same splits, same machine.
    MQTTset by default; any capture with per-frame labels with --train, --capture and
    --labels (one column per attack label; see tinyward.bench.detect_labelled).
    """
    labelled = (train_capture, capture, labels_path)
    if any(x is not None for x in labelled) and any(x is None for x in labelled):
        raise click.UsageError("labelled data needs all of --train, --capture and --labels")
    from tinyward.bench.detect_c import c_feature_rate, c_scores
    from tinyward.detect.baselines import (
        HalfSpaceTreesBaseline,
        IsolationForestBaseline,
        KitNETBaseline,
    )
    from tinyward.detect.cost import AFTERIMAGE_OPS, KITNET_100_OPS, KITSUNE_PIPELINE_OPS

    def contenders() -> list[Any]:
        ours = [make_detector(kind) for kind in sorted(KINDS)]
        hst = (HalfSpaceTreesBaseline() if full_hst
               else HalfSpaceTreesBaseline(n_trees=10, height=10))
        return [*ours, KitNETBaseline(), hst, IsolationForestBaseline()]

    report: dict[str, Any] = {}
    views = (True,) if quick else (False, True)
    for strip in views:
        view = "tcp-options-removed" if strip else "as-captured"
        with _progress() as progress:
            progress.add_task(f"packet features ({view})", total=None)
            if capture is None:
                streams = ev.packet_streams(data_dir, strip_tcp_options=strip)
                data_name = "MQTTset"
            else:
                from tinyward.bench.detect_labelled import labelled_streams

                streams, labelled_packets, notes = labelled_streams(
                    train_capture, capture, labels_path,  # type: ignore[arg-type]
                    strip_tcp_options=strip)
                data_name = capture.name
                report[f"{view}/data"] = notes
                click.echo(f"  {capture}: {notes['frames']} frames, {notes['scored']} scored; "
                           "skipped: " + ", ".join(f"{v} {k}" for k, v in
                                                   notes["skipped"].items())
                           + "; skipped attack frames: " + ", ".join(
                               f"{k} {v}" for k, v in notes["skipped_attack_frames"].items()))
            n = len(streams.train)
            feature_pps = 1e6 / streams.feature_us_per_packet
        attack_names = list(streams.attacks)
        table = Table(
            title=f"{data_name}, {view}: TPR @ 0.1% FPR per attack (ROC AUC overall)",
            title_justify="left",
        )
        table.add_column("detector", no_wrap=True)
        # the own-threshold figures get their own table: in one 200-column table the
        # detector names and the intervals were cut to "autoenco…" and "[0.06-0.…"
        own = Table(title=f"{data_name}, {view}: TPR @ 1% FPR per attack; each detector's own "
                    "thresholds, realised on the benign test", title_justify="left")
        own.add_column("detector", no_wrap=True)
        for column in (*(f"{a} @1%" for a in attack_names), *_OWN_COLUMNS):
            own.add_column(column, justify="right", no_wrap=True)
        for column in (
            *attack_names,
            "overall",
            "TPR@1%",
            "AUC",
            "model B",
            "novelty B",
            "model ops",
            "pipeline ops",
            "state B",
            "pkts/s",
        ):
            table.add_column(column, justify="right")
        feature_ops = streams.extractor.ops_per_packet()
        c_features, note = (c_feature_rate(data_dir, strip) if capture is None
                            else (None, "C features timed on MQTTset only"))
        if note:
            click.echo(f"  ({note})")

        def add_row(
            name: str,
            result: dict[str, Any],
            rate: float,
            table: Table = table,
            own: Table = own,
            feature_ops: int = feature_ops,
            attack_names: list[str] = attack_names,
        ) -> None:
            pa = result["per_attack"]
            table.add_row(
                name,
                *(_fmt(pa[a]["tpr_at_0.001"]) for a in attack_names),
                _fmt(result["overall"]["tpr_at_0.001"]),
                _fmt(result["overall"]["tpr_at_0.01"]),
                _fmt(result["overall"]["roc_auc"]),
                str(result["model_bytes"]),
                str(result.get("novelty_bytes", 0)),
                str(result["ops_per_inference"]),
                str(result["ops_per_inference"] + feature_ops),
                str(result["state_bytes"]),
                f"{rate:,.0f}",
            )
            own.add_row(name, *(_fmt(pa[a]["tpr_at_0.01"]) for a in attack_names),
                        *_own_cells(result))

        from tinyward.bench.detect import fused_results, stream_packets

        packets = (stream_packets(data_dir, strip) if capture is None
                   else labelled_packets)
        for detector in contenders():
            with _progress() as progress:
                progress.add_task(f"{detector.name} ({view})", total=None)
                result = ev.evaluate_scores(detector, streams)
            report[f"{view}/{detector.name}"] = result
            add_row(detector.name, result, 1e6 / result["us_per_packet"])
            if detector.name in KINDS:  # novelty and per-class thresholds on its scores
                for name, fused in fused_results(detector, streams, packets).items():
                    report[f"{view}/{name}"] = fused
                    add_row(name, fused, 1e6 / result["us_per_packet"])
                    novel = fused.get("novel_fraction")
                    click.echo(
                        f"  {name}: realised FPR of the fused alarm on benign test "
                        f"{fused['benign_fpr_at_threshold']:.4f} ({fused['benign_false_alarms']}"
                        f"/{fused['benign_n']})"
                        + ("; novel: " + ", ".join(f"{k} {v:.3f}" for k, v in novel.items()
                                                   if v is not None) if novel else ""))
            if detector.name.endswith("-int8"):
                c_result, note = c_scores(detector, streams, result, c_features)
                if note:
                    click.echo(f"  {note}")
                if c_result is not None:
                    report[f"{view}/{detector.name} (C)"] = c_result
                    add_row(f"{detector.name} (C)", c_result, c_result["c_packets_per_s"])
        table.add_row(
            "Kitsune as published",
            *(["(cost only)"] + [""] * (len(attack_names) + 2)),
            "",
            "",
            str(KITNET_100_OPS),
            str(KITSUNE_PIPELINE_OPS),
            "unbounded",
            "",
        )
        Console(width=200).print(table)
        Console(width=200).print(own)
        click.echo(
            f"  pipeline ops = features + model; features: {feature_ops} ops/packet, "
            f"{feature_pps:,.0f} "
            f"packets/s in Python, {streams.state_bytes} B of bounded state; trained on "
            f"{n} benign packets. pkts/s: features + one-vector-at-a-time scoring in "
            "Python; for (C) rows, C features (netfeatures_c, double, gcc -O2: "
            + (f"{c_features:,.0f} packets/s" if c_features else "not timed here")
            + ") + exported C scoring, timed apart, one core."
        )
    click.echo(
        "  own 0.1% / own 1%: each detector's own threshold for that FPR (fitted on the earlier "
        "75 % of training, peaks-over-threshold on its last 25 % as it is and as new peers, "
        "the higher; fused rows: their alarm rule refitted at that FPR), realised on the "
        "benign test with a 95 % Clopper-Pearson interval; * = not within 2x of the request "
        "(above 2x: a broken promise; below half: conservative); ! = the calibration data "
        "do not support that rate (the fit warned: fewer calibration scores than the rate "
        "needs, docs/detect.md)."
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
               f"channels at most {monitor_bytes(8, chosen.model)} B of float32 state, "
               f"{skab_ops(8, chosen.model)} ops per row")


def monitor_bytes(channels: int, model: str = "mahal") -> int:
    """float32 scoring state for the monitor (PCA: at most k = channels components)."""
    from tinyward.detect import skab

    return 4 * skab.state_floats(model, channels, channels)


def skab_ops(channels: int, model: str = "mahal") -> int:
    from tinyward.detect import skab

    return skab.ops_per_row(model, channels, channels)


detect.add_command(export)


COMMANDS: list[click.Command] = [detect]
BENCH_COMMANDS: list[click.Command] = [bench_detect]
