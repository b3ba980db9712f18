"""The sensor window features of :mod:`.sensorfeatures` as one C99 header, trained state included.

:func:`export_sensorfeatures_c` writes ``<prefix>.h``: one header (emlearn style), no
dynamic allocation, no I/O. It holds the fitted scales as ``static const`` tables, the
stream state a trained extractor left behind (replay history, pending samples, previous
level, slow baselines, local scales, CUSUMs) as initial values, a state struct sized at
compile time for the model's channels, and the feature and channel names. Firmware calls
``<prefix>_init`` once and ``<prefix>_push`` with every sample row; every ``step`` rows it
gets one feature vector, the vector the Python extractor gives for the same rows after
``fit``.

Arithmetic. The C uses ``double`` and a fixed operation order: sums run sequentially
(first index first), the cross-channel fit is a plain dot product (no fused
multiply-add: compile with ``-ffp-contract=off``, as C99 mode does), and ``log``,
``log1p`` and ``sqrt`` come from libm. numpy does not promise an order (its reductions
sum pairwise, its matrix product is OpenBLAS with fused multiply-adds, and on AVX-512
hosts its ``log``/``log1p`` are its own SIMD code, which differs from glibc's in the last
bit), so the C cannot be bit-exact with the numpy extractor. :class:`SensorReference`
is the Python reference the C is bit-exact with: the same operations in the same order,
with Python's libm ``math.log``/``math.log1p``. It agrees with
:class:`~tinyward.detect.sensorfeatures.SensorFeatureExtractor` to rounding
(tests/detect/test_sensorfeatures_c.py states the bound) and shares its trained state.

What is not implemented is refused (:class:`SensorExportRefused`): a configuration field,
a saved-state field, or a feature list the generator does not know, so a model never
runs on the device with features it was not trained on. Each feature family maps to its
C expressions in ``_FAMILY_OUTPUTS`` (keyed like ``sensorfeatures.FAMILIES``); a new
family of the Python extractor needs an entry there and its arithmetic in the header and
in :class:`SensorReference`. Both the v1 extractor (fixed floors) and the v2 one
(resolution floors, yardstick, z/slope/step/rough families) are implemented; which one is told
by the model's own state.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyward.detect._c_harness import HOST_CFLAGS
from tinyward.detect.errors import DetectError, DetectMisuse
from tinyward.detect.export_c import check_prefix
from tinyward.detect.sensorfeatures import (
    _CUSUM_CAP,
    LAGZ_GAP,
    LAGZ_REACH,
    SensorFeatureExtractor,
    _spikiness,
    sensor_extractor_to_doc,
)


class SensorExportRefused(DetectError):
    """The sensor feature extractor uses something the C export does not implement."""


# Configuration fields the C implements, each with a check of the value (None: any
# value the Python config accepts). A field added to SensorFeatureConfig is refused
# until it is listed here and implemented.
def _bounded_history(value: object) -> str | None:
    # Python keeps the WHOLE stream when history is 0 (``a[-0:]`` is all of ``a``):
    # unbounded memory, which a device cannot have.
    return "history=0 keeps the whole stream; the C needs a bound" if value == 0 else None


def _known_families(value: object) -> str | None:
    unknown = [f for f in value if f not in _FAMILY_OUTPUTS] if isinstance(value, tuple) else []
    return f"feature families {', '.join(unknown)} are not implemented" if unknown else None


_CONFIG_FIELDS: dict[str, Callable[[object], str | None]] = {
    "window": lambda v: None,
    "step": lambda v: None,
    "history": _bounded_history,
    "min_replay_lag": lambda v: None,
    "baseline_halflife": lambda v: None,
    "per_channel": lambda v: None,
    "families": _known_families,
    "yardstick_halflife": lambda v: None,
    "hold_halflife": lambda v: None,
    "trend_halflife": lambda v: None,
    "raw_rows": lambda v: (
        "the raw-row model (each row standardised) has no C export yet" if v else None
    ),
}

# Keys of sensor_extractor_to_doc the C carries (parameters and stream state); the
# second set only in the v2 extractor (floors from the data's resolution, z families).
_STATE_KEYS = frozenset({
    "channels", "config", "mean", "std", "coef", "intercept", "residual_std", "noise_floor",
    "spike_scale", "window_std", "shift_center", "shift_scale", "spike_threshold",
    "channel_center", "channel_scale", "history", "pending", "cusum", "prev_level",
    "baseline", "local",
})
_STATE_KEYS_V2 = frozenset({
    "quantum", "repeat_high", "z_center", "z_scale", "zspike_threshold", "slope_center",
    "slope_scale", "step_threshold", "yard_init", "zcusum", "slope_cusum", "yard", "slope",
    "trend", "hold", "step_hold", "yard_n", "rough_center", "rough_scale", "rough_init",
    "rough_ref", "rough_n", "lagz_center", "lagz_scale", "lagz_tail",
})


# ----------------------------------------------------------------------------- families
# What each feature is in C, by name: an expression over the window pass's results
# (scalars, and the per-channel rows DEV0, SPREAD, DEV1 of the work area). Output order
# is the extractor's own feature_names, so a family switched off or reordered in Python
# is followed; a name not listed here is refused. Families of the v2 extractor
# (tinyward.detect.sensorfeatures.FAMILIES) map to the names in the comment.
_FAMILY_OUTPUTS: dict[str, dict[str, str]] = {
    "level": {"level_dev_max": "log1p(g0)"},
    "spread": {"spread_max": "log1p(g1)"},
    "residual": {"residual_dev_max": "log1p(g2)"},
    "stuck": {"stuck": "stuck"},
    "replay": {"replay": "replay"},
    "spike": {"spike": "log1p(spike)"},
    "noise": {"noise_floor": "noise"},
    "jump": {"level_jump": "jump"},
    "shift": {"shift_max": "log1p(shift_max)"},
    "cusum": {"shift_cusum": "log1p(level_cusum)", "residual_cusum": "log1p(residual_cusum)"},
    "spike_local": {"spike_local": "log1p(spike_local)"},
    "zlevel": {"zlevel_max": "log1p(zlevel)"},
    "zresid": {"zresid_max": "log1p(zresid)"},
    "zcusum": {"zlevel_cusum": "log1p(zlevel_cusum)", "zresid_cusum": "log1p(zresid_cusum)"},
    "zspike": {"zspike_hold": "log1p(st->hold)"},
    "zslope": {"zslope_max": "log1p(zslope)", "zslope_cusum": "log1p(zslope_cusum)"},
    "zstep": {"zstep_hold": "log1p(st->step_hold)"},
    "zrough": {"zrough_max": "log1p(zrough)"},
    "lagz": {"lagz_alarm": "lagz"},
}
_V2_ONLY = ("zlevel", "zresid", "zcusum", "zspike", "zslope", "zstep", "zrough", "lagz")
_PER_CHANNEL = {"level_dev": "DEV0", "spread": "SPREAD", "residual_dev": "DEV1"}


def _output_expression(name: str, v2: bool) -> str | None:
    for family, outputs in _FAMILY_OUTPUTS.items():
        if name in outputs and (v2 or family not in _V2_ONLY):
            return outputs[name]
    match = re.fullmatch(r"(level_dev|spread|residual_dev)_(\d+)", name)
    if match:
        return f"{_PER_CHANNEL[match.group(1)]}[{int(match.group(2))}]"
    return None


def _is_v2(extractor: SensorFeatureExtractor) -> bool:
    """The v2 extractor: per-channel floors from the data's resolution (``quantum``) and
    the z families; v1 has fixed floors (1e-6, 1e-9)."""
    return hasattr(extractor, "quantum")


def check_exportable(extractor: SensorFeatureExtractor) -> None:
    """Refuse an extractor the C export would not reproduce.

    Raises:
        SensorExportRefused: unfitted, an unknown or unsupported configuration value, a
            state field the C does not carry, or features other than the C's.
    """
    if not getattr(extractor, "_fitted", False):
        raise SensorExportRefused("the sensor feature extractor is not fitted")
    config = extractor.config
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        check = _CONFIG_FIELDS.get(field.name)
        if check is None:
            raise SensorExportRefused(
                f"sensor feature setting {field.name}={value!r} is not implemented by the C "
                "export (tinyward/detect/sensorfeatures_c.py)"
            )
        problem = check(value)
        if problem is not None:
            raise SensorExportRefused(f"the C export cannot run this model: {problem}")
    v2 = _is_v2(extractor)
    # The trained rows go into a ring of history + window rows: a saved state with more
    # (a hostile or inconsistent model file) would overflow it on the device.
    if len(extractor._history) > config.history or len(extractor._pending) >= config.window:
        raise SensorExportRefused(
            f"inconsistent sensor feature state: {len(extractor._history)} history rows "
            f"(at most {config.history}) and {len(extractor._pending)} pending rows (fewer "
            f"than the window, {config.window})"
        )
    if v2 and config.step > config.history:
        # the yardstick is fed the rows between window starts from the ring
        raise SensorExportRefused(
            f"the C export cannot run this model: step {config.step} > history {config.history}"
        )
    known = _STATE_KEYS | (_STATE_KEYS_V2 if v2 else frozenset())
    unknown = sorted(set(sensor_extractor_to_doc(extractor)) - known)
    if unknown:
        raise SensorExportRefused(
            f"sensor feature state {', '.join(unknown)} is not carried by the C export"
        )
    missing = [n for n in extractor.feature_names if _output_expression(n, v2) is None]
    if missing:
        raise SensorExportRefused(
            "the extractor's features are not the ones the C export computes "
            f"(not implemented: {', '.join(missing[:8])})"
        )


# ----------------------------------------------------------------------------- sizes
def state_bytes(channels: int, window: int, history: int, *, v2: bool = False) -> int:
    """Bytes of ``<prefix>_state`` (8-byte doubles, 4-byte counters, no padding on
    x86-64 or ARM EABI): ``8 c (history + window + 18) + 16``, and for the v2 extractor
    ``8 c (history + window + 37) + 56``.

    The ring of standardised samples (history + window rows) is most of it; the 18 rows
    of c doubles are the previous level (1), slow baselines (2), local scales (3),
    CUSUMs (4) and the per-window work area (8). v2 adds the yardstick (4) and its trend
    (2), its CUSUMs (4), the slope baseline (1) and CUSUMs (2), 5 more work rows, two
    held doubles, the yardstick's sample count (a double) and two counters; then zrough's
    reference (1) and its window count (a double)."""
    if v2:
        return 8 * channels * (history + window + 37) + 56
    return 8 * channels * (history + window + 18) + 16


def ops_per_window(channels: int, window: int, history: int, min_replay_lag: int) -> int:
    """Abs-difference-and-add steps of the replay search per window (the dominant cost):
    ``(history - min_replay_lag + 1) * window * channels`` once the history is full."""
    return max(0, history - min_replay_lag + 1) * window * channels


# ----------------------------------------------------------------------------- rendering
def _hex(value: float) -> str:
    # C99 hexadecimal floating constants are exact: the C reads the very double.
    return float(value).hex()


def _table(values: np.ndarray, indent: str = "    ", per_line: int = 4) -> str:
    flat = [_hex(v) for v in np.asarray(values, dtype=np.float64).ravel()]
    lines = [", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    return (",\n" + indent).join(lines) if lines else "0"


def _rows(values: np.ndarray) -> str:
    return ",\n".join("    {" + _table(row, "     ", 4) + "}" for row in np.atleast_2d(values))


def _c_string(text: str) -> str:
    # Every byte outside plain printable ASCII (and ", \ and ?, which starts trigraphs)
    # as a 3-digit octal escape: a hostile CSV header cannot end the literal. "@" too:
    # the header is filled by replacing @KEY@ in turn, after the names are pasted.
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in '"\\?@':
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _comment_text(text: str) -> str:
    # Inside a /* */ comment: nothing that could close it or splice lines.
    return re.sub(r"[^A-Za-z0-9 _.,:+()\[\]#%=-]", "_", text)[:60]


def _trained_ring(extractor: SensorFeatureExtractor) -> np.ndarray:
    return np.vstack([extractor._history, extractor._pending])


def _profile(e: SensorFeatureExtractor) -> dict[str, np.ndarray | float]:
    """The floors and derived tables of the extractor's version, computed exactly as its
    Python computes them (numpy, once, on the host) so the C reads the very doubles."""
    cfg = e.config
    c = len(e.channels)
    if not _is_v2(e):
        tiny = np.full(c, 1e-6)
        return {"SPREAD_ADD": tiny, "SPREAD_DEN": e.window_std, "NOISE_ADD": tiny,
                "NOISE_DEN": e.noise_floor, "LOCAL_ADD": tiny,
                "NFLOOR_MEAN": float(e.noise_floor.mean())}
    v2: Any = e  # the v2 extractor's attributes (absent from v1's class)
    q = v2.quantum
    cfg2: Any = cfg
    w = cfg.window
    t = np.arange(w) - (w - 1) / 2.0
    a = 1.0 - 2.0 ** (-1.0 / cfg2.yardstick_halflife)
    n = getattr(cfg, "trend_halflife", 0)
    beta = 1.0 - 2.0 ** (-1.0 / n) if n else 0.0
    return {
        "SPREAD_ADD": q, "SPREAD_DEN": e.window_std + q, "NOISE_ADD": q,
        "NOISE_DEN": e.noise_floor + q, "LOCAL_ADD": q,
        "NFLOOR_MEAN": float(np.mean(e.noise_floor + v2.quantum)),
        "STUCK_THR": 0.5 * np.sqrt(12.0) * q, "REPEAT_HIGH": v2.repeat_high,
        "HEADROOM": np.maximum(1.0 - v2.repeat_high, 1.0 / (w - 1)), "Q2": q * q,
        "ZC": v2.z_center, "ZS": v2.z_scale, "ZSPIKE_THR": v2.zspike_threshold,
        "SLOPE_C": v2.slope_center, "SLOPE_S": v2.slope_scale, "STEP_THR": v2.step_threshold,
        "YARD_INIT": v2.yard_init, "T": t, "TT": float(t @ t), "YARD_A_MIN": a,
        "BETA": beta,
        "DECAY": 2.0 ** (-1.0 / cfg2.hold_halflife),
        "ROUGH_C": getattr(e, "rough_center", np.zeros(c)),
        "ROUGH_S": getattr(e, "rough_scale", np.ones(c)),
        "ROUGH_INIT": getattr(e, "rough_init", np.ones(c)),
        "Q": q,
        "LAGZ_C": getattr(e, "lagz_center", np.zeros(c)),
        "LAGZ_S": getattr(e, "lagz_scale", np.ones(c)),
        "LAGZ_T": getattr(e, "lagz_tail", np.ones(c)),
    }


def _v2_tables(p: str, P: str, e: Any, f: dict[str, np.ndarray | float]) -> str:
    c = len(e.channels)
    yard = e._yard if e._yard is not None else np.zeros((4, c))
    slope = e._slope if e._slope is not None else np.zeros(c)
    rough_ref = getattr(e, "_rough_ref", None)
    rough_ref = rough_ref if rough_ref is not None else np.zeros(c)

    def arr(name: str, value: object, rows: int = 0) -> str:
        v = np.asarray(value, dtype=np.float64)
        if rows:
            return (f"static const double {p}_{name}[{rows}][{P}_N_CHANNELS] = {{\n"
                    f"{_rows(v)}\n}};\n")
        return f"static const double {p}_{name}[{P}_N_CHANNELS] = {{\n    {_table(v)}\n}};\n"

    return (
        "/* v2 extractor: floors from the data's resolution, yardstick, slope, step. */\n"
        + arr("stuck_threshold", f["STUCK_THR"]) + arr("repeat_high", f["REPEAT_HIGH"])
        + arr("headroom", f["HEADROOM"]) + arr("quantum_sq", f["Q2"])
        + arr("z_center", f["ZC"], 2) + arr("z_scale", f["ZS"], 2)
        + arr("zspike_threshold", f["ZSPIKE_THR"]) + arr("slope_center", f["SLOPE_C"])
        + arr("slope_scale", f["SLOPE_S"]) + arr("step_threshold", f["STEP_THR"])
        + arr("yard_init", f["YARD_INIT"], 2)
        + arr("rough_center", f["ROUGH_C"]) + arr("rough_scale", f["ROUGH_S"])
        + arr("rough_init", f["ROUGH_INIT"])
        + (arr("quantum", f["Q"]) + arr("lagz_center", f["LAGZ_C"])
           + arr("lagz_scale", f["LAGZ_S"]) + arr("lagz_tail", f["LAGZ_T"])
           if "lagz" in e.config.families else "")
        + f"static const double {p}_t[{P}_WINDOW] = {{\n    {_table(np.asarray(f['T']))}\n}};\n"
        + f"static const double {p}_tt = {_hex(float(f['TT']))};\n"
        + f"static const double {p}_yard_a_min = {_hex(float(f['YARD_A_MIN']))};\n"
        + f"static const double {p}_beta = {_hex(float(f['BETA']))};\n"
        + f"static const double {p}_decay = {_hex(float(f['DECAY']))};\n"
        + f"static const double {p}_w_plus_1 = {_hex(float(e.config.window + 1))};\n"
        + arr("trained_yard", yard, 4)
        + arr("trained_trend", getattr(e, "_trend", np.zeros((2, c))), 2)
        + arr("trained_zcusum", e._zcusum, 4) + arr("trained_slope", slope)
        + arr("trained_slope_cusum", e._slope_cusum, 2)
        + f"static const double {p}_trained_hold = {_hex(float(e._hold))};\n"
        + f"static const double {p}_trained_step_hold = {_hex(float(e._step_hold))};\n"
        + f"static const double {p}_trained_yard_n = {_hex(float(e._yard_n))};\n"
        + arr("trained_rough_ref", rough_ref)
        + f"static const double {p}_trained_rough_n = {_hex(float(getattr(e, '_rough_n', 0.0)))};\n"
    )


def render_sensorfeatures_h(extractor: SensorFeatureExtractor, prefix: str = "tw_sf") -> str:
    """Return the header text for a fitted ``extractor``.

    Raises:
        DetectMisuse: a prefix that is not a safe C identifier.
        SensorExportRefused: see :func:`check_exportable`.
    """
    p = check_prefix(prefix)
    P = p.upper()
    check_exportable(extractor)
    e = extractor
    cfg = e.config
    c = len(e.channels)
    v2 = _is_v2(e)
    names = e.feature_names
    n_pending = len(e._pending)
    alpha = 1.0 - 2.0 ** (-1.0 / cfg.baseline_halflife)
    flags = (
        (1 if e._prev_level is not None else 0)
        | (2 if e._baseline is not None else 0)
        | (4 if e._local is not None else 0)
        | (8 if v2 and getattr(e, "_yard", None) is not None else 0)
        | (16 if v2 and getattr(e, "_slope", None) is not None else 0)
        | (32 if v2 and getattr(e, "_rough_ref", None) is not None else 0)
    )
    zero_c = np.zeros(c)
    prev = e._prev_level if e._prev_level is not None else zero_c
    base = e._baseline if e._baseline is not None else np.zeros((2, c))
    local = e._local if e._local is not None else np.zeros((3, c))
    size = state_bytes(c, cfg.window, cfg.history, v2=v2)
    feature_list = "\n".join(f" *   {i:3d} {_comment_text(n)}" for i, n in enumerate(names))
    channel_list = "\n".join(f" *   {i:3d} {_comment_text(n)}" for i, n in enumerate(e.channels))
    outputs = "".join(
        f"    out[{i}] = {_output_expression(n, v2)}; /* {_comment_text(n)} */\n"
        for i, n in enumerate(names)
    )
    f = _profile(e)
    values = {
        "p": p,
        "P": P,
        "C": c,
        "W": cfg.window,
        "STEP": cfg.step,
        "H": cfg.history,
        "LAG": cfg.min_replay_lag,
        "NF": len(names),
        "V2": 1 if v2 else 0,
        "TREND": 1 if v2 and int(getattr(cfg, "trend_halflife", 0)) else 0,
        "LAGZ_ON": 1 if v2 and "lagz" in cfg.families else 0,
        "LAGZ_GAP": LAGZ_GAP,
        "LAGZ_REACH": LAGZ_REACH,
        "SIZE": size,
        "FORMULA": "8 * C * (HISTORY + WINDOW + 37) + 56" if v2 else
                   "8 * C * (HISTORY + WINDOW + 18) + 16",
        "OPS": ops_per_window(c, cfg.window, cfg.history, cfg.min_replay_lag),
        "N_HIST": len(e._history),
        "N_PENDING": n_pending,
        "TO_NEXT": cfg.window - n_pending,
        "FLAGS": flags,
        "FEATURE_LIST": feature_list,
        "CHANNEL_LIST": channel_list,
        "FEATURE_NAMES": ",\n    ".join(_c_string(n) for n in names),
        "CHANNEL_NAMES": ",\n    ".join(_c_string(n) for n in e.channels),
        "MEAN": _table(e.mean),
        "STD": _table(e.std),
        "COEF": _rows(e.coef),
        "INTERCEPT": _table(e.intercept),
        "RSTD": _table(e.residual_std),
        "SPREAD_ADD": _table(np.asarray(f["SPREAD_ADD"])),
        "SPREAD_DEN": _table(np.asarray(f["SPREAD_DEN"])),
        "NOISE_ADD": _table(np.asarray(f["NOISE_ADD"])),
        "NOISE_DEN": _table(np.asarray(f["NOISE_DEN"])),
        "LOCAL_ADD": _table(np.asarray(f["LOCAL_ADD"])),
        "NFLOOR_MEAN": _hex(float(f["NFLOOR_MEAN"])),  # as Python computes it
        "SSCALE": _table(e.spike_scale),
        "SC": _rows(e.shift_center),
        "SS": _rows(e.shift_scale),
        "STHR": _table(e.spike_threshold),
        "CC": _rows(e.channel_center),
        "CS": _rows(e.channel_scale),
        "ALPHA": _hex(alpha),
        "KEEP": _hex(1.0 - alpha),
        "CAP": _hex(_CUSUM_CAP),
        "HIST_INIT": _rows(e._history) if len(e._history) else "    {0}",
        "PEND_INIT": _rows(e._pending) if n_pending else "    {0}",
        "PREV": _table(prev),
        "BASE": _rows(base),
        "LOCAL": _rows(local),
        "CUSUM": _rows(e._cusum),
        "V2_TABLES": _v2_tables(p, P, e, f) if v2 else "",
        "OUTPUTS": outputs,
    }
    text = _HEADER
    for key in sorted(values, key=len, reverse=True):
        text = text.replace("@" + key + "@", str(values[key]))
    return text


_HEADER = """\
/* @p@.h: tinyward's sensor window features with their trained state (generated; do not edit).
 *
 * One C99 header: no malloc, no I/O, no global state. Include it in ONE .c file (its
 * functions are static inline unless @P@_API is defined, e.g. as empty for external
 * linkage).
 *
 *   static @p@_state st;                  // @SIZE@ bytes (see below)
 *   @p@_init(&st);                        // the stream state training left behind
 *   for each sample row x[@P@_N_CHANNELS] (channels in @p@_channel_names order):
 *     double f[@P@_N_FEATURES];
 *     if (@p@_push(&st, x, f) == @P@_READY) ... quantise f and score it ...
 *
 * A window of @P@_WINDOW rows completes every @P@_STEP rows. The features equal the
 * Python reference (tinyward.detect.sensorfeatures_c.SensorReference) bit for bit when
 * compiled against the libm Python uses (log, log1p, sqrt) and without fused
 * multiply-add (-ffp-contract=off; -std=c99 implies it in GCC).
 *
 * State: @FORMULA@ bytes = @SIZE@ for C = @C@; the replay ring
 * (HISTORY + WINDOW rows of C doubles) is most of it. The replay search costs
 * (HISTORY - MIN_REPLAY_LAG + 1) * WINDOW * C abs-difference-adds per window = @OPS@.
 * Define @P@_NO_TRAINED_HISTORY to start with an empty replay history (saves the
 * trained rows in flash; the replay feature then differs from Python's until
 * @P@_HISTORY rows have been seen).
 *
 * Channels (inputs), in order:
@CHANNEL_LIST@
 * Features (outputs), in order:
@FEATURE_LIST@
 */
