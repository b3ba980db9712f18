"""Parse and validate an application manifest (``sensor.toml``).

The manifest says what the application is (name, version, entry point, model files),
what it receives (channels, sample rate, dtype, frame shape) and — the part the trusted
core enforces — what it may emit: the output contract (fields with a finite set of values
each, and a maximum rate of results).

Everything here is pure apart from :func:`load_manifest`, which reads the file and
checks that the entry module and model files exist in the manifest's folder. Every
refusal is a :class:`~tinyward.app.errors.ManifestError` naming the line and the reason.
Unknown keys are refused too: a misspelt ``max_result_per_minute`` must not silently
leave the rate unlimited.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from tinyward.app.errors import ManifestError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DTYPE_NAME = re.compile(r"(u?int|float)[0-9]{1,3}")
_TOML_POS = re.compile(r"\(at line (\d+), column \d+\)")

#: Limits on what a manifest may declare (a frame is copied through a pipe every time).
MAX_FIELDS = 32
MAX_ENUM_VALUES = 256
MAX_CHANNELS = 64
MAX_FRAME_ELEMENTS = 1 << 20
MAX_RESULTS_PER_MINUTE = 60_000
MAX_MODELS = 16
_FIELD_TYPES = ("int", "float", "enum", "bool")


@dataclass(frozen=True)
class FieldSpec:
    """One field of the output contract. ``cardinality`` is its number of distinct values."""

    name: str
    type: str
    min: float | int | None = None
    max: float | int | None = None
    step: float | None = None
    values: tuple[str, ...] = ()

    @property
    def cardinality(self) -> int:
        if self.type == "bool":
            return 2
        if self.type == "enum":
            return len(self.values)
        if self.min is None or self.max is None or (self.type == "float" and not self.step):
            raise ValueError(f"field {self.name!r}: {self.type} without min/max/step")
        if self.type == "int":
            return int(self.max) - int(self.min) + 1
        return math.floor((self.max - self.min) / self.step + 1e-9) + 1  # type: ignore[operator]


@dataclass(frozen=True)
class Contract:
    """The output contract: exact set of fields, and the maximum results per minute."""

    fields: tuple[FieldSpec, ...]
    max_results_per_minute: int

    def field(self, name: str) -> FieldSpec | None:
        for spec in self.fields:
            if spec.name == name:
                return spec
        return None


@dataclass(frozen=True)
class InputSpec:
    channels: tuple[str, ...]
    sample_rate_hz: float
    dtype: str
    frame_shape: tuple[int, int]

    @property
    def frames_per_minute(self) -> float:
        return 60.0 * self.sample_rate_hz / self.frame_shape[0]


@dataclass(frozen=True)
class Manifest:
    """A validated manifest. ``folder`` is the manifest's directory; ``models`` are absolute."""

    name: str
    version: str
    entry_module: str
    entry_callable: str
    models: tuple[Path, ...]
    folder: Path
    input: InputSpec
    contract: Contract

    @property
    def entry(self) -> str:
        return f"{self.entry_module}:{self.entry_callable}"


class _Where:
    """Finds the line of a key in the manifest text, for semantic errors."""

    def __init__(self, text: str, path: str) -> None:
        self.lines = text.splitlines()
        self.path = path

    def line(self, table: str, key: str | None = None) -> int | None:
        current = ""
        header_line = None
        pattern = re.compile(r"^\s*\"?" + re.escape(key) + r"\"?\s*=") if key else None
        for number, raw in enumerate(self.lines, start=1):
            stripped = raw.strip()
            match = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
            if match and not stripped.startswith("[["):
                current = match.group(1).replace(" ", "").replace('"', "")
                if current == table:
                    header_line = number
                continue
            if current == table and pattern is not None and pattern.match(raw):
                return number
        if header_line is None and key is not None:
            # The key may be a sub-table written as its own header ([output.fields]).
            return self.line(f"{table}.{key}" if table else key)
        return header_line

    def error(self, table: str, key: str | None, reason: str) -> ManifestError:
        return ManifestError(self.path, self.line(table, key), reason)


