"""Build an exported detector for a Cortex-M4 and count its instructions under QEMU.

* :func:`arm_sizes` cross-compiles the exported ``.c`` alone with Debian's
  ``arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os -c`` (strict warnings on) and returns
  ``arm-none-eabi-size``'s text/data/bss of the object file: flash is text + data, static
  RAM is data + bss.
* :func:`qemu_instructions` links the export with a bare-metal main (vector table,
  semihosting for output and exit; no C library) for QEMU's ``mps2-an386`` board
  (Cortex-M4), runs it twice - once scoring nothing, once scoring ``runs x n`` vectors -
  with QEMU single-stepping and logging every executed instruction, and divides the
  difference. The count is exact Thumb-2 instructions per inference (including the
  few instructions of the calling loop); QEMU does not model cycles, so no cycle figure
  is claimed. The firmware prints a checksum of its scores, compared with Python's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyward.detect.errors import DetectMisuse

ARM_CC = "arm-none-eabi-gcc"
ARM_SIZE = "arm-none-eabi-size"
QEMU = "qemu-system-arm"
M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-Os")
STRICT = ("-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror")


@dataclass(frozen=True)
class Sizes:
    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DetectMisuse(f"{tool} not found; run scripts/install-system-deps.sh")
    return path


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # Fixed argv built here (the toolchain, qemu, our files); no shell.
    done = subprocess.run(  # noqa: S603
        cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise DetectMisuse(f"command failed: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return done


def arm_sizes(source: Path, work_dir: Path, extra_flags: tuple[str, ...] = ()) -> Sizes:
    """Cross-compile ``source`` for Cortex-M4 and return the object's section sizes.

    Raises:
        DetectMisuse: the tool chain is missing or the code does not compile cleanly.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    obj = work_dir / (source.stem + "".join(f.strip("-=") for f in extra_flags)[:40] + ".o")
    _run([_need(ARM_CC), *STRICT, *M4_FLAGS, *extra_flags, "-c", str(source), "-o", str(obj)])
    out = _run([_need(ARM_SIZE), str(obj)]).stdout.splitlines()
    text, data, bss = (int(v) for v in out[1].split()[:3])
    return Sizes(text=text, data=data, bss=bss)


def arm_stack_usage(source: Path, work_dir: Path) -> dict[str, int]:
    """Stack bytes of each exported function for Cortex-M4 at -Os (gcc -fstack-usage).

    Every function is "static" in gcc's sense (no variable-size frames). The deepest
    call is ``<prefix>_is_anomaly`` calling ``<prefix>_score``: add the two.

    Raises:
        DetectMisuse: the tool chain is missing or the code does not compile cleanly.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    obj = work_dir / (source.stem + "-stack.o")
    _run([_need(ARM_CC), *STRICT, *M4_FLAGS, "-fstack-usage", "-c", str(source), "-o", str(obj)])
    usage: dict[str, int] = {}
    for line in obj.with_suffix(".su").read_text().splitlines():
        where, size, kind = line.split("\t")
        if kind.strip() != "static":
            raise DetectMisuse(f"{where}: stack use is {kind.strip()}, not a fixed frame")
        usage[where.rsplit(":", 1)[-1]] = int(size)
    return usage


_LINKER_SCRIPT = """\
MEMORY
{
  FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
  RAM (rwx)  : ORIGIN = 0x20000000, LENGTH = 1M
}
SECTIONS
{
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) } > FLASH
  .data : { *(.data*) } > RAM
  .bss  : { _sbss = .; *(.bss*) *(COMMON) _ebss = .; } > RAM
  _estack = ORIGIN(RAM) + LENGTH(RAM);
}
"""

_STARTUP = """\
#include <stdint.h>
extern uint32_t _sbss, _ebss, _estack;
int main(void);
void semihost_exit(void);
static void reset_handler(void)
{
    uint32_t *p;
    for (p = &_sbss; p < &_ebss; ++p) *p = 0;
    (void)main();
    semihost_exit();
    for (;;) {}
}
static void fault_handler(void) { semihost_exit(); for (;;) {} }
__attribute__((section(".vectors"), used))
static const void *const vector_table[16] = {
    &_estack, (const void *)reset_handler, (const void *)fault_handler, (const void *)fault_handler,
    (const void *)fault_handler, (const void *)fault_handler, (const void *)fault_handler,
};
static uint32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
void semihost_write(const char *text) { (void)semihost(0x04u, text); }
void semihost_exit(void) { (void)semihost(0x18u, (const void *)0x20026u); }
"""


def _firmware_main(prefix: str, vectors: np.ndarray, runs: int) -> str:
    P = prefix.upper()
    rows = ",\n".join("{" + ",".join(str(int(v)) for v in row) + "}" for row in vectors)
    return f"""\