#ifndef @P@_H
#define @P@_H
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __cplusplus
extern "C" {
#endif

#ifndef @P@_API
#define @P@_API static inline
#endif

#define @P@_N_CHANNELS @C@
#define @P@_N_FEATURES @NF@
#define @P@_WINDOW @W@
#define @P@_STEP @STEP@
#define @P@_HISTORY @H@
#define @P@_MIN_REPLAY_LAG @LAG@
#define @P@_RING (@P@_HISTORY + @P@_WINDOW)
#define @P@_V2 @V2@          /* the v2 extractor (resolution floors, z families) */
#define @P@_TREND @TREND@       /* v2 yardstick with a Holt trend */
#define @P@_LAGZ @LAGZ_ON@        /* lagz_alarm: its reference is LAGZ_REACH rows */
#define @P@_LAGZ_GAP @LAGZ_GAP@   /* ending LAGZ_GAP rows before the window */
#define @P@_LAGZ_REACH @LAGZ_REACH@
#if @P@_V2
#define @P@_WORK_ROWS 13
#else
#define @P@_WORK_ROWS 8
#endif
#define @P@_STATE_BYTES @SIZE@
#define @P@_TRAINED_HISTORY @N_HIST@
#define @P@_TRAINED_PENDING @N_PENDING@

typedef enum {
    @P@_NO_WINDOW = 0,       /* row taken; no window completed */
    @P@_READY = 1,           /* row taken; out[] holds the window's features */
    @P@_ERR_NULL = 2,        /* a NULL argument; nothing changed */
    @P@_ERR_NOT_FINITE = 3   /* a value is NaN or infinite; the row was NOT taken */
} @p@_status;

typedef struct {
    double ring[@P@_RING][@P@_N_CHANNELS]; /* standardised rows: replay history, then window */
    uint32_t head;       /* ring row the next sample goes to */
    uint32_t filled;     /* valid rows (at most @P@_RING) */
    uint32_t to_next;    /* rows until the next window completes */
    uint32_t flags;      /* set: 1 prev_level, 2 baseline, 4 local scales, 8 yardstick,
                            16 slope baseline, 32 roughness reference */
#if @P@_V2
    uint32_t unfed;      /* rows not yet fed to the yardstick (the newest ones) */
    uint32_t spare;
    double hold;         /* zspike_hold */
    double step_hold;    /* zstep_hold */
    double yard_n;       /* samples in the yardstick: its gain is max(a_min, 1 / yard_n) */
    double yard[4][@P@_N_CHANNELS];      /* EWMA mean, var of rows; mean, var of residuals */
    double trend[2][@P@_N_CHANNELS];     /* Holt trend of rows, residuals (0 when off) */
    double zcusum[4][@P@_N_CHANNELS];    /* zlevel+, zresid+, zlevel-, zresid- */
    double slope[@P@_N_CHANNELS];        /* EWMA of window slopes */
    double slope_cusum[2][@P@_N_CHANNELS];
    double rough_n;      /* windows in the roughness reference (benign's prior: one) */
    double rough_ref[@P@_N_CHANNELS];    /* zrough: reference mean |step| (+q) */
#endif
    double prev_level[@P@_N_CHANNELS];
    double baseline[2][@P@_N_CHANNELS];  /* slow baselines: level, residual mean */
    double local[3][@P@_N_CHANNELS];     /* local scales: std, residual std, mean |diff| */
    double cusum[4][@P@_N_CHANNELS];     /* level+, residual+, level-, residual- */
    double work[@P@_WORK_ROWS][@P@_N_CHANNELS]; /* per-window work area */
} @p@_state;

static const char *const @p@_feature_names[@P@_N_FEATURES] = {
    @FEATURE_NAMES@
};
static const char *const @p@_channel_names[@P@_N_CHANNELS] = {
    @CHANNEL_NAMES@
};

/* The trained rows fit the ring with room for a new one (checked at export too). */
typedef char @p@_trained_rows_fit_the_ring
    [@P@_TRAINED_HISTORY <= @P@_HISTORY && @P@_TRAINED_PENDING < @P@_WINDOW ? 1 : -1];

/* Trained parameters (exact: C99 hexadecimal constants). */
static const double @p@_mean[@P@_N_CHANNELS] = {
    @MEAN@
};
static const double @p@_std[@P@_N_CHANNELS] = {
    @STD@
};
static const double @p@_coef[@P@_N_CHANNELS][@P@_N_CHANNELS] = {
@COEF@
};
static const double @p@_intercept[@P@_N_CHANNELS] = {
    @INTERCEPT@
};
static const double @p@_residual_std[@P@_N_CHANNELS] = {
    @RSTD@
};
/* spread = log((std + spread_add) / spread_den); noise likewise; local scales + local_add */
static const double @p@_spread_add[@P@_N_CHANNELS] = {
    @SPREAD_ADD@
};
static const double @p@_spread_den[@P@_N_CHANNELS] = {
    @SPREAD_DEN@
};
static const double @p@_noise_add[@P@_N_CHANNELS] = {
    @NOISE_ADD@
};
static const double @p@_noise_den[@P@_N_CHANNELS] = {
    @NOISE_DEN@
};
static const double @p@_local_add[@P@_N_CHANNELS] = {
    @LOCAL_ADD@
};
static const double @p@_spike_scale[@P@_N_CHANNELS] = {
    @SSCALE@
};
static const double @p@_shift_center[2][@P@_N_CHANNELS] = {
@SC@
};
static const double @p@_shift_scale[2][@P@_N_CHANNELS] = {
@SS@
};
static const double @p@_spike_threshold[@P@_N_CHANNELS] = {
    @STHR@
};
static const double @p@_channel_center[3][@P@_N_CHANNELS] = {
@CC@
};
static const double @p@_channel_scale[3][@P@_N_CHANNELS] = {
@CS@
};
static const double @p@_noise_floor_mean = @NFLOOR_MEAN@;
static const double @p@_alpha = @ALPHA@;       /* 1 - 2^(-1/halflife) */
static const double @p@_keep = @KEEP@;         /* 1 - alpha */
static const double @p@_cusum_cap = @CAP@;
@V2_TABLES@
/* Trained stream state: what fit() left (replay history, then the rows not yet in a
   window; oldest first). */
#ifndef @P@_NO_TRAINED_HISTORY
static const double
    @p@_trained_history[@P@_TRAINED_HISTORY > 0 ? @P@_TRAINED_HISTORY : 1][@P@_N_CHANNELS] = {
@HIST_INIT@
};
#endif
static const double
    @p@_trained_pending[@P@_TRAINED_PENDING > 0 ? @P@_TRAINED_PENDING : 1][@P@_N_CHANNELS] = {
@PEND_INIT@
};
static const double @p@_trained_prev_level[@P@_N_CHANNELS] = {
    @PREV@
};
static const double @p@_trained_baseline[2][@P@_N_CHANNELS] = {
@BASE@
};
static const double @p@_trained_local[3][@P@_N_CHANNELS] = {
@LOCAL@
};
static const double @p@_trained_cusum[4][@P@_N_CHANNELS] = {
@CUSUM@
};

@P@_API void @p@_init(@p@_state *st);
@P@_API @p@_status @p@_push(@p@_state *st, const double x[@P@_N_CHANNELS],
                          double out[@P@_N_FEATURES]);
@P@_API const char *@p@_status_str(@p@_status status);

@P@_API void @p@_init(@p@_state *st)
{
    uint32_t rows = 0u;
    if (st == NULL) {
        return;
    }
    memset(st, 0, sizeof *st);
#ifndef @P@_NO_TRAINED_HISTORY
    if (@P@_TRAINED_HISTORY > 0) {
        memcpy(st->ring, @p@_trained_history, sizeof st->ring[0] * (size_t)@P@_TRAINED_HISTORY);
        rows = (uint32_t)@P@_TRAINED_HISTORY;
    }
#endif
    if (@P@_TRAINED_PENDING > 0) {
        memcpy(st->ring[rows], @p@_trained_pending,
               sizeof st->ring[0] * (size_t)@P@_TRAINED_PENDING);
        rows += (uint32_t)@P@_TRAINED_PENDING;
    }
    st->filled = rows;  /* fewer than RING rows: the ring has not wrapped */
    st->head = rows;
    st->to_next = @TO_NEXT@u;
    st->flags = @FLAGS@u;
    memcpy(st->prev_level, @p@_trained_prev_level, sizeof st->prev_level);
    memcpy(st->baseline, @p@_trained_baseline, sizeof st->baseline);
    memcpy(st->local, @p@_trained_local, sizeof st->local);
    memcpy(st->cusum, @p@_trained_cusum, sizeof st->cusum);
#if @P@_V2
    st->unfed = (uint32_t)@P@_TRAINED_PENDING;
    st->hold = @p@_trained_hold;
    st->step_hold = @p@_trained_step_hold;
    st->yard_n = @p@_trained_yard_n;
    memcpy(st->yard, @p@_trained_yard, sizeof st->yard);
    memcpy(st->trend, @p@_trained_trend, sizeof st->trend);
    memcpy(st->zcusum, @p@_trained_zcusum, sizeof st->zcusum);
    memcpy(st->slope, @p@_trained_slope, sizeof st->slope);
    memcpy(st->slope_cusum, @p@_trained_slope_cusum, sizeof st->slope_cusum);
    st->rough_n = @p@_trained_rough_n;
    memcpy(st->rough_ref, @p@_trained_rough_ref, sizeof st->rough_ref);
#endif
}

@P@_API const char *@p@_status_str(@p@_status status)
{
    switch (status) {
    case @P@_NO_WINDOW: return "no window yet";
    case @P@_READY: return "features ready";
    case @P@_ERR_NULL: return "null pointer";
    case @P@_ERR_NOT_FINITE: return "a value is not a finite number";
    }
    return "unknown status";
}

/* The row `back` rows before the newest (0: the newest). */
static const double *@p@_row(const @p@_state *st, uint32_t back)
{
    uint32_t i = st->head + (uint32_t)@P@_RING - 1u - back;
    if (i >= (uint32_t)@P@_RING) {
        i -= (uint32_t)@P@_RING;
    }
    return st->ring[i];
}

/* Window row t (0: oldest of the window). */
#define @P@_WIN(st, t) @p@_row((st), (uint32_t)(@P@_WINDOW - 1) - (uint32_t)(t))

/* |x[t+1] - x[t]| of channel ch in the window. */
static double @p@_absdiff(const @p@_state *st, uint32_t t, uint32_t ch)
{
    return fabs(@P@_WIN(st, t + 1u)[ch] - @P@_WIN(st, t)[ch]);
}

/* The order statistic `rank` (0-based) of the window's |first differences| of ch,
   by counting (no work buffer, no sort): exact, like numpy's partition. */
static double @p@_diff_rank(const @p@_state *st, uint32_t ch, uint32_t rank)
{
    const uint32_t n = (uint32_t)@P@_WINDOW - 1u;
    uint32_t i, j;
    for (i = 0; i < n; i++) {
        const double v = @p@_absdiff(st, i, ch);
        uint32_t less = 0, equal = 0;
        for (j = 0; j < n; j++) {
            const double u = @p@_absdiff(st, j, ch);
            if (u < v) {
                less++;
            } else if (u == v) {
                equal++;
            }
        }
        if (less <= rank && rank < less + equal) {
            return v;
        }
    }
    return 0.0; /* not reached for finite values */
}

/* Replay closeness: -log of the smallest mean |difference| between the window and any
   stretch of the history that starts at least MIN_REPLAY_LAG rows before it. */
static double @p@_replay(const @p@_state *st)
{
    const uint32_t before = st->filled - (uint32_t)@P@_WINDOW;
    const uint32_t hist = before < (uint32_t)@P@_HISTORY ? before : (uint32_t)@P@_HISTORY;
    double best = 0.0;
    uint32_t j, t, ch;
    if (hist < (uint32_t)@P@_MIN_REPLAY_LAG) {
        return 0.0;
    }
    for (j = 0; j + (uint32_t)@P@_MIN_REPLAY_LAG <= hist; j++) {
        double s = 0.0;
        for (t = 0; t < (uint32_t)@P@_WINDOW; t++) {
            const double *h = @p@_row(st, (uint32_t)@P@_WINDOW + hist - 1u - (j + t));
            const double *w = @P@_WIN(st, t);
            for (ch = 0; ch < (uint32_t)@P@_N_CHANNELS; ch++) {
                s += fabs(h[ch] - w[ch]);
            }
        }
        s = s / (double)(@P@_WINDOW * @P@_N_CHANNELS);
        if (j == 0u || s < best) {
            best = s;
        }
    }
    return -log(best / @p@_noise_floor_mean + 1e-3);
}

/* Cross-channel residual of channel ch in row r, before scaling (the yardstick's) */
static double @p@_raw_residual(const double *r, uint32_t ch)
{
    double pred = 0.0;
    uint32_t k;
    for (k = 0; k < (uint32_t)@P@_N_CHANNELS; k++) {
        pred += r[k] * @p@_coef[ch][k];
    }
    return r[ch] - (pred + @p@_intercept[ch]);
}

/* ... and in units of its benign std (the baselines' and local scales') */
static double @p@_residual(const double *r, uint32_t ch)
{
    return @p@_raw_residual(r, ch) / @p@_residual_std[ch];
}

/* One leaky two-sided Page CUSUM step: S = min(max(0, keep S + x - 1/2), cap). */
static double @p@_cusum(double s, double x)
{
    s = @p@_keep * s + x - 0.5;
    s = s > 0.0 ? s : 0.0;
    return s < @p@_cusum_cap ? s : @p@_cusum_cap;
}

#if @P@_V2
/* Feed the yardstick the rows between the last window's start and this one's, oldest
   first: EWMA (Holt when TREND) mean and variance of each channel and its residual, a
   running average while 1 / yard_n is larger than the EWMA's gain. */
static void @p@_feed(@p@_state *st)
{
    uint32_t back, ch;
    if ((st->flags & 8u) != 0u) {
        for (back = st->unfed; back > (uint32_t)@P@_WINDOW; back--) {
            const double *x = @p@_row(st, back - 1u);
            double a, keep;
            st->yard_n = st->yard_n + 1.0;
            a = 1.0 / st->yard_n;
            if (a < @p@_yard_a_min) a = @p@_yard_a_min;
            keep = 1.0 - a;
            for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
                const double value[2] = {x[ch], @p@_raw_residual(x, ch)};
                uint32_t i;
                for (i = 0; i < 2u; i++) {
                    double *mean = st->yard[2u * i], *var = st->yard[2u * i + 1u];
                    const double d = value[i] - (mean[ch] + st->trend[i][ch]);
                    mean[ch] = mean[ch] + st->trend[i][ch] + a * d;
                    st->trend[i][ch] = st->trend[i][ch] + @p@_beta * a * d;
                    var[ch] = keep * (var[ch] + a * d * d);
                }
            }
        }
    }
    st->unfed = (uint32_t)@P@_WINDOW;
}
#endif

