"""The output contract, enforced by the trusted core (sans-IO: no clock, no pipe here).

A result crosses the boundary only if it is a map with exactly the declared fields, each
of the declared type and inside its declared finite set of values, and only if fewer
than ``max_results_per_minute`` results were accepted in the last 60 seconds. Because
every field has a finite set of values, the information one result can carry is bounded:
:func:`leakage_bound` puts a number on it.

Floats are checked against their step grid as well as their range: a float field that
accepted any double in range would carry ~52 bits instead of log2(its declared values).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from tinyward.app.errors import ContractViolation
from tinyward.app.manifest import Contract, FieldSpec

WINDOW_SECONDS = 60.0
_GRID_TOLERANCE = 1e-9
#: Integers a result may hold at all (the protocol's signed 64 bits; every contract bound
#: fits). Checked before any comparison, conversion or formatting of an app's integer.
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1


def check_result(contract: Contract, result: object) -> dict[str, object]:
    """Return ``result`` if it satisfies ``contract`` exactly.

    Raises:
        ContractViolation: ``kind`` is ``not_a_map``, ``extra_field``, ``missing_field``,
            ``wrong_type`` or ``out_of_range``.
    """
    if type(result) is not dict:
        raise ContractViolation("not_a_map", f"result is {type(result).__name__}, not a map")
    names = {spec.name for spec in contract.fields}
    for key in result:
        if key not in names:
            raise ContractViolation("extra_field", f"undeclared field {_show(key)}")
    for spec in contract.fields:
        if spec.name not in result:
            raise ContractViolation("missing_field", f"field {spec.name!r} is missing")
        _check_value(spec, result[spec.name])
    return result


def _check_value(spec: FieldSpec, value: object) -> None:
    name = spec.name
    if spec.type == "bool":
        if type(value) is not bool:
            raise ContractViolation("wrong_type", f"{name!r} must be bool, got {_kind(value)}")
    elif spec.type == "enum":
        if type(value) is not str:
            raise ContractViolation("wrong_type", f"{name!r} must be a string, got {_kind(value)}")
        if value not in spec.values:
            raise ContractViolation("out_of_range", f"{name!r} = {_show(value)} is not declared")
    elif spec.type == "int":
        if type(value) is not int:
            raise ContractViolation("wrong_type", f"{name!r} must be int, got {_kind(value)}")
        _check_int64(name, value)
        if not spec.min <= value <= spec.max:  # type: ignore[operator]
            raise ContractViolation(
                "out_of_range", f"{name!r} = {_show(value)} not in {spec.min}..{spec.max}"
            )
    elif spec.type == "float":
        if type(value) not in (float, int):
            raise ContractViolation("wrong_type", f"{name!r} must be float, got {_kind(value)}")
        if type(value) is int:
            _check_int64(name, value)  # float() of a huge int raises OverflowError
        number = float(value)  # type: ignore[arg-type]
        lo, hi, step = spec.min, spec.max, spec.step
        if not math.isfinite(number) or not lo <= number <= hi:  # type: ignore[operator]
            raise ContractViolation(
                "out_of_range", f"{name!r} = {_show(value)} not in {lo}..{hi}"
            )
        steps = (number - lo) / step  # type: ignore[operator]
        if abs(steps - round(steps)) > _GRID_TOLERANCE * max(1.0, abs(steps)):
            raise ContractViolation(
                "out_of_range", f"{name!r} = {_show(value)} is not on the grid {lo} + k*{step}"
            )
    else:  # the parser only makes the four types above
        raise ValueError(f"unknown field type {spec.type!r}")


class RateLimiter:
    """Admits at most ``max_per_minute`` results in any sliding 60-second window.

    Sans-IO: the caller passes ``now`` (seconds, monotonic) on every call.
    """

    def __init__(self, max_per_minute: int) -> None:
        if max_per_minute <= 0:
            raise ValueError("max_per_minute must be > 0")
        self.max_per_minute = max_per_minute
        self._times: deque[float] = deque()

    def admit(self, now: float) -> None:
        """Count one result at ``now``.

        Raises:
            ContractViolation: ``too_frequent`` — the window already holds the maximum;
                the result is not counted.
        """
        while self._times and self._times[0] <= now - WINDOW_SECONDS:
            self._times.popleft()
        if len(self._times) >= self.max_per_minute:
            raise ContractViolation(
                "too_frequent",
                f"more than {self.max_per_minute} results in {WINDOW_SECONDS:.0f} s",
            )
        self._times.append(now)

    def reset(self) -> None:
        self._times.clear()


@dataclass(frozen=True)
class LeakageBound:
    """The most an application can emit through its contract, at its maximum rate."""

    bits_per_result: float
    results_per_minute: int
    per_field: tuple[tuple[str, int, float], ...]  # (name, distinct values, bits)

    @property
    def bits_per_minute(self) -> float:
        return self.bits_per_result * self.results_per_minute

    @property
    def bits_per_day(self) -> float:
        return self.bits_per_minute * 60 * 24


def leakage_bits_per_result(contract: Contract) -> float:
    """Σ over fields of log2(number of distinct values)."""
    return sum(math.log2(spec.cardinality) for spec in contract.fields)


def leakage_bound(contract: Contract) -> LeakageBound:
    """Bits per result, and per minute / per day at ``max_results_per_minute``."""
    per_field = tuple(
        (spec.name, spec.cardinality, math.log2(spec.cardinality)) for spec in contract.fields
    )
    return LeakageBound(
        leakage_bits_per_result(contract), contract.max_results_per_minute, per_field
    )


def _check_int64(name: str, value: int) -> None:
    if not INT_MIN <= value <= INT_MAX:
        raise ContractViolation("out_of_range", f"{name!r} is an integer outside 64 bits")


def _kind(value: object) -> str:
    return type(value).__name__


def _show(value: object, limit: int = 40) -> str:
    # The value came from the untrusted app: show a bounded prefix only, and never let
    # formatting it fail (repr of a 5,000-digit int raises ValueError).
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 (whatever the value's repr does)
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"
