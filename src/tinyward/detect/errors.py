"""Errors of the detect area.

Bad files from outside (captures, CSVs, model files) raise :class:`BadInput` subclasses
whose message names the file and the position; calling an API wrongly raises
:class:`DetectMisuse`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyward.errors import BadInput, Misuse


class PcapError(BadInput):
    """A capture file could not be read to its end.

    ``partial`` holds every packet record read before the problem, so a caller can keep
    what was computed so far; ``index`` is the number of the packet (0-based) being read
    and ``offset`` the byte offset in the file where the problem starts.
    """

    def __init__(
        self,
        path: Path | str,
        reason: str,
        *,
        index: int,
        offset: int,
        partial: list[Any] | None = None,
    ) -> None:
        self.path = str(path)
        self.reason = reason
        self.index = index
        self.offset = offset
        self.partial: list[Any] = partial if partial is not None else []
        super().__init__(reason)

    def __str__(self) -> str:
        # Computed on demand: a reader fills ``partial`` after raising from a generator.
        return (
            f"{self.path}: {self.reason} (packet #{self.index}, byte offset {self.offset}; "
            f"{len(self.partial)} packets read before it were kept)"
        )


class CsvError(BadInput):
    """A sensor CSV has a missing column, a non-numeric cell or no rows.

    ``line`` is 1-based as an editor shows it, ``column`` the column name; ``partial``
    holds the rows (as lists of floats) read before the problem.
    """

    def __init__(
        self,
        path: Path | str,
        reason: str,
        *,
        line: int,
        column: str | None = None,
        partial: list[list[float]] | None = None,
    ) -> None:
        self.path = str(path)
        self.reason = reason
        self.line = line
        self.column = column
        self.partial: list[list[float]] = partial if partial is not None else []
        where = f"line {line}" + (f", column {column!r}" if column else "")
        super().__init__(f"{self.path}: {where}: {reason}")


class DetectMisuse(Misuse):
    """An API of tinyward.detect was called wrongly (a caller bug)."""


class DetectError(BadInput):
    """A detector file (or other detect input from outside) was refused."""


class ModelFileError(DetectError):
    """A saved detector could not be loaded: unreadable, truncated, wrong format or shapes.

    ``path`` names the file and ``reason`` says what is wrong with it, in words a person
    can act on (which key, which shape was expected).
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NotFittedError(DetectMisuse):
    """A detector was used (score, save, export) before :meth:`fit` was called."""


class CalibrationRefused(DetectError):
    """The benign calibration data cannot support the requested false-positive rate.

    ``target_fpr`` is the rate asked for, ``needed`` the number of calibration scores it
    needs, ``have`` the number there were, and ``supported_fpr`` the lowest rate the data
    does support (see :mod:`tinyward.detect.threshold`).
    """

    def __init__(self, message: str, *, target_fpr: float, needed: int, have: int,
                 supported_fpr: float) -> None:
        self.target_fpr = target_fpr
        self.needed = needed
        self.have = have
        self.supported_fpr = supported_fpr
        super().__init__(message)


class LabelFileError(BadInput):
    """A per-frame label file is malformed or does not match its capture.

    ``line`` is 1-based as an editor shows it (0 when the problem is the file as a
    whole, e.g. a length that does not match the capture).
    """

    def __init__(self, path: Path | str, reason: str, *, line: int = 0) -> None:
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"line {line}: " if line else ""
        super().__init__(f"{self.path}: {where}{reason}")
