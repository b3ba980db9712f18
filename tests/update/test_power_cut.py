"""Power cut: SIGKILL the device at random points while it applies 50 app updates.

After every kill: the counter is not ahead of the version on disk, the active slot holds
exactly one version's files (never a half-written tree), and the start-up recovery
(``on_start``) lands on the old or a newer accepted version, never below one accepted
before, with the counter equal to it. A trial cut short is reverted (not resumed).
"""

from __future__ import annotations

import json
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tinyward.trust.device import Device
from tinyward.trust.measurement import measurement_digest
from tinyward.update.agent import UpdateAgent
from tinyward.update.archive import ArchiveLimits, archive_measurement
from tinyward.update.health import HealthCheck, TrialConfig

from .helpers import APPS, app_tar, app_version, meta, tuf_info

pytestmark = pytest.mark.slow
UPDATES = 50
SEED = 14
MAX_KILLS = 20
#: bounds on the whole test, not assertions about speed
MAX_RUNS = MAX_KILLS + 5
RUN_TIMEOUT_S = 120.0
WORKER = Path(__file__).with_name("power_cut_worker.py")


def _targets(tmp: Path) -> dict[int, str]:
    """50 app archives (1.0.1 …) of different sizes; their expected measurements."""
    rng = random.Random(SEED)
    folder = tmp / "targets"
    folder.mkdir()
    expected = {}
    for n in range(1, UPDATES + 1):
        src = app_version(APPS / "good", tmp / "src" / str(n), f"1.0.{n}")
        (src / "payload.bin").write_bytes(rng.randbytes(rng.randrange(1 << 13, 1 << 17)))
        archive = app_tar(src, folder / f"app-{n}.tar")
        length, hashes = tuf_info(archive)
        (folder / f"app-{n}.json").write_text(json.dumps(
            {"custom": meta("app", f"1.0.{n}").to_custom(), "length": length,
             "hashes": hashes}))
        expected[n] = archive_measurement(archive, ArchiveLimits()).hex()
        shutil.rmtree(src)
    return expected


def _agent(device_dir: Path) -> UpdateAgent:
    return UpdateAgent.for_device(Device.open(device_dir), product_class="pump-sensor",
                                  health=HealthCheck(TrialConfig(run_app=False)))


def _check_on_disk(device_dir: Path, expected: dict[int, str]) -> tuple[str, int]:
    """Invariants of what a kill left, before any recovery. Returns (state, version)."""
    agent = _agent(device_dir)
    installed = agent.installed("app")
    counter = agent.counter("app")
    assert counter <= (installed.as_counter() if installed else 0), "counter ahead"
    if installed is None:
        return agent.machine.state.value, 0
    # the slot the record points at (on trial or not), not the one active_content() runs
    content = agent.slots.content("app", agent._record().get("app").active)
    assert measurement_digest([content]).hex() == expected[installed.patch], "half-written"
    return agent.machine.state.value, installed.patch


def test_power_cut_at_random_points_while_applying_50_updates(tmp_path: Path) -> None:
    device_dir = tmp_path / "dev"
    Device.init(device_dir)
    expected = _targets(tmp_path)
    rng = random.Random(SEED)
    killed_in: Counter[str] = Counter()
    accepted_floor = 0  # no recovery may go below a version once accepted
    kills = 0
    for _run in range(MAX_RUNS):
        proc = subprocess.Popen([sys.executable, str(WORKER), str(device_dir),
                                 str(tmp_path / "targets"), str(UPDATES)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], RUN_TIMEOUT_S)
            assert ready and proc.stdout.readline() == b"ready\n", proc.stderr.read()
            if kills < MAX_KILLS:
                time.sleep(rng.uniform(0.0, 0.5))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            proc.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        _out, err = proc.communicate()
        if proc.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"the worker failed: {err.decode()[-2000:]}")
        state, on_disk = _check_on_disk(device_dir, expected)
        killed_in[state] += proc.returncode != 0
        # the restart: recover, then check again
        agent = _agent(device_dir)
        status = agent.on_start()
        assert status["state"] in ("idle", "accepted", "failed", "reverted")
        assert status.get("why") in (None, "interrupted")
        installed = agent.installed("app")
        patch = installed.patch if installed else 0
        assert patch in (on_disk, on_disk - 1)  # the trial version, or the one before it
        assert patch >= accepted_floor
        if state == "trial":  # a trial cut short is reverted, never resumed or kept
            assert (status["state"], patch) == ("reverted", on_disk - 1)
        assert agent.counter("app") == (installed.as_counter() if installed else 0)
        if installed:
            content = agent.active_content("app")
            assert measurement_digest([content]).hex() == expected[patch]
        accepted_floor = patch
        if proc.returncode == 0:
            break
    else:
        pytest.fail(f"50 updates were not done after {MAX_RUNS} runs")
    assert accepted_floor == UPDATES
    assert kills > 0
    # Where the kills land depends on the machine's speed (measured: 8-10 of 20 in staged,
    # 4-16 in trial; in a CI run 4 staged, 0 trial), so it is printed, not asserted; the
    # trial's power cut is asserted in test_agent.py's
    # test_power_cut_during_trial_reverts_and_never_raises_the_counter.
    print(f"power cut: {kills} kills; state on disk at the kills: {dict(killed_in)}")
