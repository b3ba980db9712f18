"""Cortex-M4 figures of the exported sensor features, for 8 (SKAB) and 36 channels.

    .venv/bin/python benchmarks/sensor_c_m4.py

For each channel count: the state bytes; ``arm-none-eabi-size`` of the header compiled
alone (-mcpu=cortex-m4 -mthumb -Os; functions external, one state instance, so bss is
the state) with and without the trained replay history; the size of a linked
bare-metal firmware (newlib-nano libm for log/log1p/sqrt, libgcc's soft double); and
Thumb-2 instructions per window under QEMU (mps2-an386, ``-icount shift=0`` so one
instruction is one virtual nanosecond, read from the CMSDK timer at 25 MHz: 40
instructions a tick, checked against a 20M-instruction loop). QEMU models no cycles.
The 36 channels are synthetic (correlated channels, an on/off and a coarse one).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyward.detect.cortex_m import _LINKER_SCRIPT, _STARTUP, arm_sizes
from tinyward.detect.sensorfeatures import SKAB_CHANNELS, SensorFeatureExtractor, read_sensor_csv
from tinyward.detect.sensorfeatures_c import (
    export_sensorfeatures_c,
    ops_per_window,
    sizing_source,
)

ROOT = Path(__file__).resolve().parents[1]
SKAB = ROOT / ".." / "shared" / "data" / "skab"
M4 = ["-mcpu=cortex-m4", "-mthumb", "-Os"]
VARIANTS = (("trained history", ()), ("empty history", ("-DTW_SF_NO_TRAINED_HISTORY",)))

_MAIN = """\
#include <stdint.h>
#include "tw_sf.h"
#include "rows.h"
void semihost_write(const char *text);
#define TIMER_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER_RELOAD (*(volatile uint32_t *)0x40000008u)
static tw_sf_state st;
static void hex(char *p, uint32_t v)
{
    const char *h = "0123456789abcdef";
    int i;
    for (i = 0; i < 8; i++) p[i] = h[(v >> (28 - 4 * i)) & 15u];
}
int main(void)
{
    static char line[24];
    double f[TW_SF_N_FEATURES];
    uint32_t t0, t1, windows = 0, i;
    tw_sf_init(&st);
    TIMER_RELOAD = 0xFFFFFFFFu;
    TIMER_VALUE = 0xFFFFFFFFu;
    TIMER_CTRL = 1u;
    t0 = TIMER_VALUE;
    for (i = 0; i < N_ROWS; i++) {
        if (tw_sf_push(&st, rows[i], f) == TW_SF_READY) windows++;
    }
    t1 = TIMER_VALUE;
    line[0] = 't'; hex(line + 1, t0 - t1); line[9] = 'w'; hex(line + 10, windows);
    line[18] = '\\n'; line[19] = 0;
    semihost_write(line);
    return 0;
}
"""


def synthetic(n: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    factors = np.stack([np.sin(t / 300.0), np.cos(t / 170.0), np.sin(t / 47.0 + 1.0)], axis=1)
    values = factors @ rng.normal(size=(3, channels)) + 0.05 * rng.normal(size=(n, channels))
    values += rng.normal(size=channels) * 5
    values[:, 0] = (factors[:, 0] > 0.3).astype(float)
    values[:, 1] = np.round(values[:, 1] * 10) / 10
    return values


def run(cmd: list[str], timeout: float = 600) -> str:
    # Fixed argv built here: the tool chain, qemu and our files; no shell.
    done = subprocess.run(  # noqa: S603
        cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout + done.stderr


def figures(extractor: SensorFeatureExtractor, rows: np.ndarray, work: Path) -> None:
    c = len(extractor.channels)
    cfg = extractor.config
    files = export_sensorfeatures_c(extractor, work)
    print(f"\n{c} channels, window {cfg.window}, step {cfg.step}, history {cfg.history}, "
          f"{'v2' if files.v2 else 'v1'} extractor, {files.n_features} features")
    print(f"  state: {files.state_bytes} B = {files.formula}; replay search "
          f"{ops_per_window(c, cfg.window, cfg.history, cfg.min_replay_lag)} "
          "abs-difference-adds per window")
    (work / "lib.c").write_text(sizing_source("tw_sf"))
    for label, flags in VARIANTS:
        s = arm_sizes(work / "lib.c", work / "o", flags)
        print(f"  header alone, {label}: text {s.text} data {s.data} bss {s.bss}")
    (work / "rows.h").write_text(
        f"#define N_ROWS {len(rows)}u\nstatic const double rows[{len(rows)}][{c}] = {{\n"
        + ",\n".join("{" + ",".join(float(v).hex() for v in r) + "}" for r in rows)
        + "\n};\n"
    )
    (work / "main.c").write_text(_MAIN)
    (work / "startup.c").write_text(_STARTUP)
    (work / "link.ld").write_text(_LINKER_SCRIPT)
    cc = "arm-none-eabi-gcc"
    run([cc, "-std=gnu99", "-ffreestanding", "-fno-tree-loop-distribute-patterns", *M4, "-c",
         str(work / "startup.c"), "-o", str(work / "startup.o")])
    for label, flags in VARIANTS:
        elf = work / f"fw{len(flags)}.elf"
        run([cc, "-std=c99", *M4, *flags, "-ffunction-sections", "-fdata-sections",
             "-Wl,--gc-sections", "-nostdlib", "-T", str(work / "link.ld"), "-I", str(work),
             str(work / "startup.o"), str(work / "main.c"), "-lm", "-lc", "-lgcc", "-o", str(elf)])
        size = run(["arm-none-eabi-size", str(elf)]).splitlines()[1].split()
        text, data, bss = (int(v) for v in size[:3])
        print(f"  linked firmware (libm, soft double), {label}: text {text} (of which "
              f"{rows.size * 8} B test rows) data {data} bss {bss}")
    out = run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
               "-serial", "none", "-semihosting-config", "enable=on,target=native",
               "-icount", "shift=0", "-kernel", str(work / "fw0.elf")], timeout=1800)
    match = re.search(r"t([0-9a-f]{8})w([0-9a-f]{8})", out)
    if not match:
        sys.exit(f"no figure from QEMU: {out}")
    ticks, windows = int(match.group(1), 16), int(match.group(2), 16)
    print(f"  QEMU: {windows} windows from {len(rows)} rows, ~{ticks * 40 / windows / 1e6:.1f} M "
          "Thumb-2 instructions per window (10 pushes included)")


def main() -> None:
    e8 = SensorFeatureExtractor(SKAB_CHANNELS)
    e8.fit(read_sensor_csv(SKAB / "anomaly-free" / "anomaly-free.csv").values)
    e36 = SensorFeatureExtractor([f"s{i}" for i in range(36)])
    e36.fit([synthetic(1500, 36, 1), synthetic(1200, 36, 2)])
    with tempfile.TemporaryDirectory() as tmp:
        figures(e8, read_sensor_csv(SKAB / "valve1" / "0.csv").values[:200], Path(tmp) / "c8")
        figures(e36, synthetic(100, 36, 7), Path(tmp) / "c36")


if __name__ == "__main__":
    main()
