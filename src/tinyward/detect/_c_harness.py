"""A host-side C harness around an exported detector, for tests and the C benchmark.

It is not part of the export (it uses stdio and malloc); it drives the exported
functions from binary files on stdin:

* ``score``: int8 vectors in, native int32 scores out; also checks that
  ``<prefix>_is_anomaly`` agrees with ``score > THRESHOLD`` and exits 3 if not.
* ``quantize``: float32 vectors in, int8 vectors out.
* ``bench REPEATS``: int8 vectors in; scores them REPEATS times and prints
  ``vectors_per_second checksum``.
* ``sizes``: prints N_FEATURES.
* ``selftest``: calls every function with bad arguments and prints one status code per
  line (see ``SELFTEST_EXPECTED``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tinyward.detect.errors import DetectMisuse

#: Flags of every host build of exported C (detector and packet features): strict C99, no
#: warning let through, and no fused multiply-add, so double arithmetic is the same as
#: Python's (the packet features are bit-exact only with it).
HOST_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror", "-O2",
               "-ffp-contract=off")

# What ``selftest`` must print: NULL features, NULL score, NULL flag, wrong length, NaN,
# +inf (saturates, OK), -inf (OK), a good call, and the text of an unknown status.
SELFTEST_EXPECTED = ["1", "1", "1", "2", "3", "0 127", "0 -127", "0", "unknown status"]


def harness_source(prefix: str) -> str:
    P = prefix.upper()
    return f"""\
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "{prefix}.h"

static int run_score(void)
{{
    int8_t q[{P}_N_FEATURES];
    while (fread(q, 1, sizeof q, stdin) == sizeof q) {{
        int32_t score = 0, score2 = 0;
        bool alarm = false;
        if ({prefix}_score(q, &score) != {P}_OK) return 2;
        if ({prefix}_is_anomaly(q, &alarm, &score2) != {P}_OK) return 2;
        if (score2 != score || alarm != (score > {P}_THRESHOLD)) return 3;
        if (fwrite(&score, sizeof score, 1, stdout) != 1) return 4;
    }}
    return 0;
}}

static int run_quantize(void)
{{
    float x[{P}_N_FEATURES];
    int8_t q[{P}_N_FEATURES];
    while (fread(x, sizeof x[0], {P}_N_FEATURES, stdin) == (size_t){P}_N_FEATURES) {{
        {prefix}_status st = {prefix}_quantize(x, {P}_N_FEATURES, q);
        if (st != {P}_OK) {{
            fprintf(stderr, "%s\\n", {prefix}_status_string(st));
            return 2;
        }}
        if (fwrite(q, 1, sizeof q, stdout) != sizeof q) return 4;
    }}
    return 0;
}}

static int run_bench(long repeats)
{{
    size_t cap = 1u << 16, n = 0, i;
    int8_t *buf = malloc(cap * {P}_N_FEATURES);
    struct timespec t0, t1;
    uint32_t checksum = 0;
    long r;
    double seconds;
    if (buf == NULL) return 5;
    while (fread(buf + n * {P}_N_FEATURES, 1, {P}_N_FEATURES, stdin) == (size_t){P}_N_FEATURES) {{
        if (++n == cap) {{
            int8_t *bigger = realloc(buf, 2 * cap * {P}_N_FEATURES);
            if (bigger == NULL) {{ free(buf); return 5; }}
            buf = bigger;
            cap *= 2;
        }}
    }}
    if (n == 0) {{ free(buf); return 6; }}
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (r = 0; r < repeats; ++r) {{
        for (i = 0; i < n; ++i) {{
            int32_t score = 0;
            (void){prefix}_score(buf + i * {P}_N_FEATURES, &score);
            checksum += (uint32_t)score;
        }}
    }}
    clock_gettime(CLOCK_MONOTONIC, &t1);
    seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%.1f %lu\\n", (double)n * (double)repeats / seconds, (unsigned long)checksum);
    free(buf);
    return 0;
}}

static int run_selftest(void)
{{
    int8_t q[{P}_N_FEATURES] = {{0}};
    float x[{P}_N_FEATURES] = {{0.0f}};
    int32_t score = 0;
    bool alarm = false;
    volatile float zero = 0.0f;
    {prefix}_status status;
    printf("%d\\n", (int){prefix}_score(NULL, &score));
    printf("%d\\n", (int){prefix}_score(q, NULL));
    printf("%d\\n", (int){prefix}_is_anomaly(q, NULL, NULL));
    printf("%d\\n", (int){prefix}_quantize(x, {P}_N_FEATURES - 1, q));
    x[0] = zero / zero;
    printf("%d\\n", (int){prefix}_quantize(x, {P}_N_FEATURES, q));
    x[0] = 1.0f / zero;
    status = {prefix}_quantize(x, {P}_N_FEATURES, q); /* before reading q[0] */
    printf("%d %d\\n", (int)status, (int)q[0]);
    x[0] = -1.0f / zero;
    status = {prefix}_quantize(x, {P}_N_FEATURES, q); /* before reading q[0] */
    printf("%d %d\\n", (int)status, (int)q[0]);
    printf("%d\\n", (int){prefix}_is_anomaly(q, &alarm, NULL));
    printf("%s\\n", {prefix}_status_string(({prefix}_status)99));
    return 0;
}}

int main(int argc, char **argv)
{{
    if (argc >= 2 && strcmp(argv[1], "score") == 0) return run_score();
    if (argc >= 2 && strcmp(argv[1], "quantize") == 0) return run_quantize();
    if (argc >= 3 && strcmp(argv[1], "bench") == 0) return run_bench(atol(argv[2]));
    if (argc >= 2 && strcmp(argv[1], "selftest") == 0) return run_selftest();
    if (argc >= 2 && strcmp(argv[1], "sizes") == 0) {{
        printf("%d\\n", {P}_N_FEATURES);
        return 0;
    }}
    fprintf(stderr, "usage: %s score|quantize|bench REPEATS|sizes\\n", argv[0]);
    return 1;
}}
"""


def build_host_harness(
    source: Path, prefix: str, work_dir: Path, cc: str = "gcc", extra_flags: tuple[str, ...] = ()
) -> Path:
    """Compile ``source`` (the exported .c) with the harness using strict warnings.

    Raises:
        DetectMisuse: no C compiler, or the code does not compile (the output is shown).
    """
    if shutil.which(cc) is None:
        raise DetectMisuse(f"C compiler {cc!r} not found (scripts/install-system-deps.sh)")
    work_dir.mkdir(parents=True, exist_ok=True)
    main_c = work_dir / "harness_main.c"
    main_c.write_text(harness_source(prefix), encoding="ascii")
    exe = work_dir / ("harness" + "".join(f.strip("-=,") for f in extra_flags)[:40])
    cmd = [cc, *HOST_CFLAGS, *extra_flags, "-I", str(source.parent), str(source), str(main_c),
           "-o", str(exe)]
    # Fixed argv: the compiler we found, our flags and our generated files; no shell.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
    if done.returncode != 0:
        raise DetectMisuse(f"compiling the export failed:\n{' '.join(cmd)}\n{done.stderr}")
    return exe