#include <stdint.h>
#include "{prefix}.h"
void semihost_write(const char *text);
static const int8_t vectors[{len(vectors)}][{P}_N_FEATURES] = {{
{rows}
}};
int main(void)
{{
    static char line[32];
    const char *hex = "0123456789abcdef";
    uint32_t checksum = 0;
    int32_t score = 0;
    unsigned r, i;
    for (r = 0; r < {runs}u; ++r) {{
        for (i = 0; i < {len(vectors)}u; ++i) {{
            if ({prefix}_score(vectors[i], &score) != {P}_OK) return 1;
            checksum = checksum * 31u + (uint32_t)score;
        }}
    }}
    line[0] = 'c'; line[1] = '=';
    for (i = 0; i < 8u; ++i) line[2 + i] = hex[(checksum >> (28u - 4u * i)) & 15u];
    line[10] = '\\n'; line[11] = 0;
    semihost_write(line);
    return 0;
}}
"""


def checksum(scores: np.ndarray, runs: int) -> int:
    """The firmware's checksum of ``runs`` passes over ``scores`` (for comparison)."""
    value = 0
    for _ in range(runs):
        for s in scores:
            value = (value * 31 + (int(s) & 0xFFFFFFFF)) & 0xFFFFFFFF
    return value


@dataclass(frozen=True)
class QemuCount:
    instructions_per_inference: float
    inferences: int
    checksum_ok: bool
    firmware_sizes: Sizes


def qemu_instructions(
    source: Path, prefix: str, vectors_q: np.ndarray, expected_scores: np.ndarray,
    work_dir: Path, runs: int = 2, model_flags: tuple[str, ...] = (),
) -> QemuCount:
    """Count Cortex-M4 instructions per inference of the exported ``source`` under QEMU.

    ``model_flags`` are added when compiling the export (after ``-Os``; e.g. ``("-O2",)``).

    Raises:
        DetectMisuse: the tool chain or QEMU is missing, or a build or run fails.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    cc = _need(ARM_CC)
    _need(QEMU)
    (work_dir / "link.ld").write_text(_LINKER_SCRIPT)
    (work_dir / "startup.c").write_text(_STARTUP)
    model_o = work_dir / "model.o"
    _run([cc, *STRICT, *M4_FLAGS, *model_flags, f"-D{prefix.upper()}_NO_FLOAT", "-c", str(source),
          "-o", str(model_o)])
    start_o = work_dir / "startup.o"
    _run([cc, "-std=gnu99", "-Wall", "-Werror", "-ffreestanding",
          "-fno-tree-loop-distribute-patterns", *M4_FLAGS, "-c", str(work_dir / "startup.c"),
          "-o", str(start_o)])
    counts: dict[int, int] = {}
    outputs: dict[int, str] = {}
    sizes = Sizes(0, 0, 0)
    for n_runs in (0, runs):
        main_c = work_dir / f"main_{n_runs}.c"
        main_c.write_text(_firmware_main(prefix, vectors_q, n_runs))
        elf = work_dir / f"fw_{n_runs}.elf"
        _run([cc, "-std=c99", "-Wall", "-Werror", "-ffreestanding", *M4_FLAGS,
              "-I", str(source.parent), "-nostdlib", "-T", str(work_dir / "link.ld"),
              str(start_o), str(model_o), str(main_c), "-lgcc", "-o", str(elf)])
        if n_runs:
            out = _run([_need(ARM_SIZE), str(elf)]).stdout.splitlines()
            text, data, bss = (int(v) for v in out[1].split()[:3])
            sizes = Sizes(text, data, bss)
        log = work_dir / f"exec_{n_runs}.log"
        done = _run([QEMU, "-M", "mps2-an386", "-nographic", "-monitor", "none",
                     "-serial", "none", "-semihosting-config", "enable=on,target=native",
                     "-singlestep", "-d", "exec,nochain", "-D", str(log),
                     "-kernel", str(elf)], timeout=300)
        outputs[n_runs] = done.stdout + done.stderr  # semihosting writes to stderr off a tty
        with log.open("rb") as handle:
            counts[n_runs] = sum(
                chunk.count(b"Trace ") for chunk in iter(lambda: handle.read(1 << 20), b"")
            )
        log.unlink()
    match = re.search(r"c=([0-9a-f]{8})", outputs[runs])
    ok = bool(match) and int(match.group(1), 16) == checksum(expected_scores, runs)  # type: ignore[union-attr]
    n = runs * len(vectors_q)
    return QemuCount(instructions_per_inference=(counts[runs] - counts[0]) / n, inferences=n,
                     checksum_ok=ok, firmware_sizes=sizes)