#define LEVEL (st->work[0])
#define SD (st->work[1])
#define SPREAD (st->work[2])
#define RMEAN (st->work[3])
#define RSD (st->work[4])
#define DMEAN (st->work[5])
#define DEV0 (st->work[6])
#define DEV1 (st->work[7])
#define WVAR (st->work[8])     /* v2: window variance */
#define RAWM (st->work[9])     /* v2: raw residual mean */
#define RAWV (st->work[10])    /* v2: raw residual variance */
#define DMAX (st->work[11])    /* v2: largest |first difference| */
#define SPMAX (st->work[12])   /* v2: largest isolated excursion */

#if @P@_V2 && @P@_LAGZ
/* lagz_alarm: per channel, the window mean (level) against the mean of the LAGZ_REACH
   rows that end LAGZ_GAP rows before the window (at least a window of them; else 0), in
   their std (floor: the quantum noise); centred and scaled on benign windows and over
   the channel's own largest benign value; the largest over channels. No state: the
   reference rows are in the replay ring. */
static double @p@_lagz(const @p@_state *st, const double level[@P@_N_CHANNELS])
{
    const uint32_t before = st->filled - (uint32_t)@P@_WINDOW;
    const uint32_t hist = before < (uint32_t)@P@_HISTORY ? before : (uint32_t)@P@_HISTORY;
    uint32_t stop, begin, i, ch;
    double n, best = 0.0;
    if (hist < (uint32_t)@P@_LAGZ_GAP + (uint32_t)@P@_WINDOW) {
        return 0.0;
    }
    stop = hist - (uint32_t)@P@_LAGZ_GAP;
    begin = stop > (uint32_t)@P@_LAGZ_REACH ? stop - (uint32_t)@P@_LAGZ_REACH : 0u;
    n = (double)(stop - begin);
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        double mean = 0.0, var = 0.0, sd, v;
        for (i = begin; i < stop; i++) {
            mean += @p@_row(st, (uint32_t)@P@_WINDOW + hist - 1u - i)[ch];
        }
        mean = mean / n;
        for (i = begin; i < stop; i++) {
            const double d = @p@_row(st, (uint32_t)@P@_WINDOW + hist - 1u - i)[ch] - mean;
            var += d * d;
        }
        sd = sqrt(var / n);
        if (sd < @p@_quantum[ch]) sd = @p@_quantum[ch];
        v = fabs((level[ch] - mean) / sd - @p@_lagz_center[ch]) / @p@_lagz_scale[ch]
            / @p@_lagz_tail[ch];
        if (v > best) best = v;
    }
    return best;
}
#endif