def parse_manifest(text: str, folder: Path, path: str = "sensor.toml") -> Manifest:
    """Parse manifest ``text`` whose files live in ``folder``; no file is read.

    Raises:
        ManifestError: the text is not TOML, or a key is missing, unknown, of the wrong
            type or out of range, or the contract is unsatisfiable.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = _TOML_POS.search(str(error))
        line = int(match.group(1)) if match else None
        reason = _TOML_POS.sub("", str(error)).strip()
        raise ManifestError(path, line, f"not valid TOML: {reason}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ManifestError(
            path, None, "not valid TOML: arrays or tables nested too deeply"
        ) from None
    where = _Where(text, path)
    _only_keys(where, "", doc, {"app", "input", "output"})
    app = _table(where, doc, "app")
    inp = _table(where, doc, "input")
    out = _table(where, doc, "output")

    _only_keys(where, "app", app, {"name", "version", "entry", "models"})
    name = _string(where, "app", app, "name")
    if not _NAME.match(name):
        raise where.error("app", "name", f"app.name {name!r} must be 1-64 letters, digits, _ . -")
    version = _string(where, "app", app, "version")
    if not version or len(version) > 64:
        raise where.error("app", "version", "app.version must be 1-64 characters")
    entry = _string(where, "app", app, "entry")
    module, sep, attr = entry.partition(":")
    if not sep or not all(_IDENT.match(p) for p in module.split(".")) or not _IDENT.match(attr):
        raise where.error(
            "app", "entry", f"app.entry {entry!r} must be 'module:callable' (Python identifiers)"
        )
    models_raw = app.get("models", [])
    if not isinstance(models_raw, list) or not all(isinstance(m, str) for m in models_raw):
        raise where.error("app", "models", "app.models must be a list of file names")
    if len(models_raw) > MAX_MODELS:
        raise where.error("app", "models", f"app.models lists more than {MAX_MODELS} files")
    models = []
    for model in models_raw:
        relative = Path(model)
        if not model or relative.is_absolute() or ".." in relative.parts:
            raise where.error(
                "app", "models", f"model {model!r} must be a path inside the manifest's folder"
            )
        models.append(folder / relative)

    input_spec = _parse_input(where, inp)
    contract = _parse_output(where, out)
    return Manifest(
        name=name,
        version=version,
        entry_module=module,
        entry_callable=attr,
        models=tuple(models),
        folder=folder,
        input=input_spec,
        contract=contract,
    )


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate the manifest at ``path``, and check its files exist.

    Raises:
        ManifestError: unreadable, invalid (see :func:`parse_manifest`), the entry module
            is not in the manifest's folder, or a model file is missing or escapes it.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ManifestError(str(path), None, f"cannot read: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ManifestError(str(path), line, "not UTF-8 text") from None
    folder = path.resolve().parent
    manifest = parse_manifest(text, folder, str(path))
    where = _Where(text, str(path))
    top = manifest.entry_module.split(".")[0]
    if not ((folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file()):
        raise where.error(
            "app", "entry", f"entry module {top!r} not found in {folder} ({top}.py or {top}/)"
        )
    for model in manifest.models:
        if not model.is_file():
            raise where.error("app", "models", f"model file {model} does not exist")
        if not model.resolve().is_relative_to(folder):
            raise where.error("app", "models", f"model file {model} links outside {folder}")
    return manifest


def _parse_input(where: _Where, inp: dict[str, Any]) -> InputSpec:
    _only_keys(where, "input", inp, {"channels", "sample_rate_hz", "dtype", "frame_shape"})
    channels = inp.get("channels")
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(c, str) and c for c in channels)
    ):
        raise where.error("input", "channels", "input.channels must be a non-empty list of names")
    if len(set(channels)) != len(channels) or len(channels) > MAX_CHANNELS:
        raise where.error(
            "input", "channels", f"input.channels must be unique and at most {MAX_CHANNELS}"
        )
    rate = inp.get("sample_rate_hz")
    if not _is_number(rate) or not math.isfinite(rate) or rate <= 0:
        raise where.error("input", "sample_rate_hz", "input.sample_rate_hz must be a number > 0")
    dtype = _string(where, "input", inp, "dtype")
    kind = ""
    # Only names shaped like int16, uint8 or float32 reach numpy: its dtype parser runs
    # ast.literal_eval on parts of other strings and fails in ways no list of exception
    # types covers (ValueError, SyntaxError ... found by tests/fuzz/fuzz_manifest.py).
    if _DTYPE_NAME.fullmatch(dtype):
        try:
            kind = np.dtype(dtype).kind
        except TypeError:  # e.g. int7
            kind = ""
    if kind not in "iuf" or not kind or dtype != np.dtype(dtype).name:
        raise where.error(
            "input", "dtype", f"input.dtype {dtype!r} is not a numeric numpy dtype name (int16 …)"
        )
    shape = inp.get("frame_shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(n) is int and n > 0 for n in shape)
    ):
        raise where.error(
            "input", "frame_shape", "input.frame_shape must be [samples, channels], both > 0"
        )
    if shape[1] != len(channels):
        raise where.error(
            "input",
            "frame_shape",
            f"input.frame_shape has {shape[1]} channels but input.channels lists {len(channels)}",
        )
    if shape[0] * shape[1] > MAX_FRAME_ELEMENTS:
        raise where.error(
            "input", "frame_shape", f"a frame may hold at most {MAX_FRAME_ELEMENTS} values"
        )
    return InputSpec(tuple(channels), float(rate), dtype, (shape[0], shape[1]))


def _parse_output(where: _Where, out: dict[str, Any]) -> Contract:
    _only_keys(where, "output", out, {"max_results_per_minute", "fields"})
    rate = out.get("max_results_per_minute")
    if type(rate) is not int:
        raise where.error(
            "output", "max_results_per_minute", "output.max_results_per_minute must be an integer"
        )
    if rate <= 0:
        raise where.error(
            "output",
            "max_results_per_minute",
            f"output.max_results_per_minute = {rate} is unsatisfiable: the app could never emit",
        )
    if rate > MAX_RESULTS_PER_MINUTE:
        raise where.error(
            "output",
            "max_results_per_minute",
            f"output.max_results_per_minute may be at most {MAX_RESULTS_PER_MINUTE}",
        )
    fields_raw = out.get("fields")
    if not isinstance(fields_raw, dict):
        raise where.error("output", "fields", "missing [output.fields] table")
    if not fields_raw:
        raise where.error("output.fields", None, "[output.fields] declares no field")
    if len(fields_raw) > MAX_FIELDS:
        raise where.error("output.fields", None, f"at most {MAX_FIELDS} output fields")
    fields = tuple(_parse_field(where, name, spec) for name, spec in fields_raw.items())
    return Contract(fields, rate)


def _parse_field(where: _Where, name: str, spec: object) -> FieldSpec:
    def fail(reason: str) -> ManifestError:
        return ManifestError(
            where.path, where.line("output.fields", name), f"field {name!r}: {reason}"
        )

    if not _IDENT.match(name):
        raise fail("field names must be Python identifiers")
    if not isinstance(spec, dict):
        raise fail("must be a table such as { type = \"int\", min = 0, max = 9 }")
    kind = spec.get("type")
    if kind not in _FIELD_TYPES:
        raise fail(f"unknown type {kind!r} (one of {', '.join(_FIELD_TYPES)})")
    allowed = {
        "int": {"type", "min", "max"},
        "float": {"type", "min", "max", "step"},
        "enum": {"type", "values"},
        "bool": {"type"},
    }[kind]
    extra = sorted(set(spec) - allowed)
    if extra:
        raise fail(f"unknown key(s) {', '.join(extra)} for type {kind}")
    if kind == "bool":
        return FieldSpec(name, "bool")
    if kind == "enum":
        values = spec.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise fail("enum needs values = [\"a\", \"b\", …] (strings)")
        if not values:
            raise fail("enum has no values: the field could never be filled")
        if len(set(values)) != len(values):
            raise fail("enum values must be unique")
        if len(values) > MAX_ENUM_VALUES:
            raise fail(f"enum may have at most {MAX_ENUM_VALUES} values")
        return FieldSpec(name, "enum", values=tuple(values))
    lo, hi = spec.get("min"), spec.get("max")
    if kind == "int":
        if type(lo) is not int or type(hi) is not int:
            raise fail("int needs integer min and max")
        if lo > hi:
            raise fail(f"min {lo} > max {hi}: no value can satisfy it")
        if hi - lo >= 2**63:
            raise fail("int range is too wide (more than 2^63 values)")
        return FieldSpec(name, "int", min=lo, max=hi)
    step = spec.get("step")
    if step is None:
        raise fail("float needs a step, so that its set of values is finite")
    for label, value in (("min", lo), ("max", hi), ("step", step)):
        if not _is_number(value) or not math.isfinite(value):
            raise fail(f"float {label} must be a finite number")
    lo, hi, step = float(lo), float(hi), float(step)  # type: ignore[arg-type]  # checked above
    if lo > hi:
        raise fail(f"min {lo} > max {hi}: no value can satisfy it")
    if step <= 0:
        raise fail(f"step {step} must be > 0")
    if (hi - lo) / step >= 2**53:
        raise fail("float range / step gives more than 2^53 values")
    return FieldSpec(name, "float", min=lo, max=hi, step=step)


def _is_number(value: object) -> TypeGuard[int | float]:
    return type(value) in (int, float)


def _table(where: _Where, doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.get(name)
    if not isinstance(table, dict):
        raise ManifestError(where.path, where.line(name), f"missing [{name}] table")
    return table


def _string(where: _Where, table: str, doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise where.error(table, key, f"{table}.{key} must be a string")
    return value


def _only_keys(where: _Where, table: str, doc: dict[str, Any], allowed: set[str]) -> None:
    for key in doc:
        if key not in allowed:
            label = f"{table}.{key}" if table else key
            raise where.error(
                table, key, f"unknown key {label!r} (allowed: {', '.join(sorted(allowed))})"
            )
