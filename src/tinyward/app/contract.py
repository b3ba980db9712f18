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
    """Return the core's canonical copy of ``result`` if it satisfies ``contract`` exactly.

    The copy, not the app's map, is what may leave the device: fields in the contract's
    order, ints as ``int``, enum values as the manifest's strings, floats as their grid
    point ``min + k*step``. Otherwise the app would choose the field order (n! orders),
    the low mantissa bits within the grid tolerance, negative zero, or int-or-float in a
    float field: bits the leakage bound does not count.

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
    canonical: dict[str, object] = {}
    for spec in contract.fields:
        if spec.name not in result:
            raise ContractViolation("missing_field", f"field {spec.name!r} is missing")
        canonical[spec.name] = _check_value(spec, result[spec.name])
    return canonical


def _check_value(spec: FieldSpec, value: object) -> object:
    """Check ``value`` against ``spec``; return its canonical form (see check_result)."""
    name = spec.name
    if spec.type == "bool":
        if type(value) is not bool:
            raise ContractViolation("wrong_type", f"{name!r} must be bool, got {_kind(value)}")
        return value
    elif spec.type == "enum":
        if type(value) is not str:
            raise ContractViolation("wrong_type", f"{name!r} must be a string, got {_kind(value)}")
        if value not in spec.values:
            raise ContractViolation("out_of_range", f"{name!r} = {_show(value)} is not declared")
        return spec.values[spec.values.index(value)]
    elif spec.type == "int":
        if type(value) is not int:
            raise ContractViolation("wrong_type", f"{name!r} must be int, got {_kind(value)}")
        _check_int64(name, value)
        if not spec.min <= value <= spec.max:  # type: ignore[operator]
            raise ContractViolation(
                "out_of_range", f"{name!r} = {_show(value)} not in {spec.min}..{spec.max}"
            )
        return value
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
        # the grid point itself, computed afresh: one encoding per declared value (0.0,
        # never -0.0; no low bits of the app's choosing)
        return float(lo + round(steps) * step)  # type: ignore[operator]
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


@dataclass(frozen=True)
class ChannelBound:
    """Bits per minute through every channel an application controls, on a device that
    sends one report every ``report_interval`` seconds and publishes faults once per
    ``fault_window`` seconds (issue 12, item 3). The sum is the honest ceiling:

    - ``values``: what the results say (``bits_per_result`` x results per minute);
    - ``placement``: *which* report each result rides in, and whether there is one at
      all — the app chooses when to answer. Counted exactly: the number of ways to spread
      up to R results over S reports is sum_k C(k + S - 1, S - 1), so ``values +
      placement`` = log2(sum_k C(k + S - 1, S - 1) V^k) with V values per result;
    - ``faults``: one published fault per window, of a fixed alphabet of
      ``len(ALPHABET)`` classes, or none: log2(1 + classes) bits per window. Restarts,
      the health flag and dropped-result counts are functions of the faults and results,
      so they add nothing; report times and sizes are fixed by the shaper (measured by
      ``tinyward bench shaping``), and the application's latency and CPU use do not move
      them (its frame clock is its own thread).
    """

    values: float
    placement: float
    faults: float
    results_per_minute: int
    reports_per_minute: int
    fault_windows_per_minute: float

    @property
    def total(self) -> float:
        return self.values + self.placement + self.faults


def channel_bound(contract: Contract, *, report_interval: float, fault_window: float,
                  frames_per_minute: float | None = None, fault_classes: int = 3) -> ChannelBound:
    """The bound of :class:`ChannelBound` (bits per minute)."""
    if report_interval <= 0 or fault_window <= 0:
        raise ValueError("report_interval and fault_window must be > 0")
    rate = contract.max_results_per_minute
    if frames_per_minute is not None:  # one result per frame at most
        rate = min(rate, math.floor(frames_per_minute))
    reports = math.ceil(60.0 / report_interval)
    per_result = leakage_bits_per_result(contract)
    # log2 of sum_k C(k + S - 1, S - 1) * V^k, in logs (V^R can have thousands of digits).
    terms = [_log2_comb(k + reports - 1, reports - 1) + k * per_result for k in range(rate + 1)]
    top = max(terms)
    both = top + math.log2(sum(2.0 ** (t - top) for t in terms))
    values = per_result * rate
    windows = 60.0 / fault_window
    return ChannelBound(values=values, placement=max(0.0, both - values),
                        faults=windows * math.log2(1 + fault_classes),
                        results_per_minute=rate, reports_per_minute=reports,
                        fault_windows_per_minute=windows)


def _log2_comb(n: int, k: int) -> float:
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


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