static void @p@_window(@p@_state *st, double out[@P@_N_FEATURES])
{
    const double n_w = (double)@P@_WINDOW;
    const double n_d = (double)(@P@_WINDOW - 1);
    uint32_t t, ch;
    double stuck = 0.0, spike = 0.0, noise = 0.0, jump = 0.0, replay;
    double shift_max = 0.0, level_cusum = 0.0, residual_cusum = 0.0, spike_local = 0.0;
    double g0 = 0.0, g1 = 0.0, g2 = 0.0;
    const int have_local = (st->flags & 4u) != 0u;
#if @P@_V2
    double zlevel = 0.0, zresid = 0.0, zlevel_cusum = 0.0, zresid_cusum = 0.0;
    double zslope = 0.0, zslope_cusum = 0.0, now, zrough;
#if @P@_LAGZ
    double lagz;
#endif

    @p@_feed(st);
#endif

    /* level, spread, residual mean and std, mean |first difference|: sums run over
       the window's rows in order (the reference sums the same way) */
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        LEVEL[ch] = 0.0;
        SD[ch] = 0.0;
        RMEAN[ch] = 0.0;
        RSD[ch] = 0.0;
        DMEAN[ch] = 0.0;
#if @P@_V2
        RAWM[ch] = 0.0;
        RAWV[ch] = 0.0;
        DMAX[ch] = 0.0;
        SPMAX[ch] = 0.0;
#endif
    }
    for (t = 0; t < @P@_WINDOW; t++) {
        const double *r = @P@_WIN(st, t);
        for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
            LEVEL[ch] += r[ch];
            RMEAN[ch] += @p@_residual(r, ch);
#if @P@_V2
            RAWM[ch] += @p@_raw_residual(r, ch);
#endif
        }
    }
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        LEVEL[ch] = LEVEL[ch] / n_w;
        RMEAN[ch] = RMEAN[ch] / n_w;
