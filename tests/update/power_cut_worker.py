"""Applies app updates 1.0.1 … 1.0.N in a row from target files (the power-cut test kills
it at random points). Usage: power_cut_worker.py DEVICE_DIR TARGETS_DIR N

Prints ``ready`` after its start-up recovery, then one line per finished update."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tinyward.trust.device import Device
from tinyward.update.agent import UpdateAgent
from tinyward.update.health import HealthCheck, TrialConfig
from tinyward.update.meta import TargetMeta


def _link() -> bool:
    time.sleep(0.01)  # a round trip to the fleet takes a while: a trial has a length
    return True


def main() -> None:
    device_dir, targets, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    agent = UpdateAgent.for_device(
        Device.open(device_dir), product_class="pump-sensor",
        health=HealthCheck(TrialConfig(run_app=False), link=_link))
    agent.on_start()
    print("ready", flush=True)
    installed = agent.installed("app")
    first = 1 if installed is None else installed.patch + 1
    for n in range(first, count + 1):
        info = json.loads((targets / f"app-{n}.json").read_text())
        outcome = agent.apply("app", targets / f"app-{n}.tar",
                              TargetMeta.from_custom(info["custom"]), info["length"],
                              info["hashes"])
        print(n, outcome.state, outcome.why, flush=True)
        if outcome.state != "accepted":
            sys.exit(f"update {n} ended {outcome.state} ({outcome.why}): {outcome.detail}")


if __name__ == "__main__":
    main()
