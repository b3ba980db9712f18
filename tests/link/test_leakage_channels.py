"""Issue 12, item 3: the leakage bound counts every channel the application controls.

The ``covert`` app (contract: one boolean per minute) pushes secret bits through its
results, its choice of fault after every restart, and its latency. A real device runner
reports to a fleet server; an eavesdropper with the fleet's database and the report send
times decodes every channel. Bits got through, per channel = right minus wrong over the
secret bits the decoder outputs, less two standard deviations of chance (2 sqrt(n)), at
least 0 — so noise on a channel that carries nothing does not count as leakage. The figure,
per minute, must not exceed the bound ``tinyward app inspect`` prints for the same report
interval and fault window. Before the fix (``unsafe_detailed_incidents`` and no fault
window: every detailed fault kind reported at once), the same app gets far more through
than that bound — the 88 bits a minute of the issue.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.link.conftest import World
from tests.link.liveserver import LiveFleetServer
from tinyward.app.frames import simulated_frames
from tinyward.app.manifest import load_manifest
from tinyward.app.source import AppResultSource
from tinyward.app.supervisor import SupervisorConfig
from tinyward.assess.hostile_apps import copy_app
from tinyward.cli.main import cli
from tinyward.link.chunks import IDLE_REQUEST, FetchRequest, Frame
from tinyward.link.runner import DeviceRunner, RunnerConfig
from tinyward.link.shaper import ShaperConfig

pytestmark = pytest.mark.slow
INTERVAL = 0.5  # the app's timing channel assumes this report interval
SLOT = 1.0
WINDOW = 4.0  # the fault window of this test (60 s on a device)
DURATION = 30.0
SEND_DELAY = min(0.2 * INTERVAL, 0.5)

#: what the decoder reads from a report's incident labels (the first symbol with that label)
DETAILED = {"app_crash": 1, "app_slow": 2, "app_hang": 2, "app_wrong_type": 3,
            "app_missing_field": 4, "app_extra_field": 5, "app_not_a_map": 6,
            "app_oversize": 7}
CLASSES = {"app_crash": 1, "app_stall": 2, "app_refused": 3}


def printed_bound(manifest: Path, fault_window: float) -> float:
    result = CliRunner().invoke(cli, ["app", "inspect", str(manifest), "--no-probe",
                                      "--interval", str(INTERVAL),
                                      "--fault-window", str(fault_window)],
                                 terminal_width=200)
    assert result.exit_code == 0, result.output
    match = re.search(r"leakage bound, all channels: ([\d,.]+) bits per minute", result.output)
    assert match, result.output
    return float(match.group(1).replace(",", ""))


def score(guess: str, truth: str) -> float:
    """Bits got through beyond chance: right minus wrong, less two standard deviations of
    that figure under guessing (2 sqrt(n)), never below 0."""
    n = len(truth)
    right_minus_wrong = sum(1 if g == t else -1 for g, t in zip(guess, truth, strict=True))
    return max(0.0, right_minus_wrong - 2 * math.sqrt(n))


def run_covert(world: World, unsafe: bool) -> tuple[dict[str, float], Path]:
    rng = random.Random(3)
    secret = {name: "".join(rng.choice("01") for _ in range(n))
              for name, n in (("faults", 3 * 64), ("timing", 128), ("values", 8))}
    outer = Path(tempfile.mkdtemp(prefix="tinyward-covert-", dir="/tmp"))
    outer.chmod(0o755)
    folder = outer / "covert"
    copy_app("covert", folder)
    (folder / "target.json").write_text(json.dumps({**secret, "slot": SLOT}))
    for root, _dirs, files in os.walk(folder):
        os.chmod(root, 0o755)
        for file in files:
            os.chmod(os.path.join(root, file), 0o644)
    manifest = load_manifest(folder / "sensor.toml")
    if unsafe:  # the old supervisor: restart after a short backoff, every kind reported
        config = SupervisorConfig(fault_window_s=0.0, backoff_initial_s=0.1, backoff_max_s=0.1,
                                  max_failed_starts=1000)
    else:
        config = SupervisorConfig(fault_window_s=WINDOW, max_failed_starts=1000)
    source = AppResultSource.start(manifest, simulated_frames(manifest, 1), config,
                                   unsafe_detailed_incidents=unsafe)
    device = world.device("unsafe" if unsafe else "covert")
    times: list[float] = []
    try:
        with LiveFleetServer(world.fleet) as server:
            runner = DeviceRunner(device, server.url,
                                  RunnerConfig(shaper=ShaperConfig(interval=INTERVAL)), source)
            send = runner.link.exchange  # every report goes out through it

            def timed(data: bytes, fetch: FetchRequest = IDLE_REQUEST
                      ) -> tuple[int, Frame | None]:
                times.append(time.monotonic())
                return send(data, fetch)

            runner.link.exchange = timed  # type: ignore[method-assign]
            runner.link.connect()
            runner.run(duration=DURATION)
        reports = server.reports[device.device_id]
    finally:
        source.close()
    assert len(reports) == len(times) >= DURATION / INTERVAL - 4
    return _decode(reports, times, secret, CLASSES if not unsafe else DETAILED), \
        folder / "sensor.toml"


def _decode(reports: list, times: list[float], secret: dict[str, str],
            labels: dict[str, int]) -> dict[str, float]:
    got: dict[str, float] = {}
    slots = [t - SEND_DELAY for t in times]  # each report's grid point (observer's estimate)
    # Faults: a report carries the faults since the previous one; read them as the symbol
    # of the slot the previous grid point lies in.
    decoded: dict[int, int] = {}
    for i in range(1, len(reports)):
        seen = [k for k, n in reports[i].incidents.items() if n and k in labels]
        j = math.floor((slots[i] - 1e-3) / SLOT)
        if seen:
            decoded[j] = labels[seen[0]]
    first, last = math.ceil(slots[0] / SLOT) + 1, math.floor(slots[-1] / SLOT) - 1
    faults = secret["faults"] * 2
    guess, truth_bits = "", ""
    for j in range(first, last):
        i = (3 * j) % len(secret["faults"])
        guess += format(decoded.get(j, 0), "03b")
        truth_bits += faults[i : i + 3]
    got["faults"] = score(guess, truth_bits)
    # Timing: a report later than the median after its grid point says "1".
    base = times[0]
    reference = base + min((t - base) % INTERVAL for t in times)
    lateness, truth = [], []
    for t in times[1:]:
        grid = reference + ((t - reference + 0.05) // INTERVAL) * INTERVAL
        lateness.append(t - grid)
        truth.append(secret["timing"][math.floor((grid - SEND_DELAY - 0.05) / INTERVAL)
                                      % len(secret["timing"])])
    cut = float(np.median(lateness))
    got["timing"] = score("".join("1" if x > cut else "0" for x in lateness), "".join(truth))
    # Results: each accepted flag is one bit of the minute it was sent in.
    values = ""
    truth_values = ""
    for t, report in zip(slots, reports, strict=True):
        for result in report.results:
            values += "1" if result["flag"] else "0"
            truth_values += secret["values"][math.floor((t - 1.0) / 60) % len(secret["values"])]
    got["results"] = score(values, truth_values)
    return got


def test_unsafe_detailed_incidents_let_an_app_leak_far_more_than_its_bound(world: World) -> None:
    got, manifest = run_covert(world, unsafe=True)
    measured = sum(got.values()) * 60.0 / DURATION
    bound = printed_bound(manifest, WINDOW)
    print(f"covert app, unsafe: {got} -> {measured:.1f} bits/min measured, bound {bound:.1f}")
    assert measured > bound, (got, measured, bound)  # the channel the issue found
    shutil.rmtree(manifest.parent.parent, ignore_errors=True)


def test_bits_an_app_gets_through_every_channel_stay_within_the_printed_bound(
    world: World,
) -> None:
    got, manifest = run_covert(world, unsafe=False)
    measured = sum(got.values()) * 60.0 / DURATION
    bound = printed_bound(manifest, WINDOW)
    shutil.rmtree(manifest.parent.parent, ignore_errors=True)
    print(f"covert app: {got} -> {measured:.1f} bits/min measured, bound {bound:.1f}")
    assert measured <= bound, (got, measured, bound)
