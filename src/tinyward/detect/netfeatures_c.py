"""The network feature state machine of :mod:`.netfeatures` as C99 (one .h, one .c).

:func:`export_netfeatures_c` writes ``<prefix>.h`` and ``<prefix>.c``: fixed-size tables
(``static``-sized arrays inside a caller-owned state struct), no dynamic allocation, no
I/O, CRC-32 from a ``static const`` table. It is a transliteration of
:meth:`NetFeatureExtractor.update`, operation for operation. Given a trained extractor
(``state=``), ``<prefix>_init`` starts from its tables (``static const`` copies in
flash), so the device continues where training ended, as Python's scoring does.

Two builds. Default: statistics in ``double``; with ``-ffp-contract=off`` the features
equal Python's bit for bit (tests on real captures). ``-D<PREFIX>_FLOAT`` (a Cortex-M4F's
single-precision FPU): statistics in ``float``; every *time* stays ``double`` in both
builds, in arrays apart from the statistics, because float32 cannot hold Unix-epoch
seconds (128 s steps: the old float build disagreed with Python on 27 % of alarms). The
float build is bit-exact with its own reference, :mod:`.netfeatures_f32`.

Firmware feeds it one parsed IP packet at a time (timestamp, addresses, protocol, ports,
IP total length, with TCP options subtracted if the model was trained that way) and gets
the feature vector the detector expects. The header names every feature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tinyward.detect._c_harness import HOST_CFLAGS
from tinyward.detect.errors import DetectMisuse
from tinyward.detect.export_c import check_prefix
from tinyward.detect.netfeatures import (
    _C_DIR_STRIDE,
    _C_STRIDE,
    _H_STRIDE,
    _S_DIR_STRIDE,
    _S_STRIDE,
    FEATURE_NAMES,
    NetFeatureConfig,
    feature_names,
)
from tinyward.detect.pcap import Packet

if TYPE_CHECKING:
    from tinyward.detect.netfeatures import NetFeatureExtractor


@dataclass(frozen=True)
class NetFeatureFiles:
    header: Path
    source: Path
    prefix: str


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else c >> 1
        table.append(c)
    return table


# The C layout keeps times in double arrays of their own, apart from the statistics:
# Python's slots hold the last-update time first (and, per conversation direction, the
# last packet time at offset 6 of the direction block); C's do not.
C_H_STRIDE = _H_STRIDE - 1
C_C_DIR = _C_DIR_STRIDE - 1
C_C_STRIDE = 2 * C_C_DIR
C_S_STRIDE = _S_STRIDE - 1


def c_layout(state: NetFeatureExtractor) -> dict[str, list[float] | list[int]]:
    """The trained state split as the C struct holds it (times apart from statistics)."""
    h, c, s = state.hosts, state.convs, state.sockets
    out: dict[str, list[float] | list[int]] = {
        "host_tag": h.tags, "conv_tag": c.tags, "sock_tag": s.tags,
        "host_t": h.data[::_H_STRIDE], "conv_t": c.data[::_C_STRIDE],
        "sock_t": s.data[::_S_STRIDE],
    }
    conv_dir_t, conv, host, sock = [], [], [], []
    for i in range(len(c.tags)):
        slot = c.data[i * _C_STRIDE:(i + 1) * _C_STRIDE]
        for d in range(2):
            block = slot[1 + d * _C_DIR_STRIDE:1 + (d + 1) * _C_DIR_STRIDE]
            conv += block[:6] + block[7:]
            conv_dir_t.append(block[6])
    for i in range(len(h.tags)):
        host += h.data[i * _H_STRIDE + 1:(i + 1) * _H_STRIDE]
    for i in range(len(s.tags)):
        sock += s.data[i * _S_STRIDE + 1:(i + 1) * _S_STRIDE]
    out.update(conv_dir_t=conv_dir_t, host=host, conv=conv, sock=sock)
    return out


def _c_list(values: Sequence[object], per_line: int, fmt: str) -> str:
    items = [fmt.format(v) for v in values]
    return ",".join(
        ("\n    " if i % per_line == 0 else " ") + item for i, item in enumerate(items)
    )


def _double(x: float) -> str:
    # repr is the shortest decimal that reads back as the same double: exact in C too.
    text = repr(float(x))
    return text if any(ch in text for ch in ".en") else text + ".0"


def _initial_state(state: NetFeatureExtractor | None, P: str) -> str:
    """``static const`` copies of the trained tables (empty when no state is given).

    Statistics are written as doubles; in the float build the compiler rounds each to
    the nearest float, as the float32 mirror does."""
    if state is None:
        return ""
    out = ["/* The trained state (tables after the benign training stream); R() rounds a",
           " * double constant to real (to the nearest float in the float build). */",
           "#define R(x) ((real)(x))"]
    out.append(f"static const double INIT_LAST_TS = {_last_ts(state)};")
    for name, values in c_layout(state).items():
        if name.endswith("_tag"):
            out.append(f"static const uint32_t INIT_{name.upper()}[{len(values)}] = {{"
                       f"{_c_list(values, 6, '0x{:08x}u')}\n}};")
        else:
            kind, fmt = ("double", "{}") if name.endswith("_t") else ("real", "R({})")
            out.append(f"static const {kind} INIT_{name.upper()}[{len(values)}] = {{"
                       f"{_c_list([_double(x) for x in values], 3, fmt)}\n}};")
    return "\n".join(out) + "\n"


def _last_ts(state: NetFeatureExtractor) -> str:
    return "-INFINITY" if state.last_ts == -math.inf else _double(state.last_ts)


def _init_body(state: NetFeatureExtractor | None) -> str:
    if state is None:
        return "    memset(st, 0, sizeof *st);\n    st->last_ts = -INFINITY;"
    lines = ["    st->last_ts = INIT_LAST_TS;"]
    for name in ("host_tag", "conv_tag", "sock_tag", "host_t", "conv_t", "conv_dir_t", "sock_t",
                 "host", "conv", "sock"):
        lines.append(f"    memcpy(st->{name}, INIT_{name.upper()}, sizeof st->{name});")
    return "\n".join(lines)


def render_netfeatures_c(
    config: NetFeatureConfig, prefix: str = "tw_nf", state: NetFeatureExtractor | None = None
) -> tuple[str, str]:
    """Return (header, source) text for ``config``; ``{prefix}_init`` starts from the
    trained ``state`` (its tables as ``static const`` initial values), else empty.

    Raises:
        DetectMisuse: a prefix that is not a safe C identifier.
    """
    p = check_prefix(prefix)
    P = p.upper()
    if state is not None and state.config != config:
        raise DetectMisuse("the trained state has another configuration")
    fnames = feature_names(config)
    names = "\n".join(f" *   {i:2d} {name}" for i, name in enumerate(fnames))
    name_defines = "\n".join(f"#define {P}_F_{name.upper()} {i}" for i, name in enumerate(fnames))
    name_list = ",\n".join(f'    "{name}"' for name in fnames)
    start = "the trained state exported with this file" if state is not None else "empty tables"
    header = f"""\
