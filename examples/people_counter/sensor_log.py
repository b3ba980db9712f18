"""Sources of real sensor readings for the people counter: a CSV log or a serial port.

Both produce what the app's manifest declares: frames of 20 readings x 2 zones, int16 mm,
0 where the sensor flagged a reading invalid. They run on the trusted side, next to the
sensor; a malformed log is refused with :class:`SensorLogError`, naming file and line.

CSV log (what ``simulate.py --out`` writes, and what a logger on real hardware should
write): a header naming at least ``zone_out_mm`` and ``zone_in_mm`` (other columns, such as
``t_ms``, are ignored), then one row per sample at 20 Hz. An empty cell is an invalid
reading (0). A trailing partial frame is dropped.

Serial port: the sensor's microcontroller prints one ``<out_mm>,<in_mm>`` line per sample
(ASCII, ``\\n``-terminated) — e.g. ST's VL53L1X ULD example with two ROIs, printing the
distance, or 0 when RangeStatus != 0. The port is opened with the standard library only
(``os`` + ``termios``: raw mode, 8N1, the given baud rate); pyserial is not needed.
"""

from __future__ import annotations

import csv
import os
import pathlib
import select
import termios
import time
import tty
from collections.abc import Iterator

import numpy as np

from tinyward.errors import BadInput

COLUMNS = ("zone_out_mm", "zone_in_mm")
FRAME = 20
MAX_MM = 8000  # beyond any VL53L1X range: a larger number is a corrupt line
MAX_LINE = 64  # bytes; a longer serial line is noise, not a reading


class SensorLogError(BadInput):
    """A sensor log or serial line is malformed; the message names the source and line."""


def _value(cell: str, where: str, column: str) -> int:
    cell = cell.strip()
    if cell == "":
        return 0
    try:
        value = int(cell)
    except ValueError:
        try:
            number = float(cell)
        except ValueError:
            raise SensorLogError(f"{where}: {column} is {cell[:20]!r}, not a distance in mm") from None
        if not number.is_integer():
            raise SensorLogError(f"{where}: {column} is {cell[:20]!r}, not a whole number of mm")
        value = int(number)
    if not 0 <= value <= MAX_MM:
        raise SensorLogError(f"{where}: {column} is {value}, outside 0..{MAX_MM} mm")
    return value


def read_csv(path: pathlib.Path) -> np.ndarray:
    """All readings of a CSV sensor log as an ``(n, 2)`` int16 array.

    Raises:
        SensorLogError: empty file, a missing column, a short row, or a cell that is not a
            distance (the message gives ``file:line``).
        OSError: the file cannot be read.
    """
    path = pathlib.Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader)]
        except StopIteration:
            raise SensorLogError(f"{path}: empty file (expected a header with {', '.join(COLUMNS)})") from None
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise SensorLogError(
                f"{path}:1: missing column(s) {', '.join(missing)}; the header is {','.join(header)[:200]!r}"
            )
        index = [header.index(c) for c in COLUMNS]
        rows: list[tuple[int, int]] = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= max(index):
                raise SensorLogError(f"{path}:{line_no}: {len(row)} cells, expected {len(header)}")
            where = f"{path}:{line_no}"
            rows.append((_value(row[index[0]], where, COLUMNS[0]), _value(row[index[1]], where, COLUMNS[1])))
    return np.asarray(rows, dtype=np.int16).reshape(-1, 2)


def frames_of(readings: np.ndarray, frame: int = FRAME) -> Iterator[np.ndarray]:
    """Cut ``(n, 2)`` readings into ``(frame, 2)`` frames; a partial last frame is dropped."""
    for start in range(0, len(readings) - frame + 1, frame):
        yield readings[start : start + frame]


def csv_frames(path: pathlib.Path) -> Iterator[np.ndarray]:
    """Frames from a CSV sensor log (see :func:`read_csv` for what it raises)."""
    return frames_of(read_csv(path))


def parse_line(line: bytes, where: str) -> tuple[int, int]:
    """One ``out,in`` serial line.

    Raises:
        SensorLogError: not two comma-separated distances.
    """
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SensorLogError(f"{where}: not ASCII text") from None
    cells = text.split(",")
    if len(cells) != 2:
        raise SensorLogError(f"{where}: expected '<out_mm>,<in_mm>', got {text[:40]!r}")
    return _value(cells[0], where, COLUMNS[0]), _value(cells[1], where, COLUMNS[1])


def serial_frames(
    device: str,
    *,
    baud: int = 115200,
    timeout_s: float = 5.0,
    max_frames: int | None = None,
    configure: bool = True,
) -> Iterator[np.ndarray]:
    """Frames read from a serial device (or any tty), until ``max_frames`` or end of input.

    The first line is discarded: the port may have been opened mid-line.

    Raises:
        SensorLogError: a malformed or over-long line, or no data for ``timeout_s``.
        OSError: the device cannot be opened or configured.
    """
    speed = getattr(termios, f"B{baud}", None)
    if speed is None:
        raise ValueError(f"unsupported baud rate {baud}")
    fd = os.open(device, os.O_RDONLY | os.O_NOCTTY)
    try:
        if configure:
            tty.setraw(fd, termios.TCSANOW)  # keep what is already buffered
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = speed  # ispeed, ospeed
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        pending = b""
        line_no = 0
        frame: list[tuple[int, int]] = []
        produced = 0
        while max_frames is None or produced < max_frames:
            deadline = time.monotonic() + timeout_s
            while b"\n" not in pending:
                if len(pending) > MAX_LINE:
                    raise SensorLogError(f"{device}:{line_no + 1}: line longer than {MAX_LINE} bytes")
                left = deadline - time.monotonic()
                ready, _, _ = select.select([fd], [], [], max(left, 0.0))
                if not ready:
                    raise SensorLogError(f"{device}: no reading for {timeout_s:g} s")
                try:
                    chunk = os.read(fd, 256)
                except OSError:  # the other end of a pty went away
                    chunk = b""
                if not chunk:
                    return
                pending += chunk
            line, pending = pending.split(b"\n", 1)
            line_no += 1
            if line_no == 1 or not line.strip():
                continue
            frame.append(parse_line(line, f"{device}:{line_no}"))
            if len(frame) == FRAME:
                yield np.asarray(frame, dtype=np.int16)
                frame = []
                produced += 1
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> None:
    """Feed a real sensor's readings to the counter app (in-process) and print each count.

    ``python sensor_log.py --csv log.csv`` or ``python sensor_log.py --serial /dev/ttyACM0``.
    """
    import argparse
    import sys

    here = pathlib.Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    import people_counter_app

    parser = argparse.ArgumentParser(description="Count people from a CSV log or a serial port.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=pathlib.Path)
    source.add_argument("--serial")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--model", type=pathlib.Path, default=here / "model.npz")
    args = parser.parse_args(argv)
    app = people_counter_app.factory([args.model])
    if args.csv is not None:
        frames: Iterator[np.ndarray] = csv_frames(args.csv)
    else:
        frames = serial_frames(args.serial, baud=args.baud, max_frames=args.frames)
    for second, frame in enumerate(frames):
        if args.frames is not None and second >= args.frames:
            break
        result = app.process(frame)
        if result is not None:
            print(f"t={second + 1:>6d} s  count={result['count']}", flush=True)


if __name__ == "__main__":
    main()