#if @P@_V2
        RAWM[ch] = RAWM[ch] / n_w;
#endif
    }
    for (t = 0; t < @P@_WINDOW; t++) {
        const double *r = @P@_WIN(st, t);
        for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
            const double d = r[ch] - LEVEL[ch];
            const double e = @p@_residual(r, ch) - RMEAN[ch];
            SD[ch] += d * d;
            RSD[ch] += e * e;
#if @P@_V2
            {
                const double g = @p@_raw_residual(r, ch) - RAWM[ch];
                RAWV[ch] += g * g;
            }
#endif
        }
    }
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
#if @P@_V2
        WVAR[ch] = SD[ch] / n_w;
        RAWV[ch] = RAWV[ch] / n_w;
#endif
        SD[ch] = sqrt(SD[ch] / n_w);
        RSD[ch] = sqrt(RSD[ch] / n_w);
        SPREAD[ch] = log((SD[ch] + @p@_spread_add[ch]) / @p@_spread_den[ch]);
    }

    /* stuck: the largest fraction of (near-)repeated values; v2: its excess over
       benign's 99.9th percentile, over the headroom left */
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        double count = 0.0;
        for (t = 0; t + 1u < @P@_WINDOW; t++) {
            const double d = @p@_absdiff(st, t, ch);
            DMEAN[ch] += d;
#if @P@_V2
            if (d > DMAX[ch]) DMAX[ch] = d;
            if (d < @p@_stuck_threshold[ch]) {
                count += 1.0;
            }
#else
            if (d < 1e-9 * (1.0 + fabs(@P@_WIN(st, t + 1u)[ch]))) {
                count += 1.0;
            }
#endif
        }
        DMEAN[ch] = DMEAN[ch] / n_d;
        count = count / n_d;
#if @P@_V2
        count = count - @p@_repeat_high[ch];
        count = (count > 0.0 ? count : 0.0) / @p@_headroom[ch];
#endif
        if (count > stuck) stuck = count;
    }

    /* noise floor: median |first difference| against benign's */
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        const uint32_t n = (uint32_t)@P@_WINDOW - 1u;
        double med, v;
        if (n % 2u == 1u) {
            med = @p@_diff_rank(st, ch, n / 2u);
        } else {
            med = (@p@_diff_rank(st, ch, n / 2u - 1u) + @p@_diff_rank(st, ch, n / 2u)) / 2.0;
        }
        v = fabs(log((med + @p@_noise_add[ch]) / @p@_noise_den[ch]));
        if (v > noise) noise = v;
    }

    /* level jump since the previous window */
    if ((st->flags & 1u) != 0u) {
        for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
            const double v = fabs(LEVEL[ch] - st->prev_level[ch]);
            if (v > jump) jump = v;
        }
    }
    memcpy(st->prev_level, LEVEL, sizeof st->prev_level);
    st->flags |= 1u;

    replay = @p@_replay(st);
#if @P@_V2 && @P@_LAGZ
    lagz = @p@_lagz(st, LEVEL);
#endif

    /* deviations from the slow baselines, which then move towards this window */
    if ((st->flags & 2u) == 0u) {
        memcpy(st->baseline[0], LEVEL, sizeof st->baseline[0]);
        memcpy(st->baseline[1], RMEAN, sizeof st->baseline[1]);
        st->flags |= 2u;
    }
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        DEV0[ch] = LEVEL[ch] - st->baseline[0][ch];
        DEV1[ch] = RMEAN[ch] - st->baseline[1][ch];
        st->baseline[0][ch] = st->baseline[0][ch] + @p@_alpha * DEV0[ch];
        st->baseline[1][ch] = st->baseline[1][ch] + @p@_alpha * DEV1[ch];
    }

    /* local scales: this window's, used from the next one (a tampered window must not
       widen its own yardstick) */
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        SD[ch] = SD[ch] + @p@_local_add[ch];
        RSD[ch] = RSD[ch] + @p@_local_add[ch];
        DMEAN[ch] = DMEAN[ch] + @p@_local_add[ch];
        if (!have_local) {
            st->local[0][ch] = SD[ch];
            st->local[1][ch] = RSD[ch];
            st->local[2][ch] = DMEAN[ch];
        }
    }
    st->flags |= 4u;

    /* spikes: isolated excursions over benign's scale and over the local std */
    for (t = 0; t + 2u < @P@_WINDOW; t++) {
        const double *a = @P@_WIN(st, t);
        const double *b = @P@_WIN(st, t + 1u);
        const double *c = @P@_WIN(st, t + 2u);
        for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
            const double d0 = b[ch] - a[ch];
            const double d1 = c[ch] - b[ch];
            double v = 0.0, u;
            if (d0 * d1 < 0.0) {
                v = fabs(d0) < fabs(d1) ? fabs(d0) : fabs(d1);
            }
#if @P@_V2
            if (v > SPMAX[ch]) SPMAX[ch] = v;
#endif
            u = v / @p@_spike_scale[ch];
            if (u > spike) spike = u;
            u = v / st->local[0][ch] / @p@_spike_threshold[ch];
            if (u > spike_local) spike_local = u;
        }
    }

    /* standardised shifts, CUSUMs, and the channel furthest from benign */
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        const double x0 = (DEV0[ch] / st->local[0][ch] - @p@_shift_center[0][ch])
                          / @p@_shift_scale[0][ch];
        const double x1 = (DEV1[ch] / st->local[1][ch] - @p@_shift_center[1][ch])
                          / @p@_shift_scale[1][ch];
        double v;
        st->cusum[0][ch] = @p@_cusum(st->cusum[0][ch], x0);
        st->cusum[1][ch] = @p@_cusum(st->cusum[1][ch], x1);
        st->cusum[2][ch] = @p@_cusum(st->cusum[2][ch], -x0);
        st->cusum[3][ch] = @p@_cusum(st->cusum[3][ch], -x1);
        v = fabs(x0);
        if (v > shift_max) shift_max = v;
        v = st->cusum[0][ch] > st->cusum[2][ch] ? st->cusum[0][ch] : st->cusum[2][ch];
        if (v > level_cusum) level_cusum = v;
        v = st->cusum[1][ch] > st->cusum[3][ch] ? st->cusum[1][ch] : st->cusum[3][ch];
        if (v > residual_cusum) residual_cusum = v;
        v = fabs((DEV0[ch] - @p@_channel_center[0][ch]) / @p@_channel_scale[0][ch]);
        if (v > g0) g0 = v;
        v = fabs((SPREAD[ch] - @p@_channel_center[1][ch]) / @p@_channel_scale[1][ch]);
        if (v > g1) g1 = v;
        v = fabs((DEV1[ch] - @p@_channel_center[2][ch]) / @p@_channel_scale[2][ch]);
        if (v > g2) g2 = v;
    }