/* {p}.h: tinyward's per-packet network features (generated; do not edit).
 *
 * Usage:
 *   static {p}_state st;            // ~{{bytes}} bytes
 *   {p}_init(&st);                    // starts from {start}
 *   for each IP packet:               // link layer removed, padding cut
 *     {p}_packet pkt = {{ts, src, dst, 4, proto, sport, dport, size}};
 *     {P}_REAL f[{P}_N_FEATURES];
 *     if ({p}_update(&st, &pkt, f) == {P}_OK) ... quantise f and score it ...
 *
 * Addresses and ports are only hashed (CRC-32) into keys of fixed-size, {config.ways}-way
 * set-associative tables (the least established slot evicted); they are never
 * feature values. Features, in order:
{names}
 */
#ifndef {P}_H
#define {P}_H
#include <stdint.h>
#include <stddef.h>
#ifdef __cplusplus
extern "C" {{
#endif

/* Times (packet and last-seen) are always double: float32 cannot hold Unix-epoch
 * seconds (128 s steps; the old float build disagreed with Python on 27 % of alarms).
 * Statistics are {P}_REAL: double (bit-exact with tinyward.detect.netfeatures) or, with
 * -D{P}_FLOAT, float for a single-precision FPU (bit-exact with its float32 mirror,
 * tinyward.detect.netfeatures_f32, with the same libm). */
#ifdef {P}_FLOAT
#define {P}_REAL float
#else
#define {P}_REAL double
#endif
#define {P}_N_FEATURES {len(FEATURE_NAMES)}
{name_defines}
extern const char *const {p}_feature_names[{P}_N_FEATURES];
#define {P}_HOST_SLOTS {config.host_slots}
#define {P}_CONV_SLOTS {config.conv_slots}
#define {P}_SOCK_SLOTS {config.socket_slots}
#define {P}_WAYS {config.ways}
#define {P}_HOST_BY_PAIR {int(config.host_by_pair)}  /* host statistics per (src, dst) */
#define {P}_HOST_STRIDE {C_H_STRIDE}   /* fast (w, ls, ss), slow (w, ls, ss), new sockets */
#define {P}_CONV_STRIDE {C_C_STRIDE}  /* per direction: fast, slow, inter-arrival (w, ls, ss) */
#define {P}_SOCK_STRIDE {C_S_STRIDE}  /* per direction: fast, slow (w, ls, ss) */

typedef enum {{
    {P}_OK = 0,
    {P}_ERR_NULL = 1,
    {P}_ERR_ADDR_LEN = 2
}} {p}_status;

typedef struct {{
    double ts;              /* seconds; must not run backwards (clamped if it does) */
    const uint8_t *src;     /* addr_len bytes, network order */
    const uint8_t *dst;
    uint8_t addr_len;       /* 4 (IPv4) or 16 (IPv6) */
    uint8_t proto;          /* IP protocol number */
    uint16_t sport, dport;  /* 0 unless TCP or UDP */
    uint32_t size;          /* IP total length (TCP options subtracted if trained so) */
}} {p}_packet;

typedef struct {{
    double last_ts;
    uint32_t host_tag[{P}_HOST_SLOTS];
    uint32_t conv_tag[{P}_CONV_SLOTS];
    uint32_t sock_tag[{P}_SOCK_SLOTS];
    double host_t[{P}_HOST_SLOTS];       /* last update of each slot */
    double conv_t[{P}_CONV_SLOTS];
    double conv_dir_t[2 * {P}_CONV_SLOTS];  /* last packet per direction (0: none) */
    double sock_t[{P}_SOCK_SLOTS];
    {P}_REAL host[{P}_HOST_SLOTS * {P}_HOST_STRIDE];
    {P}_REAL conv[{P}_CONV_SLOTS * {P}_CONV_STRIDE];
    {P}_REAL sock[{P}_SOCK_SLOTS * {P}_SOCK_STRIDE];
}} {p}_state;

void {p}_init({p}_state *st);
{p}_status {p}_update({p}_state *st, const {p}_packet *pkt, {P}_REAL out[{P}_N_FEATURES]);
const char *{p}_status_str({p}_status status);

#ifdef __cplusplus
}}
#endif
#endif /* {P}_H */
"""
    crc = ",".join(
        ("\n    " if i % 8 == 0 else " ") + f"0x{v:08x}u" for i, v in enumerate(_crc_table())
    )
    source = f"""\
