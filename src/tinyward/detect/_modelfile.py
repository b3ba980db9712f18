"""The on-disk form of a detector: one JSON document, read as hostile input.

A detector file is small (a few kilobytes of weights), so JSON is enough and keeps
it inspectable; nothing is ever unpickled. Every value is checked for type, shape,
range and finiteness before a detector object is built from it, and each refusal is a
:class:`~tinyward.detect.errors.ModelFileError` naming the file and the key.

Writes are atomic (:func:`tinyward._fsutil.atomic_write`), so a crash never leaves half
a model where a good one was.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyward._fsutil import atomic_write
from tinyward.detect.errors import DetectMisuse, ModelFileError

FORMAT = "tinyward.detect.model"
VERSION = 1


@dataclass(frozen=True)
class Limits:
    """Bounds on what a model file may declare (a device-sized detector is far smaller)."""

    max_file_bytes: int = 4 * 1024 * 1024
    max_features: int = 256
    max_hidden: int = 64


LIMITS = Limits()


def write_model(path: Path, kind: str, body: dict[str, Any]) -> None:
    """Write ``body`` as a detector file of ``kind`` atomically.

    Raises:
        DetectMisuse: the file would be larger than :data:`LIMITS` allows.
        OSError: the folder is not writable.
    """
    document = {"format": FORMAT, "version": VERSION, "kind": kind, **body}
    data = json.dumps(document, indent=1, allow_nan=False).encode("utf-8")
    if len(data) > LIMITS.max_file_bytes:
        # Never write a file that read_model would refuse.
        raise DetectMisuse(f"the model would be {len(data)} bytes; a model file is at most "
                           f"{LIMITS.max_file_bytes} (use fewer feature table slots)")
    atomic_write(Path(path), data)


def read_model(path: Path) -> tuple[str, Doc]:
    """Read and parse a detector file; return its kind and a checked view of its body.

    Raises:
        ModelFileError: unreadable, too large, not UTF-8 JSON, or not a tinyward model.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > LIMITS.max_file_bytes:
            raise ModelFileError(
                path, f"file is {size} bytes; a detector file is at most {LIMITS.max_file_bytes}"
            )
        raw = path.read_bytes()
    except OSError as error:
        raise ModelFileError(path, f"cannot read the file ({error.strerror or error})") from None
    if not raw:
        raise ModelFileError(path, "file is empty")
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError as error:
        raise ModelFileError(
            path, f"not UTF-8 text at byte {error.start}: not a model file"
        ) from None
    except json.JSONDecodeError as error:
        raise ModelFileError(
            path,
            f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "truncated or not a tinyward model file",
        ) from None
    except ValueError as error:
        raise ModelFileError(path, str(error)) from None
    except RecursionError:
        raise ModelFileError(path, "JSON nested too deeply: not a tinyward model file") from None
    if not isinstance(document, dict):
        raise ModelFileError(path, "top level is not a JSON object: not a tinyward model file")
    doc = Doc(path, document, "")
    if document.get("format") != FORMAT:
        raise ModelFileError(path, f"'format' is not {FORMAT!r}: not a tinyward model file")
    version = doc.integer("version", 0, 1_000_000)
    if version != VERSION:
        raise ModelFileError(
            path, f"model format version {version} is not supported (want {VERSION})"
        )
    kind = doc.get("kind")
    if not isinstance(kind, str):
        raise ModelFileError(path, "'kind' is missing or not a string")
    return kind, doc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed in a model file")


class Doc:
    """A checked view of one JSON object of a model file; every getter validates."""

    def __init__(self, path: Path, data: dict[str, Any], where: str) -> None:
        self.path = path
        self.data = data
        self.where = where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, reason: str) -> ModelFileError:
        return ModelFileError(self.path, f"'{self._name(key)}': {reason}")

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise self.fail(key, "missing")
        return self.data[key]

    def section(self, key: str) -> Doc:
        value = self.get(key)
        if not isinstance(value, dict):
            raise self.fail(key, "is not a JSON object")
        return Doc(self.path, value, self._name(key))

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"is not an integer (got {type(value).__name__})")
        if not low <= value <= high:
            raise self.fail(key, f"{value} is outside [{low}, {high}]")
        return value

    def number(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"is not a number (got {type(value).__name__})")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.fail(key, "is not finite")
        return number

    def floats(
        self, key: str, shape: tuple[int, ...], *, positive: bool = False, bound: float = 1e6
    ) -> np.ndarray:
        """A float array of ``shape`` with every |value| <= ``bound``.

        The default bound is far above any trained weight (inputs are standardised and
        clipped), and keeps scores of a doctored file finite instead of overflowing.
        """
        array = self._array(key, shape)
        if array.dtype.kind not in "if":
            raise self.fail(key, "holds values that are not numbers")
        result = array.astype(np.float64)
        if not np.all(np.isfinite(result)):
            raise self.fail(key, "holds a value that is not finite")
        if np.any(np.abs(result) > bound):
            raise self.fail(key, f"holds a value beyond +-{bound:g}")
        if positive and not np.all(result > 0):
            raise self.fail(key, "holds a value that is not positive")
        return result

    def ints(self, key: str, shape: tuple[int, ...], low: int, high: int) -> np.ndarray:
        array = self._array(key, shape)
        if array.size and array.dtype.kind != "i":
            raise self.fail(key, "holds values that are not integers")
        result = array.astype(np.int64)
        if result.size and (result.min() < low or result.max() > high):
            raise self.fail(key, f"holds a value outside [{low}, {high}]")
        return result

    def _array(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        value = self.get(key)
        if not isinstance(value, list):
            raise self.fail(key, f"is not a list (expected shape {shape})")
        if not _all_scalars(value, len(shape)):
            raise self.fail(key, f"is not a regular array of numbers of shape {shape}")
        try:
            array = np.asarray(value)
        except ValueError:
            raise self.fail(key, f"is ragged; expected shape {shape}") from None
        if array.shape != shape:
            raise self.fail(key, f"has shape {array.shape}, expected {shape}")
        return array


def _all_scalars(value: Any, depth: int) -> bool:
    """True if ``value`` is nested lists ``depth`` deep with numbers (not bools) at the bottom."""
    if depth == 0:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, list) and all(_all_scalars(item, depth - 1) for item in value)