#if @P@_V2
    /* zstep's input: the largest step over the mean |step| before this window */
    now = 0.0;
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        const double v = DMAX[ch] / st->local[2][ch] / @p@_step_threshold[ch];
        if (v > now) now = v;
    }
    /* zrough: log of this window's mean |step| over its reference, the running (then
       EWMA) average of the earlier windows', which starts at benign's median */
    if ((st->flags & 32u) == 0u) {
        memcpy(st->rough_ref, @p@_rough_init, sizeof st->rough_ref);
        st->rough_n = 1.0;
        st->flags |= 32u;
    }
    zrough = 0.0;
    st->rough_n = st->rough_n + 1.0;
    {
        double gain = 1.0 / st->rough_n;
        if (gain < @p@_alpha) gain = @p@_alpha;
        for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
            const double v = (log(DMEAN[ch] / st->rough_ref[ch]) - @p@_rough_center[ch])
                             / @p@_rough_scale[ch];
            if (v > zrough) zrough = v;
            st->rough_ref[ch] = st->rough_ref[ch] + gain * (DMEAN[ch] - st->rough_ref[ch]);
        }
    }
#endif
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        st->local[0][ch] = st->local[0][ch] + @p@_alpha * (SD[ch] - st->local[0][ch]);
        st->local[1][ch] = st->local[1][ch] + @p@_alpha * (RSD[ch] - st->local[1][ch]);
        st->local[2][ch] = st->local[2][ch] + @p@_alpha * (DMEAN[ch] - st->local[2][ch]);
    }

#if @P@_V2
    /* yardstick: the window against the rows before it */
    if ((st->flags & 8u) == 0u) {
        st->yard_n = n_w;  /* the first window's samples count */
        for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
            st->yard[0][ch] = LEVEL[ch];
            st->yard[1][ch] = WVAR[ch] > @p@_yard_init[0][ch] ? WVAR[ch] : @p@_yard_init[0][ch];
            st->yard[2][ch] = RAWM[ch];
            st->yard[3][ch] = RAWV[ch] > @p@_yard_init[1][ch] ? RAWV[ch] : @p@_yard_init[1][ch];
#if @P@_TREND
            {
                double sx = 0.0, sr = 0.0;
                for (t = 0; t < @P@_WINDOW; t++) {
                    sx += @p@_t[t] * @P@_WIN(st, t)[ch];
                    sr += @p@_t[t] * @p@_raw_residual(@P@_WIN(st, t), ch);
                }
                st->trend[0][ch] = sx / @p@_tt;
                st->trend[1][ch] = sr / @p@_tt;
            }
#endif
        }
        st->flags |= 8u;
    }
    {
        double hold_now = 0.0;
        for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
            const double scale0 = sqrt(st->yard[1][ch] + @p@_quantum_sq[ch]);
            const double scale1 = sqrt(st->yard[3][ch] + @p@_quantum_sq[ch]);
            /* where the level (and its trend) puts the window's centre */
            const double e0 = st->yard[0][ch] + st->trend[0][ch] * @p@_w_plus_1 / 2.0;
            const double e1 = st->yard[2][ch] + st->trend[1][ch] * @p@_w_plus_1 / 2.0;
            const double z0 = (LEVEL[ch] - e0) / scale0;
            const double z1 = (RAWM[ch] - e1) / scale1;
            const double x0 = (z0 - @p@_z_center[0][ch]) / @p@_z_scale[0][ch];
            const double x1 = (z1 - @p@_z_center[1][ch]) / @p@_z_scale[1][ch];
            double v = SPMAX[ch] / scale0 / @p@_zspike_threshold[ch];
            if (v > hold_now) hold_now = v;
            st->zcusum[0][ch] = @p@_cusum(st->zcusum[0][ch], x0);
            st->zcusum[1][ch] = @p@_cusum(st->zcusum[1][ch], x1);
            st->zcusum[2][ch] = @p@_cusum(st->zcusum[2][ch], -x0);
            st->zcusum[3][ch] = @p@_cusum(st->zcusum[3][ch], -x1);
            v = fabs(x0);
            if (v > zlevel) zlevel = v;
            v = fabs(x1);
            if (v > zresid) zresid = v;
            v = st->zcusum[0][ch] > st->zcusum[2][ch] ? st->zcusum[0][ch] : st->zcusum[2][ch];
            if (v > zlevel_cusum) zlevel_cusum = v;
            v = st->zcusum[1][ch] > st->zcusum[3][ch] ? st->zcusum[1][ch] : st->zcusum[3][ch];
            if (v > zresid_cusum) zresid_cusum = v;
        }
        st->hold = st->hold * @p@_decay;
        if (hold_now > st->hold) st->hold = hold_now;
    }

    /* slope: least squares over the window, against the EWMA of earlier slopes */
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        double sx = 0.0, dev, x, v;
        for (t = 0; t < @P@_WINDOW; t++) {
            sx += @p@_t[t] * @P@_WIN(st, t)[ch];
        }
        sx = sx / @p@_tt;
        if ((st->flags & 16u) == 0u) {
            st->slope[ch] = sx;
        }
        dev = sx - st->slope[ch];
        st->slope[ch] = st->slope[ch] + @p@_alpha * dev;
        x = (dev - @p@_slope_center[ch]) / @p@_slope_scale[ch];
        st->slope_cusum[0][ch] = @p@_cusum(st->slope_cusum[0][ch], x);
        st->slope_cusum[1][ch] = @p@_cusum(st->slope_cusum[1][ch], -x);
        v = fabs(x);
        if (v > zslope) zslope = v;
        if (st->slope_cusum[0][ch] > zslope_cusum) zslope_cusum = st->slope_cusum[0][ch];
        if (st->slope_cusum[1][ch] > zslope_cusum) zslope_cusum = st->slope_cusum[1][ch];
    }
    st->flags |= 16u;

    /* step hold */
    st->step_hold = st->step_hold * @p@_decay;
    if (now > st->step_hold) st->step_hold = now;
#endif

@OUTPUTS@}

#undef LEVEL
#undef SD
#undef SPREAD
#undef RMEAN
#undef RSD
#undef DMEAN
#undef DEV0
#undef DEV1
#undef WVAR
#undef RAWM
#undef RAWV
#undef DMAX
#undef SPMAX

@P@_API @p@_status @p@_push(@p@_state *st, const double x[@P@_N_CHANNELS],
                          double out[@P@_N_FEATURES])
{
    uint32_t ch;
    double *row;
    if (st == NULL || x == NULL || out == NULL) {
        return @P@_ERR_NULL;
    }
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        if (!isfinite(x[ch])) {
            return @P@_ERR_NOT_FINITE;
        }
    }
    row = st->ring[st->head];
    for (ch = 0; ch < @P@_N_CHANNELS; ch++) {
        row[ch] = (x[ch] - @p@_mean[ch]) / @p@_std[ch];
    }
    st->head = st->head + 1u == (uint32_t)@P@_RING ? 0u : st->head + 1u;
    if (st->filled < (uint32_t)@P@_RING) {
        st->filled++;
    }
#if @P@_V2
    st->unfed++;  /* at most WINDOW + STEP <= RING (export refuses STEP > HISTORY) */
#endif
    if (--st->to_next != 0u) {
        return @P@_NO_WINDOW;
    }
    st->to_next = (uint32_t)@P@_STEP;
    @p@_window(st, out);
    return @P@_READY;
}

#undef @P@_WIN