/* {p}.c: see {p}.h (generated by tinyward; do not edit). */
#include "{p}.h"
#include <math.h>
#include <string.h>

typedef {P}_REAL real;
#ifdef {P}_FLOAT
#define POW2(x) powf(2.0f, (x))
#define LOG1P(x) log1pf(x)
#define SQRT(x) sqrtf(x)
#else
#define POW2(x) pow(2.0, (x))
#define LOG1P(x) log1p(x)
#define SQRT(x) sqrt(x)
#endif

const char *const {p}_feature_names[{P}_N_FEATURES] = {{
{name_list}
}};
{_initial_state(state, P)}
static const uint32_t crc_table[256] = {{{crc}
}};

static const real FAST = (real){config.fast!r};
static const real SLOW = (real){config.slow!r};
static const double SLOW_RANK = {config.slow!r};  /* eviction rank, double in both builds */
static const real NEWSOCK = (real){config.newsock_rate!r};
static const real JITTER = (real){config.jitter_rate!r};
static const real EPS = (real)1e-9;
static const real ONE = (real)1.0;
static const real MILLI = (real)1000.0;

static uint32_t crc32_bytes(const uint8_t *data, size_t n)
{{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {{
        c = crc_table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
    }}
    return c ^ 0xFFFFFFFFu;
}}

