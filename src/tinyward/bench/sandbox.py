"""`tinyward bench sandbox`: per-frame round trip through the sandbox vs. an in-process call."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyward.app.manifest import load_manifest
from tinyward.app.supervisor import Supervisor, SupervisorConfig

BENCH_MANIFEST = Path(__file__).parent / "_bench_app" / "sensor.toml"


@dataclass(frozen=True)
class Timing:
    label: str
    frames: int
    seconds: float
    p50_us: float
    p99_us: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds


def _timing(label: str, samples: list[float]) -> Timing:
    us = np.array(samples) * 1e6
    return Timing(label, len(samples), float(sum(samples)),
                  float(np.percentile(us, 50)), float(np.percentile(us, 99)))


def pipe_floor(frames: int, size: int) -> Timing:
    """A bare ping-pong of ``size`` bytes with a forked echo process: the floor any
    two-process design pays on this machine (two pipe writes, two reads, two wake-ups)."""
    to_r, to_w = os.pipe()
    back_r, back_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the echo child
        os.close(to_w)
        os.close(back_r)
        while data := os.read(to_r, 1 << 16):
            os.write(back_w, data)
        os._exit(0)
    os.close(to_r)
    os.close(back_w)
    payload = bytes(size)
    samples = []
    try:
        for _ in range(frames):
            t0 = time.perf_counter()
            os.write(to_w, payload)
            os.read(back_r, 1 << 16)
            samples.append(time.perf_counter() - t0)
    finally:
        os.close(to_w)
        os.close(back_r)
        os.waitpid(pid, 0)
    return _timing("bare pipe ping-pong (floor)", samples)


def run(frames: int = 5000, warmup: int = 200, seed: int = 7) -> tuple[Timing, Timing]:
    """Time ``frames`` frames in process and through the sandbox (same frames, same run).

    Raises:
        SandboxError: the sandbox could not start.
        RuntimeError: the sandboxed app did not answer every frame.
    """
    manifest = load_manifest(BENCH_MANIFEST)
    rng = np.random.default_rng(seed)
    shape, dtype = manifest.input.frame_shape, manifest.input.dtype
    data = [rng.integers(0, 4000, size=shape).astype(dtype) for _ in range(frames)]

    spec = importlib.util.spec_from_file_location(
        "bench_echo", BENCH_MANIFEST.parent / "bench_echo.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    app = module.Echo([])
    direct = []
    for frame in data[:warmup]:
        app.process(frame)
    for frame in data:
        t0 = time.perf_counter()
        app.process(frame)
        direct.append(time.perf_counter() - t0)

    tick = [0.0]

    def clock() -> float:  # sensor time: one frame per 2 ms, inside the declared rate
        return tick[0]

    # No CPU budget: the bench feeds frames back to back, faster than any sensor.
    with Supervisor(manifest, config=SupervisorConfig(cpu_share=None), clock=clock) as sup:
        if not sup.start():
            raise RuntimeError(f"the bench app did not start: {sup.incidents()}")
        for frame in data[:warmup]:
            tick[0] += 0.002
            sup.process(frame)
        sandboxed = []
        for frame in data:
            tick[0] += 0.002
            t0 = time.perf_counter()
            outcome = sup.process(frame)
            sandboxed.append(time.perf_counter() - t0)
            if outcome.result is None:
                raise RuntimeError(f"frame not answered: {outcome}")
    return _timing("in-process call", direct), _timing("through the sandbox", sandboxed)


if __name__ == "__main__":  # pragma: no cover
    for t in run(int(sys.argv[1]) if len(sys.argv) > 1 else 5000):
        print(t)
