"""Export an int8 detector as one C99 header and one C99 source file.

The generated code follows the emlearn habits we keep (and fixes the ones we do not):
include guards and ``extern "C"``; one prefix on every public name; weights as
``static const`` tables; ``static`` helpers; no dynamic allocation and no static RAM; no
floating point in ``<prefix>_score`` / ``<prefix>_is_anomaly``; a status enum whose
string table is checked against the enum at compile time; a clamp before every table
index; and integer arithmetic that avoids implementation-defined behaviour (no right
shift of a negative value). It compiles cleanly with
``-std=c99 -Wall -Wextra -Wconversion -Werror`` and matches
:mod:`tinyward.detect.int8` bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyward import __version__
from tinyward.detect._int8_models import Int8AutoencoderDetector, Int8MahalanobisDetector
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.int8 import ERR_CLAMP, QAutoencoder, QMahalanobis

_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_FEATURE_NAME = re.compile(r"^[A-Za-z0-9_.:/() +-]{1,60}$")

STATUSES = (
    ("OK", "ok"),
    ("ERR_NULL_POINTER", "a pointer argument is NULL"),
    ("ERR_LENGTH", "the number of features is not the model's"),
    ("ERR_NOT_A_NUMBER", "a feature is NaN"),
)


@dataclass(frozen=True)
class ExportedFiles:
    header: Path
    source: Path
    prefix: str
    threshold: int = 0  # the int32 the C code compares scores with (alarm: score > it)


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a safe C identifier prefix.

    Raises:
        DetectMisuse: not lower-case letters, digits and underscores starting with a letter.
    """
    if not _PREFIX.match(prefix) or prefix.endswith("_") or "__" in prefix:
        raise DetectMisuse(
            f"prefix {prefix!r} must be 1-31 lower-case letters, digits or single underscores, "
            "starting with a letter"
        )
    return prefix


def render(
    detector: Int8AutoencoderDetector | Int8MahalanobisDetector,
    prefix: str = "tinyward_detector",
    feature_names: Sequence[str] | None = None,
) -> tuple[str, str]:
    """Return (header text, source text) for a fitted int8 detector.

    Raises:
        DetectMisuse: bad prefix or feature names, or a float/unfitted detector.
        NotFittedError: the detector was not fitted.
    """
    check_prefix(prefix)
    if not isinstance(detector, (Int8AutoencoderDetector, Int8MahalanobisDetector)):
        raise DetectMisuse(
            "only int8 detectors can be exported to C, not "
            f"{getattr(detector, 'name', detector)!r}; "
            "train an 'autoencoder-int8' or 'mahalanobis-int8'"
        )
    q = detector._require_fitted()
    d = q.n_features
    if feature_names is not None:
        names = list(feature_names)
        if len(names) != d or not all(_FEATURE_NAME.match(n) for n in names):
            raise DetectMisuse(f"need {d} feature names of letters, digits and _.:/()+- ")
    else:
        names = [f"feature {i}" for i in range(d)]
    g = _Gen(prefix, detector.name, detector.threshold_int(), names, detector.target_fpr)
    body = g.autoencoder(q) if isinstance(q, QAutoencoder) else g.mahalanobis(q)
    return g.header(q.n_features, detector.model_bytes(), detector.ops_per_inference()), body