/* Index of the slot for key (in slots), taking a slot on a miss: an empty one (the
 * last empty in the set), else the least established: the smallest slow weight (the
 * sum of the slot's n_w slow-window packet counts at w_off, w_off + w_step, decayed to
 * now), ties by least recently updated (the first on full ties). A burst of one-packet
 * flows (weight ~1) then churns its own slots, not the established flows'. Computed in
 * double in both builds, in the same order as tinyward.detect.netfeatures._Table.find. */
static size_t find(uint32_t *tags, double *times, real *data, size_t slots, size_t stride,
                   size_t w_off, size_t w_step, size_t n_w,
                   const uint8_t *key, size_t key_len, double now, int *is_new)
{{
    uint32_t tag = crc32_bytes(key, key_len);
    if (tag == 0u) {{
        tag = 1u;
    }}
    size_t sets = slots / {P}_WAYS;
    size_t first = (size_t)(tag % (uint32_t)sets) * {P}_WAYS;
    size_t victim = first;
    int have_empty = 0;
    double best_w = INFINITY, best_t = INFINITY;
    for (size_t slot = first; slot < first + {P}_WAYS; slot++) {{
        if (tags[slot] == tag) {{
            *is_new = 0;
            return slot;
        }}
        if (tags[slot] == 0u) {{
            victim = slot;
            have_empty = 1;
        }} else if (!have_empty) {{
            double w = 0.0;
            for (size_t d = 0; d < n_w; d++) {{
                w += (double)data[slot * stride + w_off + d * w_step];
            }}
            double age = now - times[slot];
            if (!(age > 0.0)) {{
                age = 0.0;
            }}
            w = w * pow(2.0, -SLOW_RANK * age);
            if (w < best_w || (w == best_w && times[slot] < best_t)) {{
                victim = slot;
                best_w = w;
                best_t = times[slot];
            }}
        }}
    }}
    tags[victim] = tag;
    for (size_t i = 0; i < stride; i++) {{
        data[victim * stride + i] = (real)0;
    }}
    times[victim] = now;
    *is_new = 1;
    return victim;
}}

static void mean_std(real w, real ls, real ss, real *mean, real *std)
{{
    if (w < EPS) {{
        *mean = (real)0;
        *std = (real)0;
        return;
    }}
    real m = ls / w;
    real var = ss / w - m * m;
    *mean = m;
    *std = var > 0 ? SQRT(var) : (real)0;
}}

/* Age a two-direction slot (conversation or socket) to `now`: both directions' fast and
   slow sums decay, then the packet adds to direction `dir`. Same operations, same order as
   Python's _age_pair. */
static void age_pair(real *slot, double *last, size_t stride, int dir, double now, real size,
                     real **mine, real **other)
{{
    const real dt = (real)(now - *last);
    *last = now;
    const real df = POW2(-FAST * dt);
    const real ds = POW2(-SLOW * dt);
    real *m = &slot[(size_t)dir * stride];
    real *o = &slot[(size_t)(1 - dir) * stride];
    for (size_t i = 0; i < 3; i++) {{
        m[i] *= df;
        m[3 + i] *= ds;
    }}
    for (size_t i = 0; i < 3; i++) {{
        o[i] *= df;
        o[3 + i] *= ds;
    }}
    m[0] += ONE;
    m[1] += size;
    m[2] += size * size;
    m[3] += ONE;
    m[4] += size;
    m[5] += size * size;
    *mine = m;
    *other = o;
}}

void {p}_init({p}_state *st)
{{
{_init_body(state)}
}}

const char *{p}_status_str({p}_status status)
{{
    switch (status) {{
    case {P}_OK: return "ok";
    case {P}_ERR_NULL: return "null pointer";
    case {P}_ERR_ADDR_LEN: return "address length must be 4 or 16";
    }}
    return "unknown status";
}}

