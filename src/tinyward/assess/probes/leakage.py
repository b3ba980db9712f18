"""leakage (live): the application's outputs stay within a declared contract, and what an
application can get out about its input stays within the measured bound (C-LEAK-1).

For a tinyward application (``--app MANIFEST``, the ``sensor.toml`` the device runs with
``device run --app``), in tinyward's real sandbox and supervisor configured as
``device run`` configures them (the device folder, if given, a secret path):

1. **the device's own application** on random frames: how many results it gave, how many
   distinct ones, and its incidents (a figure, not a verdict: an honest application shows
   nothing about an adversary);
2. **saturate**: a hostile application (``assess/data/hostile/exfil``) with the device's
   own ``[input]`` and ``[output]`` puts the first bits of each input frame into every
   field of a result, as many bits as each field's declared values allow, at the
   contract's maximum rate: the most the contract lets through;
3. **exceed**: the same application answers every frame, adding an undeclared ``raw``
   field with the frame's first 32 bytes.

The probe knows the frames it fed, so it decodes every accepted result and scores the
input bits that got out: right minus wrong, less two standard deviations of guessing
(``2 sqrt(n)``), never below 0 (as ``tests/link/test_leakage_channels.py`` does). Time is
the supervisor's injected clock, moved one frame period per frame (the frame rate of the
manifest): :data:`MAX_FRAMES` frames per phase stand for a few minutes of the device's
life in a few seconds; the rate limit and fault windows run on that clock.

Pass: both hostile phases at most the declared bound (``tinyward.app.contract.leakage_bound``,
bits per minute of result values). Fail: either above it. Not-tested: no manifest, or a
hostile phase that never processed a frame.

What it does not measure: the timing of results and reports (the traffic-analysis probe),
the fault-class channel (bounded by the fault windows; ``tests/link/test_leakage_channels.py``
measures it over a real fleet link).
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Target

NAME = "leakage"
MAX_FRAMES = 480  # per phase: 2 minutes of a 4-frames-per-second sensor
RAW_BYTES = 32  # what the exceed phase's undeclared field carries per frame
_MAX_FIELD_BITS = {"bool": 1, "enum": 16, "int": 62, "float": 40}


@dataclass(frozen=True)
class Phase:
    """One run: frames fed, accepted results, input bits decoded right/wrong, incidents,
    and the minutes the frames stand for."""

    name: str
    frames: int
    results: int
    right: int
    wrong: int
    minutes: float
    incidents: dict[str, int]
    distinct: int = 0
    note: str = ""

    @property
    def bits_per_minute(self) -> float:
        """Input bits got through beyond chance, per 60-second window the run touched.

        The contract bounds any 60 s window, and results may come in a burst at a
        window's start: a run of 1.5 minutes can hold two windows' worth, so dividing by
        1.5 would overstate a device that keeps its bound (and 10 s would make any result
        look like six)."""
        n = self.right + self.wrong
        got = max(0.0, self.right - self.wrong - 2 * math.sqrt(n))
        windows = max(1, math.ceil(self.minutes - 1e-9))
        return got / windows if self.minutes > 0 else 0.0


def _show(phase: Phase) -> str:
    incidents = ", ".join(f"{k} {n}" for k, n in sorted(phase.incidents.items())) or "none"
    return (f"{phase.name}: {phase.bits_per_minute:.1f} bits/min got out "
            f"({phase.right} input bits right, {phase.wrong} wrong, in {phase.results} "
            f"results of {phase.frames} frames = {phase.minutes:.1f} min; incidents: "
            f"{incidents})")


def verdict(bound: float, phases: list[Phase], context: Context,
            where: str = "") -> list[Evidence]:
    """From the measured phases (pure)."""
    hostile = {p.name: p for p in phases if p.name in ("saturate", "exceed")}
    over = [p for p in hostile.values() if p.bits_per_minute > bound]
    if over:
        return for_all(context, NAME, "fail", "live",
                       f"an application got more out than the declared bound of "
                       f"{bound:.1f} bits/min: " + "; ".join(_show(p) for p in over), where)
    missing = [name for name in ("saturate", "exceed")
               if name not in hostile or hostile[name].frames == 0]
    if missing:
        notes = "; ".join(p.note for p in phases if p.note) or "the budget ran out"
        return for_all(context, NAME, "not-tested", "live",
                       f"the hostile application did not run ({', '.join(missing)}): {notes}",
                       where)
    own = next((p for p in phases if p.name == "own"), None)
    own_text = (f"; the device's own application gave {own.results} results "
                f"({own.distinct} distinct) for {own.frames} frames" if own and own.frames
                else "")
    return for_all(context, NAME, "pass", "live",
                   f"declared bound {bound:.1f} bits/min (values of every field at the "
                   f"contract's rate); measured: " + "; ".join(_show(p) for p in
                                                              hostile.values()) + own_text,
                   where)


def field_plan(contract: Any) -> list[list[Any]]:
    """[name, type, min, step, values, bits] per field: what the hostile app encodes."""
    plan = []
    for spec in contract.fields:
        bits = min(_MAX_FIELD_BITS[spec.type], math.floor(math.log2(spec.cardinality)))
        plan.append([spec.name, spec.type, spec.min, spec.step, list(spec.values), bits])
    return plan


def _bits_of(data: bytes, start: int, n: int) -> list[int]:
    return [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(start, start + n)
            if i // 8 < len(data)]


def decode(result: dict[str, Any], plan: list[list[Any]], data: bytes) -> tuple[int, int]:
    """(right, wrong) input bits in one accepted result, against the frame's bytes."""
    right = wrong = 0
    at = 0
    for name, kind, low, step, values, bits in plan:
        truth = _bits_of(data, at, bits)
        at += bits
        value: Any = result.get(name)
        try:
            if kind == "bool":
                k = int(bool(value))
            elif kind == "enum":
                k = values.index(value)
            elif kind == "int":
                k = int(value) - int(low)
            else:
                k = round((float(value) - float(low)) / float(step))
        except (TypeError, ValueError, OverflowError):
            continue  # a value the decoder cannot read carries nothing it can count
        # the field's most significant bits are the frame's first (bits past the frame's
        # end are zeros the app pads with: not counted)
        got = [(k >> (bits - 1 - i)) & 1 for i in range(len(truth))]
        right += sum(g == t for g, t in zip(got, truth, strict=True))
        wrong += sum(g != t for g, t in zip(got, truth, strict=True))
    raw = result.get("raw")
    if isinstance(raw, str):
        try:
            sent = bytes.fromhex(raw)[:RAW_BYTES]
        except ValueError:
            sent = b""
        truth = _bits_of(data, 0, 8 * len(sent))
        got = _bits_of(sent, 0, 8 * len(sent))
        right += sum(g == t for g, t in zip(got, truth, strict=True))
        wrong += sum(g != t for g, t in zip(got, truth, strict=True))
    return right, wrong


