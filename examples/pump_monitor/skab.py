"""Read SKAB runs (semicolon CSV, 8 sensors at 1 Hz) and replay them as sensor frames.

This is the *source* side of the pump monitor: it runs in the trusted core, next to the
sensor, and hands the sandboxed application one frame per second. A file that is not a
SKAB run (a missing column, a cell that is not a number) is refused with
:class:`SkabFormatError`, naming the file and the line.

The data live outside the repository (``../shared/data/skab`` from the repository root,
GPL-3.0); nothing here copies them.
"""

from __future__ import annotations

import csv
import math
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tinyward.errors import BadInput

#: The eight sensor columns, in the order of the frame's channels (and of ``sensor.toml``).
SENSOR_COLUMNS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
LABEL_COLUMN = "anomaly"
#: The folders holding the 34 labelled runs, in the order the benchmark concatenates them.
RUN_FOLDERS = ("valve1", "valve2", "other")
#: Rows per run the protocol uses for fitting (the device's calibration period).
TRAIN_ROWS = 400


class SkabFormatError(BadInput):
    """A CSV file is not a usable SKAB run; the message names the file and line."""


@dataclass(frozen=True)
class Run:
    """One SKAB run: sensor values ``(n, 8)`` and, for labelled runs, ``anomaly`` ``(n,)``."""

    path: pathlib.Path
    values: np.ndarray
    anomaly: np.ndarray | None

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def default_data_dir() -> pathlib.Path:
    """``<repo>/../shared/data/skab`` for this checkout (the examples folder is two levels down)."""
    return pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "skab"


def read_run(path: pathlib.Path, *, require_labels: bool = True) -> Run:
    """Parse one SKAB CSV file.

    Raises:
        SkabFormatError: the file is empty, lacks a sensor column (or ``anomaly`` when
            ``require_labels``), has a short row, or a cell that is not a finite number.
        OSError: the file cannot be read.
    """
    path = pathlib.Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=";")
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise SkabFormatError(f"{path}: the file is empty (expected a SKAB header line)") from None
        wanted = list(SENSOR_COLUMNS) + ([LABEL_COLUMN] if require_labels else [])
        missing = [name for name in wanted if name not in header]
        if missing:
            raise SkabFormatError(
                f"{path}:1: missing column(s) {', '.join(missing)}; "
                f"a SKAB file has the columns {';'.join(SENSOR_COLUMNS)};{LABEL_COLUMN}"
            )
        has_labels = LABEL_COLUMN in header
        index = [header.index(name) for name in SENSOR_COLUMNS]
        label_index = header.index(LABEL_COLUMN) if has_labels else -1
        rows: list[list[float]] = []
        labels: list[float] = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < len(header):
                raise SkabFormatError(
                    f"{path}:{line_no}: {len(row)} cells, expected {len(header)} (row cut short?)"
                )
            rows.append([_number(row[i], path, line_no, header[i]) for i in index])
            if has_labels:
                labels.append(_number(row[label_index], path, line_no, LABEL_COLUMN))
    if not rows:
        raise SkabFormatError(f"{path}: no data rows after the header")
    anomaly = np.asarray(labels, dtype=np.int8) if has_labels else None
    return Run(path=path, values=np.asarray(rows, dtype=np.float64), anomaly=anomaly)


def _number(cell: str, path: pathlib.Path, line_no: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise SkabFormatError(
            f"{path}:{line_no}: column {column!r} holds {cell[:40]!r}, which is not a number"
        ) from None
    if not math.isfinite(value):
        raise SkabFormatError(f"{path}:{line_no}: column {column!r} holds {cell!r} (not finite)")
    return value


def labelled_runs(data_dir: pathlib.Path | None = None) -> list[Run]:
    """The 34 labelled runs in benchmark order (valve1, valve2, other; numeric file order).

    Raises:
        FileNotFoundError: the data directory or a run folder is missing.
        SkabFormatError: a run is malformed.
    """
    base = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
    runs: list[Run] = []
    for folder in RUN_FOLDERS:
        directory = base / folder
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: SKAB run folder not found")
        paths = sorted(directory.glob("*.csv"), key=lambda p: int(p.stem))
        runs.extend(read_run(p) for p in paths)
    return runs


def anomaly_free(data_dir: pathlib.Path | None = None) -> Run:
    """The unlabelled normal-operation recording (``anomaly-free/anomaly-free.csv``)."""
    base = pathlib.Path(data_dir) if data_dir is not None else default_data_dir()
    return read_run(base / "anomaly-free" / "anomaly-free.csv", require_labels=False)


def frames(run: Run) -> Iterator[np.ndarray]:
    """Replay a run as the sensor would deliver it: one ``(1, 8)`` float32 frame per second."""
    for row in run.values:
        yield row.astype(np.float32).reshape(1, len(SENSOR_COLUMNS))


def write_frames_csv(run: Run, path: pathlib.Path, channels: list[str]) -> None:
    """Write a run's sensor values as the frame CSV ``tinyward app run --frames`` reads
    (header = the manifest's channel names, comma-separated, one row per frame)."""
    if len(channels) != len(SENSOR_COLUMNS):
        raise ValueError(f"expected {len(SENSOR_COLUMNS)} channel names, got {len(channels)}")
    with pathlib.Path(path).open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(channels)
        for row in run.values.astype(np.float32):
            out.writerow([repr(float(v)) for v in row])


def main(argv: list[str] | None = None) -> None:
    """``python skab.py valve1/0.csv --out run.csv``: a SKAB run as frames for the sandbox."""
    import argparse
    import tomllib

    parser = argparse.ArgumentParser(description="Convert a SKAB run into a frame CSV.")
    parser.add_argument("run", help="path relative to the SKAB folder, e.g. valve1/0.csv")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--data", type=pathlib.Path, default=None, help="SKAB folder")
    args = parser.parse_args(argv)
    base = args.data if args.data is not None else default_data_dir()
    run = read_run(base / args.run)
    with (pathlib.Path(__file__).resolve().parent / "sensor.toml").open("rb") as handle:
        channels = tomllib.load(handle)["input"]["channels"]
    write_frames_csv(run, args.out, channels)
    print(f"{len(run.values)} frames -> {args.out}")


if __name__ == "__main__":
    main()