{p}_status {p}_update({p}_state *st, const {p}_packet *pkt, real out[{P}_N_FEATURES])
{{
    if (st == NULL || pkt == NULL || out == NULL || pkt->src == NULL || pkt->dst == NULL) {{
        return {P}_ERR_NULL;
    }}
    const size_t n = pkt->addr_len;
    if (n != 4u && n != 16u) {{
        return {P}_ERR_ADDR_LEN;
    }}
    double now = pkt->ts;
    if (now < st->last_ts) {{
        now = st->last_ts;
    }}
    st->last_ts = now;
    const real size = (real)pkt->size;
    size_t k = 0;
    out[k++] = size;

    /* socket key: the two (address, port) endpoints in byte order, then protocol */
    uint8_t a[18], b[18], key[37];
    memcpy(a, pkt->src, n);
    a[n] = (uint8_t)(pkt->sport >> 8);
    a[n + 1] = (uint8_t)(pkt->sport & 0xFFu);
    memcpy(b, pkt->dst, n);
    b[n] = (uint8_t)(pkt->dport >> 8);
    b[n + 1] = (uint8_t)(pkt->dport & 0xFFu);
    const int sdir = memcmp(a, b, n + 2) <= 0 ? 0 : 1;
    memcpy(key, sdir == 0 ? a : b, n + 2);
    memcpy(key + n + 2, sdir == 0 ? b : a, n + 2);
    key[2 * n + 4] = pkt->proto;
    int snew = 0, unused = 0;
    const size_t sslot = find(st->sock_tag, st->sock_t, st->sock, {P}_SOCK_SLOTS, {P}_SOCK_STRIDE,
                              3u, {_S_DIR_STRIDE}u, 2u, key, 2 * n + 5, now, &snew);

    /* host: the directed pair (source then destination), or the source alone */
    memcpy(key, pkt->src, n);
    memcpy(key + n, pkt->dst, n);
    const size_t hslot = find(st->host_tag, st->host_t, st->host, {P}_HOST_SLOTS, {P}_HOST_STRIDE,
                              3u, 0u, 1u, key, {P}_HOST_BY_PAIR ? 2 * n : n, now, &unused);
    real *h = &st->host[hslot * {P}_HOST_STRIDE];
    const real dt = (real)(now - st->host_t[hslot]);
    st->host_t[hslot] = now;
    real df = POW2(-FAST * dt);
    real ds = POW2(-SLOW * dt);
    const real dn = POW2(-NEWSOCK * dt);
    for (size_t win = 0; win < 2; win++) {{
        real *s = &h[3 * win];
        const real decay = win == 0 ? df : ds;
        s[0] = s[0] * decay + ONE;
        s[1] = s[1] * decay + size;
        s[2] = s[2] * decay + size * size;
        real mean, std;
        mean_std(s[0], s[1], s[2], &mean, &std);
        out[k++] = LOG1P(s[0]);
        out[k++] = mean;
        out[k++] = std;
    }}
    h[6] = h[6] * dn + (snew ? ONE : (real)0);
    out[k++] = LOG1P(h[6]);

    /* conversation (unordered address pair), one block per direction */
    const int cdir = memcmp(pkt->src, pkt->dst, n) <= 0 ? 0 : 1;
    memcpy(key, cdir == 0 ? pkt->src : pkt->dst, n);
    memcpy(key + n, cdir == 0 ? pkt->dst : pkt->src, n);
    int cnew = 0;
    const size_t cslot = find(st->conv_tag, st->conv_t, st->conv, {P}_CONV_SLOTS,
                              {P}_CONV_STRIDE, 3u, {C_C_DIR}u, 2u, key, 2 * n, now, &cnew);
    if (cnew) {{
        st->conv_dir_t[2 * cslot] = 0.0;
        st->conv_dir_t[2 * cslot + 1] = 0.0;
    }}
    real *mine, *other;
    age_pair(&st->conv[cslot * {P}_CONV_STRIDE], &st->conv_t[cslot], {C_C_DIR}u, cdir, now, size,
             &mine, &other);
    for (size_t off = 0; off < 6; off += 3) {{
        real m1, s1, m2, s2;
        mean_std(mine[off], mine[off + 1], mine[off + 2], &m1, &s1);
        mean_std(other[off], other[off + 1], other[off + 2], &m2, &s2);
        out[k++] = LOG1P({P}_HOST_BY_PAIR ? other[off] : mine[off]);
        out[k++] = SQRT(m1 * m1 + m2 * m2);
        out[k++] = SQRT(s1 * s1 + s2 * s2);
    }}
    /* inter-arrival time in this direction, log1p(milliseconds) */
    real *iat = &mine[6];
    double *last_dir = &st->conv_dir_t[2 * cslot + (size_t)cdir];
    if (*last_dir > 0.0) {{
        const real gap = (real)(now - *last_dir);
        const real dj = POW2(-JITTER * gap);
        const real x = LOG1P(gap * MILLI);
        iat[0] = iat[0] * dj + ONE;
        iat[1] = iat[1] * dj + x;
        iat[2] = iat[2] * dj + x * x;
    }}
    *last_dir = now > 0.0 ? now : 1e-9;
    mean_std(iat[0], iat[1], iat[2], &out[k], &out[k + 1]);
    k += 2;

    /* socket statistics */
    age_pair(&st->sock[sslot * {P}_SOCK_STRIDE], &st->sock_t[sslot], {_S_DIR_STRIDE}u, sdir, now,
             size, &mine, &other);
    for (size_t off = 0; off < 6; off += 3) {{
        real mean, std;
        mean_std(mine[off], mine[off + 1], mine[off + 2], &mean, &std);
        out[k++] = LOG1P(mine[off]);
        out[k++] = mean;
        out[k++] = std;
    }}
    {{
        real m1, s1, m2, s2;
        mean_std(mine[0], mine[1], mine[2], &m1, &s1);
        mean_std(other[0], other[1], other[2], &m2, &s2);
        out[k++] = SQRT(m1 * m1 + m2 * m2);
        out[k++] = SQRT(s1 * s1 + s2 * s2);
    }}
    return {P}_OK;
}}
"""
    return header, source


def c_state_bytes(config: NetFeatureConfig) -> int:
    """Bytes of ``<prefix>_state``: per slot a uint32 tag, double times (one per slot, two
    more per conversation) and ``real`` statistics (8 bytes, or 4 with ``real_bytes=4``
    for the float build); plus the last packet time."""
    return c_state_bytes_for(config, 8)


def c_state_bytes_for(config: NetFeatureConfig, real_bytes: int) -> int:
    from tinyward.detect.netfeatures import NetFeatureExtractor

    return NetFeatureExtractor(config).state_bytes(real_bytes)


def export_netfeatures_c(
    out_dir: Path,
    config: NetFeatureConfig | None = None,
    prefix: str = "tw_nf",
    state: NetFeatureExtractor | None = None,
) -> NetFeatureFiles:
    """Write ``<prefix>.h`` and ``<prefix>.c`` into ``out_dir`` (created if missing).

    With ``state`` (a trained extractor), ``<prefix>_init`` starts from its tables, so
    the device continues from where training ended, as Python's scoring does.

    Raises:
        DetectMisuse: a prefix that is not a safe C identifier, or a state whose
            configuration is not ``config``.
    """
    if config is None:
        config = state.config if state is not None else NetFeatureConfig()
    header, source = render_netfeatures_c(config, prefix, state)
    header = header.replace(
        "~{bytes}", f"{c_state_bytes(config)} (double) / {c_state_bytes_for(config, 4)} (float)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    h, c = out_dir / f"{prefix}.h", out_dir / f"{prefix}.c"
    h.write_text(header, encoding="utf-8")
    c.write_text(source, encoding="utf-8")
    return NetFeatureFiles(h, c, prefix)


# ----------------------------------------------------------------------------- host harness
# Not part of the export (it uses stdio and malloc): drives the exported functions from
# packed records on stdin, for the bit-exactness test and the C speed benchmark.
RECORD = "<dBBHHI16s16s"  # ts, addr_len, proto, sport, dport, size, src, dst


def _harness_source(prefix: str) -> str:
    P = prefix.upper()
    return f"""\
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "{prefix}.h"