class _Clock:
    """The supervisor's clock: one frame period per frame, not the wall's."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def _frames(manifest: Any) -> Callable[[], Any]:
    import numpy as np

    rng = np.random.default_rng(secrets.randbits(64))
    dtype = np.dtype(manifest.input.dtype)
    shape = tuple(manifest.input.frame_shape)

    def frame() -> Any:
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        return rng.standard_normal(size=shape).astype(dtype)

    return frame


def frames_per_minute(manifest: Any) -> float:
    return float(manifest.input.sample_rate_hz) * 60.0 / int(manifest.input.frame_shape[0])


def run_phase(name: str, manifest: Any, sandbox: Any, config: Any, budget: Budget,
              plan: list[list[Any]] | None) -> Phase:
    """Feed up to :data:`MAX_FRAMES` random frames; decode what crossed (``plan`` None:
    the device's own application, counted but not decoded)."""
    from tinyward.app.errors import SandboxError
    from tinyward.app.supervisor import Supervisor

    per_minute = frames_per_minute(manifest)
    period = 60.0 / per_minute * (1 + 1e-9)  # never a hair early for the rate limit
    clock = _Clock()
    make = _frames(manifest)
    frames = results = right = wrong = 0
    seen: Counter[str] = Counter()
    supervisor = Supervisor(manifest, sandbox, config, clock)
    try:
        if not supervisor.start():
            return Phase(name, 0, 0, 0, 0, 0.0, supervisor.incidents(),
                         note=f"{name}: the sandbox did not start it "
                              f"({', '.join(supervisor.incidents()) or '?'})")
        while frames < MAX_FRAMES and budget.left() > 0:
            frame = make()
            outcome = supervisor.process(frame)
            frames += 1
            clock.now += period
            if outcome.result is None:
                continue
            results += 1
            seen[json.dumps(outcome.result, sort_keys=True, default=str)] += 1
            if plan is not None:
                r, w = decode(outcome.result, plan, frame.tobytes())
                right, wrong = right + r, wrong + w
    except SandboxError as error:
        return Phase(name, frames, results, right, wrong, frames / per_minute,
                     supervisor.incidents(), len(seen), note=f"{name}: {error}")
    finally:
        supervisor.close()
    return Phase(name, frames, results, right, wrong, frames / per_minute,
                 supervisor.incidents(), len(seen))


def _hostile_manifest(manifest: Any, scratch: Path, mode: str, every: int) -> Any:
    from tinyward.assess.hostile_apps import copy_app

    folder = copy_app("exfil", scratch / mode)
    target = folder / "target.json"
    target.write_text(json.dumps(
        {"fields": field_plan(manifest.contract), "mode": mode, "every": every}))
    target.chmod(0o644)
    # Its own sensor.toml is not used: the device's input and contract are what it meets.
    return replace(manifest, name=f"leakage_{mode}", entry_module="app",
                   entry_callable="Exfil", models=(folder / "target.json",), folder=folder)


class Leakage:
    name = NAME
    kind = "live"

    def __init__(self, supervisor: Any = None) -> None:
        # The supervisor's configuration; tests pass one with ``unsafe_no_contract``.
        self._supervisor = supervisor

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        from tinyward.app.contract import leakage_bound
        from tinyward.app.errors import ManifestError
        from tinyward.app.manifest import load_manifest
        from tinyward.app.sandbox import SandboxConfig
        from tinyward.app.supervisor import SupervisorConfig

        path = target.app_manifest
        if path is None:
            return for_all(context, NAME, "not-tested", "live",
                           "no application manifest (--app sensor.toml) whose contract "
                           "could be measured")
        try:
            manifest = load_manifest(path)
        except ManifestError as error:
            return for_all(context, NAME, "not-tested", "live",
                           f"the application manifest does not load: {error}", str(path))
        bound = leakage_bound(manifest.contract).bits_per_minute
        sandbox = SandboxConfig(secret_paths=(target.device_dir,) if target.device_dir else ())
        # No CPU budget: frames come far faster than the device's frame rate, and the
        # budget is charged in real time (it bounds CPU, not the values channel).
        config = self._supervisor or SupervisorConfig(cpu_share=None, max_failed_starts=1000)
        every = max(1, math.ceil(frames_per_minute(manifest)
                                 / manifest.contract.max_results_per_minute))
        phases = [run_phase("own", manifest, sandbox, config, budget, None)]
        scratch = Path(tempfile.mkdtemp(prefix="tinyward-leakage-", dir="/tmp"))
        try:
            scratch.chmod(0o755)  # the sandbox user must reach the app
            for mode in ("saturate", "exceed"):
                if budget.left() <= 0:
                    break
                hostile = _hostile_manifest(manifest, scratch, mode, every)
                phases.append(run_phase(mode, hostile, sandbox, config, budget,
                                        field_plan(manifest.contract)))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return verdict(bound, phases, context, str(path))


__all__ = ["MAX_FRAMES", "Leakage", "Phase", "decode", "field_plan", "run_phase", "verdict"]