def export_c(
    detector: Int8AutoencoderDetector | Int8MahalanobisDetector,
    out_dir: Path,
    prefix: str = "tinyward_detector",
    feature_names: Sequence[str] | None = None,
) -> ExportedFiles:
    """Write ``<prefix>.h`` and ``<prefix>.c`` into ``out_dir`` (created if missing).

    Raises:
        DetectMisuse: see :func:`render`.
        OSError: the folder cannot be written.
    """
    header, source = render(detector, prefix, feature_names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    h_path, c_path = out_dir / f"{prefix}.h", out_dir / f"{prefix}.c"
    h_path.write_text(header, encoding="ascii")
    c_path.write_text(source, encoding="ascii")
    return ExportedFiles(header=h_path, source=c_path, prefix=prefix,
                         threshold=detector.threshold_int())


def _ints(values: np.ndarray, per_line: int = 16) -> str:
    flat = [str(int(v)) for v in np.asarray(values).ravel()]
    lines = [", ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line)]
    return ",\n    ".join(lines)


def _floats(values: np.ndarray) -> str:
    # Hexadecimal float literals are exact: the C constants equal the Python float32 values.
    flat = [float(np.float32(v)).hex() + "f" for v in np.asarray(values).ravel()]
    lines = [", ".join(flat[i : i + 4]) for i in range(0, len(flat), 4)]
    return ",\n    ".join(lines)


def _rows(matrix: np.ndarray) -> str:
    return ",\n    ".join("{ " + ", ".join(str(int(v)) for v in row) + " }" for row in matrix)


class _Gen:
    def __init__(
        self, prefix: str, kind: str, threshold: int, names: list[str], target_fpr: float | None
    ) -> None:
        self.fpr_text = (f"a false-positive rate of {100 * target_fpr:g}%" if target_fpr
                         else "the false-positive rate stated at training time")
        self.p = prefix
        self.P = prefix.upper()
        self.kind = kind
        self.threshold = threshold
        self.names = names

    def header(self, d: int, model_bytes: int, ops: int) -> str:
        p, P = self.p, self.P
        statuses = "\n".join(
            f"    {P}_{name} = {i}, /* {text} */" for i, (name, text) in enumerate(STATUSES)
        )
        feature_list = "\n".join(f" *   [{i:2d}] {n}" for i, n in enumerate(self.names))
        return f"""\
/* {p}.h - tinyward anomaly detector '{self.kind}', int8, exported by tinyward {__version__}.
 *
 * Learned from benign data only. Given one feature vector it returns an int32 anomaly
 * score; a score above {P}_THRESHOLD is an alarm (threshold chosen on held-out benign
 * data for {self.fpr_text}).
 *
 * Usage:
 *     float features[{P}_N_FEATURES];      (filled by the firmware, order below)
 *     int8_t features_q[{P}_N_FEATURES];
 *     bool alarm;
 *     int32_t score;
 *     {p}_status st = {p}_quantize(features, {P}_N_FEATURES, features_q);
 *     if (st == {P}_OK) st = {p}_is_anomaly(features_q, &alarm, &score);
 *     if (st != {P}_OK) log({p}_status_string(st));
 *
 * Feeding features: the firmware computes the same {d} features, in the same order and
 * units, as tinyward's feature extractor did when the model was trained, and passes them
 * as floats to {p}_quantize (the only function that uses floating point; define
 * {P}_NO_FLOAT to leave it out and fill features_q yourself:
 * q = round_half_away((x - offset) * multiplier) clamped to [-127, 127]).
 * Features:
{feature_list}
 *
 * Resources: {model_bytes} bytes of const tables (flash); no heap, no static RAM, a few
 * dozen bytes of stack; {ops} operations per vector (multiply-adds, lookups, squares).
 * Every function is reentrant. Compile as C99 (e.g. -std=c99; do not let the compiler
 * contract the float multiply in {p}_quantize into a fused multiply-add).
 */
#ifndef {P}_H
#define {P}_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

/** Number of features in one vector. */
#define {P}_N_FEATURES {d}
/** Alarm when score > {P}_THRESHOLD. */
#define {P}_THRESHOLD INT32_C({self.threshold})

typedef enum {p}_status {{
{statuses}
    {P}_STATUS_COUNT
}} {p}_status;

/** A short English text for a status (never NULL). */
const char *{p}_status_string({p}_status status);

/** Score one quantised vector of {P}_N_FEATURES int8 values; higher = more anomalous. */
{p}_status {p}_score(const int8_t *features_q, int32_t *score);

/** Score and compare with {P}_THRESHOLD; score may be NULL if not wanted. */
{p}_status {p}_is_anomaly(const int8_t *features_q, bool *anomaly, int32_t *score);

#ifndef {P}_NO_FLOAT
/** Quantise n_features (must be {P}_N_FEATURES) float features to int8. */
{p}_status {p}_quantize(const float *features, size_t n_features, int8_t *features_q);
#endif

#ifdef __cplusplus
}}
#endif

#endif /* {P}_H */
"""

    def _common_source(self, inq_offset: np.ndarray, inq_mult: np.ndarray) -> str:
        p, P = self.p, self.P
        strings = ",\n    ".join(f'"{text}"' for _, text in STATUSES)
        return f"""\
/* {p}.c - generated by tinyward {__version__} from a '{self.kind}' model; see {p}.h. */
#include "{p}.h"

/* Fails to compile if the string table and the status enum ever disagree. */
static const char *const {p}_status_strings[] = {{
    {strings}
}};
typedef char {p}_status_strings_match_enum[
    (sizeof {p}_status_strings / sizeof {p}_status_strings[0]
     == (size_t){P}_STATUS_COUNT) ? 1 : -1];

const char *{p}_status_string({p}_status status)
{{
    if ((size_t)status >= (size_t){P}_STATUS_COUNT) {{
        return "unknown status";
    }}
    return {p}_status_strings[status];
}}

#define {P}_ERR_CLAMP INT32_C({ERR_CLAMP})

/* acc * multiplier / 2^(32 + shift), rounded, symmetric around zero; shift in [0, 30].
 * Works on the magnitude in unsigned arithmetic: no right shift of a negative value
 * (implementation-defined in C99) and no overflow (|acc| < 2^31, multiplier < 2^31). */
static int32_t {p}_requantize(int32_t acc, int32_t multiplier, uint8_t shift)
{{
    const uint32_t magnitude = acc < 0 ? 0u - (uint32_t)acc : (uint32_t)acc;
    const uint64_t product = (uint64_t)magnitude * (uint32_t)multiplier + 0x80000000u;
    const uint32_t high = (uint32_t)(product >> 32);
    const uint32_t rounded = (high + ((1u << shift) >> 1)) >> shift;
    return acc < 0 ? -(int32_t)rounded : (int32_t)rounded;
}}

static int32_t {p}_clamp(int32_t v, int32_t low, int32_t high)
{{
    return v < low ? low : (v > high ? high : v);
}}

#ifndef {P}_NO_FLOAT
static const float {p}_input_offset[{P}_N_FEATURES] = {{
    {_floats(inq_offset)}
}};
static const float {p}_input_multiplier[{P}_N_FEATURES] = {{
    {_floats(inq_mult)}
}};

{p}_status {p}_quantize(const float *features, size_t n_features, int8_t *features_q)
{{
    size_t i;
    if (features == NULL || features_q == NULL) {{
        return {P}_ERR_NULL_POINTER;
    }}
    if (n_features != (size_t){P}_N_FEATURES) {{
        return {P}_ERR_LENGTH;
    }}
    for (i = 0; i < (size_t){P}_N_FEATURES; ++i) {{
        float v = (features[i] - {p}_input_offset[i]) * {p}_input_multiplier[i];
        int32_t q;
        if (v != v) {{
            return {P}_ERR_NOT_A_NUMBER;
        }}
        if (v > 127.0f) {{
            v = 127.0f;
        }} else if (v < -127.0f) {{
            v = -127.0f;
        }}
        q = v >= 0.0f ? (int32_t)(v + 0.5f) : -(int32_t)(0.5f - v);
        features_q[i] = (int8_t)q;
    }}
    return {P}_OK;
}}
#endif

{p}_status {p}_is_anomaly(const int8_t *features_q, bool *anomaly, int32_t *score)
{{
    int32_t value = 0;
    {p}_status status;
    if (anomaly == NULL) {{
        return {P}_ERR_NULL_POINTER;
    }}
    status = {p}_score(features_q, &value);
    if (status != {P}_OK) {{
        return status;
    }}
    *anomaly = value > {P}_THRESHOLD;
    if (score != NULL) {{
        *score = value;
    }}
    return {P}_OK;
}}
"""

    def autoencoder(self, q: QAutoencoder) -> str:
        p, P = self.p, self.P
        return self._common_source(q.inq.offset, q.inq.mult) + f"""
/* Autoencoder {q.n_features} -> {q.hidden} (tanh) -> {q.n_features}; score = sum of squared
 * residuals in input quanta. Weights are symmetric int8 per row; biases are in the
 * accumulator's scale; multiplier/shift pairs requantise the int32 accumulators. */
#define {P}_N_HIDDEN {q.hidden}

static const int8_t {p}_encoder_weights[{P}_N_HIDDEN][{P}_N_FEATURES] = {{
    {_rows(q.W1)}
}};
static const int32_t {p}_encoder_bias[{P}_N_HIDDEN] = {{
    {_ints(q.b1)}
}};
static const int32_t {p}_encoder_multiplier[{P}_N_HIDDEN] = {{
    {_ints(q.m1, 6)}
}};
static const uint8_t {p}_encoder_shift[{P}_N_HIDDEN] = {{
    {_ints(q.s1)}
}};
static const int8_t {p}_decoder_weights[{P}_N_FEATURES][{P}_N_HIDDEN] = {{
    {_rows(q.W2)}
}};
static const int32_t {p}_decoder_bias[{P}_N_FEATURES] = {{
    {_ints(q.b2)}
}};
static const int32_t {p}_decoder_multiplier[{P}_N_FEATURES] = {{
    {_ints(q.m2, 6)}
}};
static const uint8_t {p}_decoder_shift[{P}_N_FEATURES] = {{
    {_ints(q.s2)}
}};
/* tanh: entry i = round(127 * tanh((i - 128) / 32)). */
static const int8_t {p}_tanh_table[256] = {{
    {_ints(q.lut)}
}};

{p}_status {p}_score(const int8_t *features_q, int32_t *score)
{{
    int8_t hidden[{P}_N_HIDDEN];
    int32_t total = 0;
    size_t i, j, k;
    if (features_q == NULL || score == NULL) {{
        return {P}_ERR_NULL_POINTER;
    }}
    for (j = 0; j < (size_t){P}_N_HIDDEN; ++j) {{
        const int8_t *w = {p}_encoder_weights[j];
        const int8_t *x = features_q;
        int32_t acc = {p}_encoder_bias[j];
        int32_t index;
        for (i = (size_t){P}_N_FEATURES; i != 0u; --i) {{ /* counts down: fewer instructions */
            acc += (int32_t)*w++ * (int32_t)*x++;
        }}
        index = {p}_requantize(acc, {p}_encoder_multiplier[j], {p}_encoder_shift[j]);
        index = {p}_clamp(index, -128, 127); /* bounds the table index below */
        hidden[j] = {p}_tanh_table[(size_t)(index + 128)];
    }}
    for (k = 0; k < (size_t){P}_N_FEATURES; ++k) {{
        const int8_t *w = {p}_decoder_weights[k];
        const int8_t *h = hidden;
        int32_t acc = {p}_decoder_bias[k];
        int32_t err;
        for (j = (size_t){P}_N_HIDDEN; j != 0u; --j) {{
            acc += (int32_t)*w++ * (int32_t)*h++;
        }}
        err = {p}_requantize(acc, {p}_decoder_multiplier[k], {p}_decoder_shift[k])
              - (int32_t)features_q[k];
        err = {p}_clamp(err, -{P}_ERR_CLAMP, {P}_ERR_CLAMP);
        total += err * err; /* <= 256 * 2047^2 < 2^31 */
    }}
    *score = total;
    return {P}_OK;
}}
"""

    def mahalanobis(self, q: QMahalanobis) -> str:
        p, P = self.p, self.P
        return self._common_source(q.inq.offset, q.inq.mult) + f"""
/* Mahalanobis distance: z = U x + b with U the upper-triangular Cholesky factor of the
 * (shrunk) precision matrix, packed row by row (row k holds U[k][k..N-1]); the score is
 * sum z_k^2 with z in 1/16 units. */
#define {P}_N_WEIGHTS {len(q.U)}
typedef char {p}_packed_size_matches[
    ({P}_N_WEIGHTS == {P}_N_FEATURES * ({P}_N_FEATURES + 1) / 2) ? 1 : -1];

static const int8_t {p}_whitening_weights[{P}_N_WEIGHTS] = {{
    {_ints(q.U)}
}};
static const int32_t {p}_whitening_bias[{P}_N_FEATURES] = {{
    {_ints(q.b)}
}};
static const int32_t {p}_whitening_multiplier[{P}_N_FEATURES] = {{
    {_ints(q.m, 6)}
}};
static const uint8_t {p}_whitening_shift[{P}_N_FEATURES] = {{
    {_ints(q.s)}
}};

{p}_status {p}_score(const int8_t *features_q, int32_t *score)
{{
    const int8_t *w = {p}_whitening_weights;
    int32_t total = 0;
    size_t i, k;
    if (features_q == NULL || score == NULL) {{
        return {P}_ERR_NULL_POINTER;
    }}
    /* w walks the packed triangle: N + (N-1) + ... + 1 = {P}_N_WEIGHTS steps in all,
     * exactly the table's length (checked at compile time above). */
    for (k = 0; k < (size_t){P}_N_FEATURES; ++k) {{
        const int8_t *x = features_q + k;
        int32_t acc = {p}_whitening_bias[k];
        int32_t z;
        for (i = (size_t){P}_N_FEATURES - k; i != 0u; --i) {{ /* counts down: fewer instructions */
            acc += (int32_t)*w++ * (int32_t)*x++;
        }}
        z = {p}_requantize(acc, {p}_whitening_multiplier[k], {p}_whitening_shift[k]);
        z = {p}_clamp(z, -{P}_ERR_CLAMP, {P}_ERR_CLAMP);
        total += z * z; /* <= 256 * 2047^2 < 2^31 */
    }}
    *score = total;
    return {P}_OK;
}}
"""