typedef struct {{ {prefix}_packet pkt; uint8_t src[16], dst[16]; }} rec;

static size_t read_all(rec **out)
{{
    size_t cap = 1024, n = 0;
    rec *r = malloc(cap * sizeof *r);
    unsigned char buf[50];
    while (r != NULL && fread(buf, 1, sizeof buf, stdin) == sizeof buf) {{
        if (n == cap) {{
            cap *= 2;
            rec *bigger = realloc(r, cap * sizeof *r);
            if (bigger == NULL) {{ free(r); return 0; }}
            r = bigger;
        }}
        rec *x = &r[n++];
        memcpy(&x->pkt.ts, buf, 8);
        x->pkt.addr_len = buf[8];
        x->pkt.proto = buf[9];
        memcpy(&x->pkt.sport, buf + 10, 2);
        memcpy(&x->pkt.dport, buf + 12, 2);
        memcpy(&x->pkt.size, buf + 14, 4);
        memcpy(x->src, buf + 18, 16);
        memcpy(x->dst, buf + 34, 16);
    }}
    *out = r;
    return n;
}}

int main(int argc, char **argv)
{{
    static {prefix}_state st;
    rec *r = NULL;
    size_t n = read_all(&r);
    {P}_REAL f[{P}_N_FEATURES];
    {prefix}_init(&st);
    if (argc > 2 && strcmp(argv[1], "bench") == 0) {{
        long repeats = strtol(argv[2], NULL, 10);
        double sum = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long k = 0; k < repeats; k++) {{
            {prefix}_init(&st);
            for (size_t i = 0; i < n; i++) {{
                r[i].pkt.src = r[i].src;
                r[i].pkt.dst = r[i].dst;
                if ({prefix}_update(&st, &r[i].pkt, f) != {P}_OK) return 2;
                sum += (double)f[{P}_N_FEATURES - 1];
            }}
        }}
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        printf("%.1f %g\\n", (double)n * (double)repeats / s, sum);
        free(r);
        return 0;
    }}
    for (size_t i = 0; i < n; i++) {{
        r[i].pkt.src = r[i].src;
        r[i].pkt.dst = r[i].dst;
        {prefix}_status status = {prefix}_update(&st, &r[i].pkt, f);
        if (status != {P}_OK) {{
            fprintf(stderr, "packet %zu: %s\\n", i, {prefix}_status_str(status));
            return 2;
        }}
        double d[{P}_N_FEATURES];
        for (size_t j = 0; j < {P}_N_FEATURES; j++) d[j] = (double)f[j];
        fwrite(d, sizeof d[0], {P}_N_FEATURES, stdout);
    }}
    free(r);
    return 0;
}}
"""


def pack_packets(packets: list[Packet], time_shift: float = 0.0) -> bytes:
    """Packed records for the harness (timestamps shifted exactly as Python does)."""
    import struct

    record = struct.Struct(RECORD)
    return b"".join(
        record.pack(p.ts + time_shift, len(p.src), p.proto, p.sport, p.dport, p.size, p.src, p.dst)
        for p in packets
    )


def build_netfeatures_harness(
    work_dir: Path,
    config: NetFeatureConfig | None = None,
    prefix: str = "tw_nf",
    cc: str = "gcc",
    extra_flags: tuple[str, ...] = (),
    state: NetFeatureExtractor | None = None,
) -> Path:
    """Export the C features into ``work_dir`` and compile the harness; return its path.

    Raises:
        DetectMisuse: no C compiler, or the code does not compile (message has gcc's output).
    """
    import shutil
    import subprocess

    if shutil.which(cc) is None:
        raise DetectMisuse(f"no C compiler {cc!r} on PATH (run scripts/install-system-deps.sh)")
    files = export_netfeatures_c(work_dir, config, prefix, state)
    main = Path(work_dir) / "harness.c"
    main.write_text(_harness_source(prefix), encoding="utf-8")
    exe = Path(work_dir) / "nf_harness"
    done = subprocess.run(  # noqa: S603 - fixed argv: the compiler, our flags and files
        [
            cc,
            *HOST_CFLAGS,
            *extra_flags,
            "-I",
            str(work_dir),
            str(files.source),
            str(main),
            "-o",
            str(exe),
            "-lm",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise DetectMisuse(f"the network feature C does not compile:\n{done.stderr}")
    return exe