#ifdef __cplusplus
}
#endif
#endif /* @P@_H */
"""


# ----------------------------------------------------------------------------- export
@dataclass(frozen=True)
class SensorFeatureFiles:
    header: Path
    prefix: str
    state_bytes: int
    n_features: int
    n_channels: int
    v2: bool  # the v2 extractor (resolution floors, z families): a larger state

    @property
    def formula(self) -> str:
        rows, extra = (37, 56) if self.v2 else (18, 16)
        return f"8 x channels x (history + window + {rows}) + {extra}"


def export_sensorfeatures_c(
    extractor: SensorFeatureExtractor, out_dir: Path, prefix: str = "tw_sf"
) -> SensorFeatureFiles:
    """Write ``<prefix>.h`` for a fitted extractor into ``out_dir`` (created if missing).

    Raises:
        DetectMisuse: a prefix that is not a safe C identifier.
        SensorExportRefused: an extractor the C does not implement (see
            :func:`check_exportable`); nothing is written.
    """
    text = render_sensorfeatures_h(extractor, prefix)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = out_dir / f"{prefix}.h"
    header.write_text(text, encoding="ascii")
    cfg = extractor.config
    v2 = _is_v2(extractor)
    return SensorFeatureFiles(
        header,
        prefix,
        state_bytes(len(extractor.channels), cfg.window, cfg.history, v2=v2),
        extractor.n_features,
        len(extractor.channels),
        v2,
    )


# ----------------------------------------------------------------------------- reference
def _seq_sum(rows: np.ndarray) -> np.ndarray:
    """Sum over the first axis, first row first (numpy's own sum may go pairwise)."""
    acc = np.zeros(rows.shape[1:])
    for row in rows:
        acc = acc + row
    return acc


def _logs(values: np.ndarray) -> np.ndarray:
    # math.log is the C library's log; numpy's may be its own SIMD code.
    return np.array([math.log(v) for v in values])


class SensorReference:
    """The C export's arithmetic in Python, continuing a fitted extractor's stream.

    Same parameters and trained stream state as the extractor (it is only read), same
    features to rounding; bit for bit the same as the exported C (sequential sums, no
    fused multiply-add, libm ``log``/``log1p``/``sqrt``).
    """

    def __init__(self, extractor: SensorFeatureExtractor) -> None:
        check_exportable(extractor)
        e = extractor
        self.e = e
        self.v2 = _is_v2(e)
        self.f = _profile(e)
        cfg = e.config
        self.ring = _trained_ring(e).copy()
        self.to_next = cfg.window - len(e._pending)
        self.unfed = len(e._pending)
        self.prev = None if e._prev_level is None else e._prev_level.copy()
        self.baseline = None if e._baseline is None else e._baseline.copy()
        self.local = None if e._local is None else e._local.copy()
        self.cusum = e._cusum.copy()
        self.alpha = 1.0 - 2.0 ** (-1.0 / cfg.baseline_halflife)
        self.keep = 1.0 - self.alpha
        self.yard: np.ndarray | None = None
        self.rough_ref: np.ndarray | None = None
        self.rough_n = 0.0
        self.slope: np.ndarray | None = None
        if self.v2:
            v2: Any = e
            c = len(e.channels)
            self.yard = None if v2._yard is None else v2._yard.copy()
            self.trend = np.array(getattr(e, "_trend", np.zeros((2, c))), dtype=np.float64)
            self.zcusum = v2._zcusum.copy()
            self.hold = float(v2._hold)
            self.slope = None if v2._slope is None else v2._slope.copy()
            self.slope_cusum = v2._slope_cusum.copy()
            self.step_hold = float(v2._step_hold)
            self.yard_n = float(v2._yard_n)
            ref = getattr(e, "_rough_ref", None)
            self.rough_ref = None if ref is None else np.array(ref, dtype=np.float64)
            self.rough_n = float(getattr(e, "_rough_n", 0.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Push sample rows (n, channels); return one feature row per completed window."""
        e, cfg = self.e, self.e.config
        values = np.asarray(values, dtype=np.float64)
        z = (values - e.mean) / e.std
        buf = np.vstack([self.ring, z])
        fed_upto = len(self.ring) - self.unfed
        out = []
        end = len(self.ring) + self.to_next
        while end <= len(buf):
            start = end - cfg.window
            if self.v2 and self.yard is not None:
                self._feed(buf[fed_upto:start])
            fed_upto = start
            history = buf[max(0, start - cfg.history) : start]
            out.append(self._window(buf[start:end], history))
            end += cfg.step
        self.to_next = end - len(buf)
        self.unfed = len(buf) - fed_upto
        self.ring = buf[-(max(cfg.history, cfg.step) + cfg.window) :]
        if not out:
            return np.zeros((0, e.n_features))
        return np.vstack(out)

    def _raw_residual(self, rows: np.ndarray) -> np.ndarray:
        e = self.e
        pred = np.zeros_like(rows)
        for k in range(rows.shape[1]):
            pred = pred + rows[:, k : k + 1] * e.coef[:, k]
        return rows - (pred + e.intercept)

    def _feed(self, rows: np.ndarray) -> None:
        if self.yard is None:
            return
        f = self.f
        a_min, beta = float(f["YARD_A_MIN"]), float(f["BETA"])
        residuals = self._raw_residual(rows)
        yard, trend = self.yard, self.trend
        for x, r in zip(rows, residuals, strict=True):
            self.yard_n = self.yard_n + 1.0
            a = 1.0 / self.yard_n
            a = a_min if a < a_min else a
            keep = 1.0 - a
            for i, value in ((0, x), (1, r)):
                d = value - (yard[2 * i] + trend[i])
                yard[2 * i] = yard[2 * i] + trend[i] + a * d
                trend[i] = trend[i] + beta * a * d
                yard[2 * i + 1] = keep * (yard[2 * i + 1] + a * d * d)

    def _cusum(self, s: np.ndarray, x: np.ndarray) -> np.ndarray:
        s = self.keep * s + x - 0.5
        s = np.where(s > 0.0, s, 0.0)
        return np.where(s < _CUSUM_CAP, s, _CUSUM_CAP)

    def _window(self, w: np.ndarray, history: np.ndarray) -> np.ndarray:
        e, f = self.e, self.f
        v2: Any = e
        n_w, n_d = float(len(w)), float(len(w) - 1)
        level = _seq_sum(w) / n_w
        raw = self._raw_residual(w)
        residual = raw / e.residual_std
        rmean = _seq_sum(residual) / n_w
        d = w - level
        wvar = _seq_sum(d * d) / n_w
        sd = np.sqrt(wvar)
        r = residual - rmean
        rsd = np.sqrt(_seq_sum(r * r) / n_w)
        spread = _logs((sd + f["SPREAD_ADD"]) / f["SPREAD_DEN"])
        diffs = np.abs(w[1:] - w[:-1])
        dmean = _seq_sum(diffs) / n_d
        if self.v2:
            repeated = (diffs < f["STUCK_THR"]).sum(axis=0).astype(np.float64) / n_d
            excess = repeated - f["REPEAT_HIGH"]
            stuck_c = np.where(excess > 0.0, excess, 0.0) / f["HEADROOM"]
        else:
            stuck_c = (diffs < 1e-9 * (1.0 + np.abs(w[1:]))).sum(axis=0).astype(np.float64) / n_d
        stuck = max(0.0, float(np.max(stuck_c)))
        ordered = np.sort(diffs, axis=0)
        n = len(diffs)
        median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2.0
        noise_c = np.abs(_logs((median + f["NOISE_ADD"]) / f["NOISE_DEN"]))
        noise = max(0.0, float(np.max(noise_c)))
        jump = 0.0 if self.prev is None else max(0.0, float(np.max(np.abs(level - self.prev))))
        self.prev = level
        replay = self._replay(w, history)
        if self.baseline is None:
            self.baseline = np.stack([level, rmean])
        dev0 = level - self.baseline[0]
        dev1 = rmean - self.baseline[1]
        self.baseline = np.stack(
            [self.baseline[0] + self.alpha * dev0, self.baseline[1] + self.alpha * dev1]
        )
        add = f["LOCAL_ADD"]
        local_now = np.stack([sd + add, rsd + add, dmean + add])
        if self.local is None:
            self.local = local_now
        spikes = _spikiness(w)
        spike = max(0.0, float(np.max(spikes / e.spike_scale)))
        spike_local = max(0.0, float(np.max(spikes / self.local[0] / e.spike_threshold)))
        x0 = (dev0 / self.local[0] - e.shift_center[0]) / e.shift_scale[0]
        x1 = (dev1 / self.local[1] - e.shift_center[1]) / e.shift_scale[1]
        self.cusum = self._cusum(self.cusum, np.stack([x0, x1, -x0, -x1]))
        scalars = {
            "stuck": stuck, "replay": replay, "spike": math.log1p(spike), "noise_floor": noise,
            "level_jump": jump, "shift_max": math.log1p(max(0.0, float(np.max(np.abs(x0))))),
            "shift_cusum": math.log1p(max(0.0, float(np.max(self.cusum[[0, 2]])))),
            "residual_cusum": math.log1p(max(0.0, float(np.max(self.cusum[[1, 3]])))),
            "spike_local": math.log1p(spike_local),
        }
        for name, v in (("level_dev_max", dev0), ("spread_max", spread),
                        ("residual_dev_max", dev1)):
            i = ("level_dev_max", "spread_max", "residual_dev_max").index(name)
            g = np.abs((v - e.channel_center[i]) / e.channel_scale[i])
            scalars[name] = math.log1p(max(0.0, float(np.max(g))))
        if self.v2:
            step_now = max(0.0, float(np.max(
                np.max(diffs, axis=0) / self.local[2] / v2.step_threshold)))
            now = local_now[2]
            if self.rough_ref is None:
                self.rough_ref = np.array(f["ROUGH_INIT"], dtype=np.float64)
                self.rough_n = 1.0
            rough = (_logs(now / self.rough_ref) - f["ROUGH_C"]) / f["ROUGH_S"]
            self.rough_n = self.rough_n + 1.0
            gain = 1.0 / self.rough_n
            gain = self.alpha if gain < self.alpha else gain
            self.rough_ref = self.rough_ref + gain * (now - self.rough_ref)
            scalars["zrough_max"] = math.log1p(max(0.0, float(np.max(rough))))
            if "lagz" in e.config.families:
                scalars["lagz_alarm"] = self._lagz(level, history)
        self.local = self.local + self.alpha * (local_now - self.local)
        if self.v2:
            scalars.update(self._v2_features(w, level, raw, wvar, spikes, step_now))
        per = {"level_dev": dev0, "spread": spread, "residual_dev": dev1}
        row = []
        for name in e.feature_names:
            if name in scalars:
                row.append(scalars[name])
            else:
                prefix, index = name.rsplit("_", 1)
                row.append(float(per[prefix][int(index)]))
        return np.asarray(row, dtype=np.float64)

    def _v2_features(self, w: np.ndarray, level: np.ndarray, raw: np.ndarray,
                     wvar: np.ndarray, spikes: np.ndarray, step_now: float) -> dict[str, float]:
        e: Any = self.e
        f = self.f
        n_w = float(len(w))
        rawm = _seq_sum(raw) / n_w
        g = raw - rawm
        rawv = _seq_sum(g * g) / n_w
        t = np.asarray(f["T"])
        tt = float(f["TT"])
        if self.yard is None:
            self.yard_n = n_w
            init = np.asarray(f["YARD_INIT"])
            self.yard = np.stack([level, np.where(wvar > init[0], wvar, init[0]),
                                  rawm, np.where(rawv > init[1], rawv, init[1])])
            if getattr(e.config, "trend_halflife", 0):
                self.trend = np.stack([_seq_sum(t[:, None] * w), _seq_sum(t[:, None] * raw)]) / tt
        q2 = np.asarray(f["Q2"])
        scale0 = np.sqrt(self.yard[1] + q2)
        scale1 = np.sqrt(self.yard[3] + q2)
        w1 = float(len(w) + 1)
        z0 = (level - (self.yard[0] + self.trend[0] * w1 / 2.0)) / scale0
        z1 = (rawm - (self.yard[2] + self.trend[1] * w1 / 2.0)) / scale1
        x0 = (z0 - e.z_center[0]) / e.z_scale[0]
        x1 = (z1 - e.z_center[1]) / e.z_scale[1]
        hold_now = max(0.0, float(np.max(np.max(spikes, axis=0) / scale0 / e.zspike_threshold)))
        self.zcusum = self._cusum(self.zcusum, np.stack([x0, x1, -x0, -x1]))
        decay = float(f["DECAY"])
        held = self.hold * decay
        self.hold = hold_now if hold_now > held else held
        slope = _seq_sum(t[:, None] * w) / tt
        if self.slope is None:
            self.slope = slope
        dev = slope - self.slope
        self.slope = self.slope + self.alpha * dev
        x = (dev - e.slope_center) / e.slope_scale
        self.slope_cusum = self._cusum(self.slope_cusum, np.stack([x, -x]))
        held = self.step_hold * decay
        self.step_hold = step_now if step_now > held else held
        return {
            "zlevel_max": math.log1p(max(0.0, float(np.max(np.abs(x0))))),
            "zresid_max": math.log1p(max(0.0, float(np.max(np.abs(x1))))),
            "zlevel_cusum": math.log1p(max(0.0, float(np.max(self.zcusum[[0, 2]])))),
            "zresid_cusum": math.log1p(max(0.0, float(np.max(self.zcusum[[1, 3]])))),
            "zspike_hold": math.log1p(self.hold),
            "zslope_max": math.log1p(max(0.0, float(np.max(np.abs(x))))),
            "zslope_cusum": math.log1p(max(0.0, float(np.max(self.slope_cusum)))),
            "zstep_hold": math.log1p(self.step_hold),
        }

    def _lagz(self, level: np.ndarray, history: np.ndarray) -> float:
        f, cfg = self.f, self.e.config
        stop = len(history) - LAGZ_GAP
        if stop < cfg.window:
            return 0.0
        ref = history[max(0, stop - LAGZ_REACH) : stop]
        n = float(len(ref))
        mean = _seq_sum(ref) / n
        d = ref - mean
        sd = np.sqrt(_seq_sum(d * d) / n)
        sd = np.where(sd < f["Q"], f["Q"], sd)
        v = np.abs((level - mean) / sd - f["LAGZ_C"]) / f["LAGZ_S"] / f["LAGZ_T"]
        return max(0.0, float(np.max(v)))

    def _replay(self, w: np.ndarray, history: np.ndarray) -> float:
        cfg = self.e.config
        if len(history) < cfg.min_replay_lag:
            return 0.0
        k = len(history) - cfg.min_replay_lag + 1
        c = w.shape[1]
        # Stretch j flattened is rows j..j+window-1, row after row: the C's order.
        flat = np.ascontiguousarray(history).ravel()
        stretches = np.lib.stride_tricks.sliding_window_view(flat, w.size)[::c][:k]
        gaps = np.abs(stretches - w.ravel())
        # cumsum adds strictly in order (numpy's sum may go pairwise): the C's sum
        sums = np.cumsum(gaps, axis=1)[:, -1] / float(w.size)
        return -math.log(float(sums.min()) / float(self.f["NFLOOR_MEAN"]) + 1e-3)


# ----------------------------------------------------------------------------- host harness
# Not part of the export (stdio): a firmware-style main that reads sample rows as text
# (numbers separated by commas, semicolons or blanks, one row a line), pushes them and
# prints each window's features as C99 hexadecimal floats (exact). Modes: (none) run;
# "names"; "sizes" (sizeof the state); "selftest" (bad arguments, one status a line).
def harness_source(prefix: str) -> str:
    p = check_prefix(prefix)
    P = p.upper()
    return f"""\
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "{p}.h"

static int run(void)
{{
    static {p}_state st;
    static char line[1 << 16];
    double x[{P}_N_CHANNELS], f[{P}_N_FEATURES];
    unsigned long lineno = 0;
    {p}_init(&st);
    while (fgets(line, (int)sizeof line, stdin) != NULL) {{
        char *p = line, *end;
        unsigned i;
        {p}_status status;
        lineno++;
        for (i = 0; i < {P}_N_CHANNELS; i++) {{
            x[i] = strtod(p, &end);
            if (end == p) {{
                fprintf(stderr, "line %lu: value %u is not a number\\n", lineno, i + 1u);
                return 2;
            }}
            p = end;
            while (*p == ',' || *p == ';' || *p == ' ' || *p == '\\t') p++;
        }}
        status = {p}_push(&st, x, f);
        if (status == {P}_READY) {{
            for (i = 0; i < {P}_N_FEATURES; i++) printf(i ? " %a" : "%a", f[i]);
            putchar('\\n');
        }} else if (status != {P}_NO_WINDOW) {{
            fprintf(stderr, "line %lu: %s\\n", lineno, {p}_status_str(status));
            return 3;
        }}
    }}
    return 0;
}}

static int selftest(void)
{{
    static {p}_state st;
    double x[{P}_N_CHANNELS] = {{0.0}}, f[{P}_N_FEATURES];
    volatile double zero = 0.0;
    uint32_t filled;
    {p}_init(&st);
    filled = st.filled;
    printf("%d\\n", (int){p}_push(NULL, x, f));
    printf("%d\\n", (int){p}_push(&st, NULL, f));
    printf("%d\\n", (int){p}_push(&st, x, NULL));
    x[{P}_N_CHANNELS - 1] = zero / zero;
    printf("%d\\n", (int){p}_push(&st, x, f));
    x[{P}_N_CHANNELS - 1] = 1.0 / zero;
    printf("%d\\n", (int){p}_push(&st, x, f));
    printf("%d\\n", st.filled == filled ? 1 : 0);
    printf("%s\\n", {p}_status_str(({p}_status)99));
    return 0;
}}

int main(int argc, char **argv)
{{
    unsigned i;
    if (argc > 1 && strcmp(argv[1], "names") == 0) {{
        for (i = 0; i < {P}_N_CHANNELS; i++) printf("channel %s\\n", {p}_channel_names[i]);
        for (i = 0; i < {P}_N_FEATURES; i++) printf("feature %s\\n", {p}_feature_names[i]);
        return 0;
    }}
    if (argc > 1 && strcmp(argv[1], "sizes") == 0) {{
        printf("%lu\\n", (unsigned long)sizeof({p}_state));
        return 0;
    }}
    if (argc > 1 && strcmp(argv[1], "selftest") == 0) return selftest();
    return run();
}}
"""


#: What ``selftest`` prints: NULL state, NULL row, NULL out, NaN, +inf, state unchanged,
#: the text of an unknown status.
SELFTEST_EXPECTED = ["2", "2", "2", "3", "3", "1", "unknown status"]


def build_sensor_harness(
    extractor: SensorFeatureExtractor,
    work_dir: Path,
    prefix: str = "tw_sf",
    cc: str = "gcc",
    extra_flags: Sequence[str] = (),
) -> Path:
    """Export ``extractor`` into ``work_dir`` and compile the harness; return its path.

    Raises:
        DetectMisuse: no C compiler, or the code does not compile (gcc's output shown).
        SensorExportRefused: see :func:`check_exportable`.
    """
    if shutil.which(cc) is None:
        raise DetectMisuse(f"no C compiler {cc!r} on PATH (run scripts/install-system-deps.sh)")
    work_dir = Path(work_dir)
    files = export_sensorfeatures_c(extractor, work_dir, prefix)
    main = work_dir / f"{prefix}_main.c"
    main.write_text(harness_source(prefix), encoding="ascii")
    exe = work_dir / f"{prefix}_harness"
    cmd = [cc, *HOST_CFLAGS, *extra_flags, "-I", str(files.header.parent), str(main),
           "-o", str(exe), "-lm"]
    # Fixed argv: the compiler we found, our flags and our generated files; no shell.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
    if done.returncode != 0:
        raise DetectMisuse(f"the sensor feature C does not compile:\n{done.stderr}")
    return exe


def rows_text(values: np.ndarray) -> str:
    """Sample rows as the harness reads them (``repr`` round-trips through strtod)."""
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in values)


def run_harness(exe: Path, values: np.ndarray, n_features: int) -> np.ndarray:
    """Feed ``values`` to the harness; return its feature rows (exact).

    Raises:
        DetectMisuse: the harness failed (its message shown).
    """
    done = subprocess.run(  # noqa: S603 - our compiled harness, no shell
        [str(exe)], input=rows_text(values), capture_output=True, text=True, timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise DetectMisuse(f"sensor feature harness failed: {done.stderr.strip()}")
    rows = [[float.fromhex(v) for v in line.split()] for line in done.stdout.splitlines()]
    return np.asarray(rows, dtype=np.float64).reshape(-1, n_features)


# ----------------------------------------------------------------------------- Cortex-M4
def sizing_source(prefix: str) -> str:
    """A translation unit for size figures: the functions with external linkage and one
    state instance (so ``.bss`` is the state)."""
    p = check_prefix(prefix)
    return f'#define {p.upper()}_API\n#include "{p}.h"\n{p}_state {p}_instance;\n'
