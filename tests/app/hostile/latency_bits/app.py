"""Signals secret bits through its own latency and CPU use (issue 12, item 2).

Returns no result ever. Time is cut into slots of ``slot`` seconds of CLOCK_MONOTONIC (the
same clock the core and an observer on the device share); in a slot whose secret bit is 1,
every frame takes ``busy`` seconds: half spinning on the CPU, half asleep. An app fed on the
report loop delays the reports of those slots, which an eavesdropper on the TCP stream sees.
"""
import json
import math
import time


class Hostile:
    def __init__(self, model_paths):
        with open(model_paths[0]) as f:
            target = json.load(f)
        self.bits = target["bits"]
        self.slot = float(target["slot"])
        self.busy = float(target["busy"])

    def process(self, frame):
        now = time.monotonic()
        if self.bits[math.floor(now / self.slot) % len(self.bits)] == "1":
            spin_until = now + self.busy / 2
            while time.monotonic() < spin_until:
                pass
            time.sleep(self.busy / 2)
